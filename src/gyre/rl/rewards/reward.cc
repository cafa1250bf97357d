// Built-in reward dispatch (slime's async_rm), reward-key selection and the factory (reward.h).
#include "gyre/rl/rewards/reward.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <iterator>
#include <mutex>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/custom_rm.h"
#include "gyre/rl/rewards/math_dapo.h"
#include "gyre/rl/rewards/math_utils.h"
#include "gyre/rl/rewards/remote_rm.h"
#include "gyre/rl/rewards/text_rewards.h"

namespace gyre::rl::rewards {
namespace {

int64_t name_of(const RewardInput& in, size_t pos) {
  return in.index >= 0 ? in.index : int64_t(pos);
}

void require_label(const RewardInput& in, int64_t index, const std::string& rm_type) {
  if (in.label.is_null())
    GYRE_THROW(invalid_argument,
               "sample {}: --rm-type {} needs a label but the sample has none; set --label-key to "
               "the dataset column holding the reference answer",
               index, rm_type);
  if (!in.label.is_string() && !in.label.is_number() && !in.label.is_boolean())
    GYRE_THROW(invalid_argument,
               "sample {}: --rm-type {} needs a string or number label, got {} ({})", index,
               rm_type, in.label.type_name(), in.label.dump().substr(0, 80));
}

// The rule-based reward types (each also accepted with a boxed_ prefix); with remote_rm, the
// --rm-type values gyre dispatches itself. check_rm_type and every "unknown type" error use this
// one list.
constexpr const char* kRuleBased[] = {"math", "deepscaler",  "dapo",  "f1",
                                      "gpqa", "exact_match", "random"};

std::string rm_type_choices() {
  return fmt::format("{} (each optionally prefixed boxed_), remote_rm",
                     fmt::join(std::begin(kRuleBased), std::end(kRuleBased), ", "));
}

uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void check_finite(const nlohmann::json& v, int64_t index) {
  if (v.is_number_float() && !std::isfinite(v.get<double>()))
    GYRE_THROW(invalid_argument, "sample {}: reward is {} (NaN/inf); rewards must be finite", index,
               v.get<double>());
  if (v.is_object())
    for (const auto& [k, x] : v.items())
      if (x.is_number_float() && !std::isfinite(x.get<double>()))
        GYRE_THROW(invalid_argument, "sample {}: reward field '{}' is {} (NaN/inf)", index, k,
                   x.get<double>());
}

// The rm_hub dispatcher: metadata.rm_type > --rm-type; remote_rm goes over HTTP.
class BuiltinRewardFunction : public RewardFunction {
 public:
  explicit BuiltinRewardFunction(const RewardConfig& c) : config_(c), rng_(c.seed) {
    if (!c.rm_url.empty()) remote_ = std::make_unique<RemoteRewardModel>(c);
  }
  std::vector<Reward> score(const std::vector<RewardInput>& inputs) override {
    std::vector<Reward> out(inputs.size());
    std::vector<size_t> remote_idx;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const RewardInput& in = inputs[i];
      std::string type = config_.rm_type;
      if (in.metadata.is_object() && in.metadata.contains("rm_type") &&
          in.metadata["rm_type"].is_string() && !in.metadata["rm_type"].get<std::string>().empty())
        type = in.metadata["rm_type"].get<std::string>();
      type = strip(type);
      if (type == "remote_rm") {
        if (!remote_)
          GYRE_THROW(invalid_argument, "sample {}: --rm-type remote_rm needs --rm-url",
                     name_of(in, i));
        remote_idx.push_back(i);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      out[i].value = builtin_reward(type, in, name_of(in, i), &rng_);
    }
    if (!remote_idx.empty()) {
      std::vector<RewardInput> batch;
      for (size_t i : remote_idx) batch.push_back(inputs[i]);
      std::vector<Reward> r = remote_->score(batch);
      for (size_t k = 0; k < remote_idx.size(); ++k) out[remote_idx[k]] = std::move(r[k]);
    }
    return out;
  }

 private:
  static std::string strip(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\n\r");
    return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(" \t\n\r") - b + 1);
  }
  RewardConfig config_;
  std::mutex mu_;
  uint64_t rng_;
  std::unique_ptr<RemoteRewardModel> remote_;
};

// Applies the finite-value check to whatever function produced the rewards.
class CheckedRewardFunction : public RewardFunction {
 public:
  explicit CheckedRewardFunction(std::unique_ptr<RewardFunction> f) : f_(std::move(f)) {}
  std::vector<Reward> score(const std::vector<RewardInput>& inputs) override {
    std::vector<Reward> r = f_->score(inputs);
    if (r.size() != inputs.size())
      GYRE_THROW(internal, "reward function returned {} rewards for {} inputs", r.size(),
                 inputs.size());
    for (size_t i = 0; i < r.size(); ++i)
      if (r[i].ok()) check_finite(r[i].value, name_of(inputs[i], i));
    return r;
  }

 private:
  std::unique_ptr<RewardFunction> f_;
};

}  // namespace

std::string python_str(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    std::string s = fmt::format("{}", d);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
  }
  return v.dump();
}

nlohmann::json builtin_reward(const std::string& rm_type_in, const RewardInput& in, int64_t index,
                              uint64_t* rng_state) {
  std::string rm_type = rm_type_in;
  std::string response = in.response;
  if (rm_type.rfind("boxed_", 0) == 0) {
    // slime: replace the response by its last \boxed{} content first.
    response = extract_boxed_answer(response).value_or("");
    rm_type = rm_type.substr(6);
  }
  if (rm_type == "math") {
    require_label(in, index, rm_type);
    // Python `if not ground_truth`: 0, 0.0, False and "" grade as wrong.
    const bool falsy = (in.label.is_string() && in.label.get<std::string>().empty()) ||
                       (in.label.is_number() && in.label.get<double>() == 0) ||
                       (in.label.is_boolean() && !in.label.get<bool>());
    return falsy ? 0 : (grade_answer_verl(response, python_str(in.label)) ? 1 : 0);
  }
  if (rm_type == "deepscaler") {
    require_label(in, index, rm_type);
    return deepscaler_reward(response, python_str(in.label));
  }
  if (rm_type == "dapo") {
    require_label(in, index, rm_type);
    try {
      const dapo::Score s = dapo::compute_score(response, python_str(in.label));
      return {{"score", s.score},
              {"acc", s.acc},
              {"pred", s.pred ? nlohmann::json(*s.pred) : nlohmann::json(nullptr)}};
    } catch (const Error& e) {
      GYRE_THROW(invalid_argument, "sample {}: {}", index, e.what());
    }
  }
  if (rm_type == "f1") {
    require_label(in, index, rm_type);
    return f1_score(response, python_str(in.label)).f1;
  }
  if (rm_type == "gpqa") {
    const bool has_meta_answer =
        in.metadata.is_object() &&
        (in.metadata.contains("correct_letter") || in.metadata.contains("correct_answer"));
    if (in.label.is_null() && !has_meta_answer)
      GYRE_THROW(invalid_argument,
                 "sample {}: --rm-type gpqa needs a label (letter, index or answer text) or "
                 "metadata.correct_letter / correct_answer",
                 index);
    return gpqa_reward(response, in.label, in.metadata);
  }
  if (rm_type == "random") return int(splitmix64(rng_state) & 1);  // randint(0, 1)
  if (rm_type == "exact_match") {
    // gyre extension (not in slime): 1 when the response, stripped of surrounding whitespace,
    // equals the label's text exactly; used by verifiable toy tasks such as the quick-start.
    require_label(in, index, rm_type);
    auto strip = [](std::string s) {
      const char* ws = " \t\r\n";
      s.erase(0, s.find_first_not_of(ws));
      s.erase(s.find_last_not_of(ws) + 1);
      return s;
    };
    const std::string label =
        in.label.is_string() ? in.label.get<std::string>() : python_str(in.label);
    return strip(response) == strip(label) ? 1 : 0;
  }
  if (rm_type == "ifbench")
    GYRE_THROW(unsupported,
               "sample {}: --rm-type ifbench needs allenai/IFBench's instruction checkers, which "
               "gyre does not ship; use --custom-rm-path",
               index);
  if (rm_type.empty())
    GYRE_THROW(
        invalid_argument,
        "sample {}: no reward type: set --rm-type (math, deepscaler, dapo, f1, gpqa, random, "
        "remote_rm), metadata.rm_type, or --custom-rm-path",
        index);
  GYRE_THROW(invalid_argument,
             "sample {}: unknown --rm-type '{}'; choose {}, or use --custom-rm-path", index,
             rm_type_in, rm_type_choices());
}

void check_rm_type(const std::string& rm_type_in) {
  // Surrounding whitespace is ignored, as where the type is dispatched.
  const size_t b = rm_type_in.find_first_not_of(" \t\n\r");
  const std::string rm_type =
      b == std::string::npos ? ""
                             : rm_type_in.substr(b, rm_type_in.find_last_not_of(" \t\n\r") - b + 1);
  if (rm_type.empty() || rm_type == "remote_rm") return;
  const std::string base = rm_type.rfind("boxed_", 0) == 0 ? rm_type.substr(6) : rm_type;
  for (const char* t : kRuleBased)
    if (base == t) return;
  if (base == "ifbench")
    GYRE_THROW(unsupported,
               "--rm-type {}: ifbench needs allenai/IFBench's instruction checkers, which gyre "
               "does not ship; use --custom-rm-path",
               rm_type);
  GYRE_THROW(invalid_argument, "unknown --rm-type '{}'; choose {}, or use --custom-rm-path",
             rm_type, rm_type_choices());
}

void check_metadata_rm_type(const nlohmann::json& metadata, size_t index,
                            const std::string& source) {
  const nlohmann::json* t =
      metadata.is_object() && metadata.contains("rm_type") ? &metadata["rm_type"] : nullptr;
  const bool usable = t && t->is_string() &&
                      t->get<std::string>().find_first_not_of(" \t\n\r") != std::string::npos;
  if (!usable)
    GYRE_THROW(invalid_argument,
               "no reward for prompt {} of {}: neither --rm-type nor --custom-rm-path is set and "
               "its metadata has no rm_type string; pass --rm-type (or --custom-rm-path), or give "
               "every prompt metadata.rm_type",
               index, source);
  try {
    check_rm_type(t->get<std::string>());
  } catch (const Error& e) {
    GYRE_THROW(invalid_argument, "prompt {} of {}: metadata.rm_type: {}", index, source, e.what());
  }
}

double reward_value(const nlohmann::json& reward, const std::optional<std::string>& key,
                    int64_t index) {
  const nlohmann::json* v = &reward;
  if (key) {
    if (!reward.is_object() || !reward.contains(*key))
      GYRE_THROW(invalid_argument,
                 "sample {}: --reward-key '{}' is not a field of the reward {}; pick one of its "
                 "keys",
                 index, *key, reward.dump().substr(0, 120));
    v = &reward[*key];
  }
  if (v->is_boolean()) return v->get<bool>() ? 1.0 : 0.0;
  if (!v->is_number())
    GYRE_THROW(invalid_argument, "sample {}: reward {} is not a number{}", index,
               v->dump().substr(0, 120),
               key ? "" : "; if the reward is a dict, pass --reward-key (e.g. score for dapo)");
  const double d = v->get<double>();
  if (!std::isfinite(d))
    GYRE_THROW(invalid_argument, "sample {}: reward is {} (NaN/inf); rewards must be finite", index,
               d);
  return d;
}

std::unique_ptr<RewardFunction> make_reward_function(const RewardConfig& config) {
  if (!config.custom_rm_path.empty())
    return std::make_unique<CheckedRewardFunction>(make_custom_reward_function(config));
  if (config.rm_type.empty())
    GYRE_THROW(invalid_argument,
               "no reward function: pass --rm-type (math, deepscaler, dapo, f1, gpqa, random, "
               "remote_rm) or --custom-rm-path");
  check_rm_type(config.rm_type);
  if (config.rm_type == "remote_rm" && config.rm_url.empty())
    GYRE_THROW(invalid_argument, "--rm-type remote_rm needs --rm-url http://host:port/path");
  return std::make_unique<CheckedRewardFunction>(std::make_unique<BuiltinRewardFunction>(config));
}

}  // namespace gyre::rl::rewards
