// Sample: invariants, multi-turn appends and JSON (de)serialisation (see header).
#include "gyre/rl/sample.h"

#include <cmath>
#include <limits>

#include "gyre/core/error.h"

namespace gyre::rl {

namespace {

using json = nlohmann::json;

const char* kStatusNames[] = {"pending", "completed", "truncated", "aborted", "failed"};

json float_to_json(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

float float_from_json(const json& j, const std::string& where, const char* field, size_t i) {
  if (j.is_number()) return j.get<float>();
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == "nan") return std::numeric_limits<float>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<float>::infinity();
    if (s == "-inf") return -std::numeric_limits<float>::infinity();
  }
  GYRE_THROW(invalid_argument, "{}: {}[{}] must be a number, got {}", where, field, i, j.dump());
}

std::vector<float> floats_from_json(const json& j, const std::string& where, const char* field) {
  std::vector<float> out;
  if (j.is_null()) return out;
  if (!j.is_array()) GYRE_THROW(invalid_argument, "{}: {} must be a list of numbers", where, field);
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) out.push_back(float_from_json(j[i], where, field, i));
  return out;
}

json floats_to_json(const std::vector<float>& v) {
  if (v.empty()) return nullptr;  // slime's None
  json a = json::array();
  for (float f : v) a.push_back(float_to_json(f));
  return a;
}

std::optional<int64_t> opt_int(const json& j, const std::string& where, const char* field) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_number_integer())
    GYRE_THROW(invalid_argument, "{}: {} must be an integer or null, got {}", where, field,
               j.dump());
  return j.get<int64_t>();
}

json opt_to_json(const std::optional<int64_t>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

const char* status_name(SampleStatus status) { return kStatusNames[int(status)]; }

SampleStatus parse_status(std::string_view name, const std::string& where) {
  for (int i = 0; i < 5; ++i)
    if (name == kStatusNames[i]) return SampleStatus(i);
  GYRE_THROW(invalid_argument,
             "{}: unknown sample status '{}'; expected pending, completed, truncated, aborted or "
             "failed",
             where, name);
}

int64_t Sample::effective_response_length() const {
  if (remove_sample) return 0;
  if (loss_mask.empty()) return response_length;
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m;
  return n;
}

double Sample::reward_value(const std::string& key) const {
  const json* r = &reward;
  if (reward.is_object()) {
    if (key.empty())
      GYRE_THROW(invalid_argument,
                 "sample {}: reward is an object {}; choose the scalar with --reward-key",
                 index.value_or(-1), reward.dump());
    auto it = reward.find(key);
    if (it == reward.end())
      GYRE_THROW(invalid_argument, "sample {}: reward has no key '{}' (--reward-key); it is {}",
                 index.value_or(-1), key, reward.dump());
    r = &*it;
  }
  if (r->is_boolean()) return r->get<bool>() ? 1.0 : 0.0;
  if (!r->is_number())
    GYRE_THROW(invalid_argument, "sample {}: reward {} is not a number (was it scored?)",
               index.value_or(-1), r->dump());
  return r->get<double>();
}

void Sample::apply_finish_reason(std::string_view reason) {
  if (reason == "length") status = SampleStatus::truncated;
  if (reason == "abort") status = SampleStatus::aborted;
  if (reason == "stop") status = SampleStatus::completed;
}

void Sample::append_response(const std::vector<int32_t>& new_tokens,
                             const std::vector<float>& log_probs, bool trainable,
                             const std::string& role, const std::string& text) {
  std::string where = fmt::format("sample {}", index.value_or(-1));
  if (trainable && log_probs.size() != new_tokens.size())
    GYRE_THROW(invalid_argument,
               "{}: trainable tokens need one log-prob each, got {} tokens and {} log-probs", where,
               new_tokens.size(), log_probs.size());
  if (!trainable && !log_probs.empty())
    GYRE_THROW(invalid_argument,
               "{}: non-trainable ({}) tokens must not carry log-probs (they were not sampled)",
               where, role);
  if (int64_t(rollout_log_probs.size()) != response_length)
    GYRE_THROW(invalid_argument,
               "{}: cannot append a turn: rollout_log_probs has {} entries for a response of {} "
               "tokens",
               where, rollout_log_probs.size(), response_length);
  // Materialise the implicit all-ones mask and the implicit single segment of an existing response
  // so both stay aligned with the new tokens.
  if (loss_mask.empty()) loss_mask.assign(size_t(response_length), 1);
  if (segments.empty() && response_length > 0) segments.push_back({0, response_length});
  int64_t begin = response_length;
  tokens.insert(tokens.end(), new_tokens.begin(), new_tokens.end());
  if (trainable)
    rollout_log_probs.insert(rollout_log_probs.end(), log_probs.begin(), log_probs.end());
  else
    rollout_log_probs.insert(rollout_log_probs.end(), new_tokens.size(), 0.0f);
  loss_mask.insert(loss_mask.end(), new_tokens.size(), trainable ? 1 : 0);
  response_length += int64_t(new_tokens.size());
  response += text;
  if (!new_tokens.empty()) segments.push_back({begin, response_length, role, trainable});
}

void Sample::validate(const std::string& where) const {
  if (response_length < 0 || response_length > int64_t(tokens.size()))
    GYRE_THROW(invalid_argument,
               "{}: response_length {} is outside [0, {}] (tokens holds prompt + response ids)",
               where, response_length, tokens.size());
  if (!prompt.is_string() && !prompt.is_array())
    GYRE_THROW(invalid_argument, "{}: prompt must be a string or a list of chat messages", where);
  auto check_len = [&](size_t n, const char* field) {
    if (n != 0 && int64_t(n) != response_length)
      GYRE_THROW(invalid_argument,
                 "{}: {} has {} entries but response_length is {} (one per response token, or "
                 "none)",
                 where, field, n, response_length);
  };
  check_len(loss_mask.size(), "loss_mask");
  check_len(rollout_log_probs.size(), "rollout_log_probs");
  check_len(teacher_log_probs.size(), "teacher_log_probs");
  for (size_t i = 0; i < loss_mask.size(); ++i)
    if (loss_mask[i] > 1)
      GYRE_THROW(invalid_argument, "{}: loss_mask[{}] is {}; only 0 and 1 are allowed", where, i,
                 loss_mask[i]);
  if (!segments.empty()) {
    int64_t at = 0;
    for (size_t s = 0; s < segments.size(); ++s) {
      const Segment& seg = segments[s];
      if (seg.begin != at || seg.end <= seg.begin)
        GYRE_THROW(invalid_argument,
                   "{}: segments[{}] = [{}, {}) must start at {} and be non-empty (segments tile "
                   "the response in order)",
                   where, s, seg.begin, seg.end, at);
      if (!seg.trainable && !loss_mask.empty())
        for (int64_t i = seg.begin; i < seg.end && i < int64_t(loss_mask.size()); ++i)
          if (loss_mask[size_t(i)])
            GYRE_THROW(invalid_argument,
                       "{}: loss_mask[{}] is 1 inside non-trainable segment {} ({})", where, i, s,
                       seg.role);
      at = seg.end;
    }
    if (at != response_length)
      GYRE_THROW(invalid_argument, "{}: segments cover {} response tokens of {}", where, at,
                 response_length);
  }
}

json Sample::to_json() const {
  json j = extra.is_object() ? extra : json::object();
  j["index"] = opt_to_json(index);
  j["group_index"] = opt_to_json(group_index);
  j["rollout_id"] = opt_to_json(rollout_id);
  j["prompt"] = prompt;
  j["tokens"] = tokens;
  j["response"] = response;
  j["response_length"] = response_length;
  j["label"] = label;
  j["reward"] = reward;
  j["loss_mask"] = loss_mask.empty() ? json(nullptr) : json(loss_mask);
  j["rollout_log_probs"] = floats_to_json(rollout_log_probs);
  j["teacher_log_probs"] = floats_to_json(teacher_log_probs);
  j["status"] = status_name(status);
  j["metadata"] = metadata;
  j["weight_versions"] = weight_versions;
  j["remove_sample"] = remove_sample;
  j["session_id"] = session_id.empty() ? json(nullptr) : json(session_id);
  if (!segments.empty()) {
    json segs = json::array();
    for (const auto& s : segments)
      segs.push_back(
          {{"begin", s.begin}, {"end", s.end}, {"role", s.role}, {"trainable", s.trainable}});
    j["segments"] = std::move(segs);
  }
  return j;
}

Sample Sample::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) GYRE_THROW(invalid_argument, "{}: a sample must be a JSON object", where);
  Sample s;
  auto get = [&](const char* key) -> const json& {
    static const json kNull;
    auto it = j.find(key);
    return it == j.end() ? kNull : *it;
  };
  s.index = opt_int(get("index"), where, "index");
  s.group_index = opt_int(get("group_index"), where, "group_index");
  s.rollout_id = opt_int(get("rollout_id"), where, "rollout_id");
  if (const json& p = get("prompt"); !p.is_null()) s.prompt = p;
  if (const json& t = get("tokens"); !t.is_null()) {
    if (!t.is_array()) GYRE_THROW(invalid_argument, "{}: tokens must be a list of ids", where);
    s.tokens.reserve(t.size());
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].is_number_integer() || t[i].get<int64_t>() < 0 ||
          t[i].get<int64_t>() > std::numeric_limits<int32_t>::max())
        GYRE_THROW(invalid_argument, "{}: tokens[{}] = {} is not a token id", where, i,
                   t[i].dump());
      s.tokens.push_back(t[i].get<int32_t>());
    }
  }
  if (const json& r = get("response"); !r.is_null()) {
    if (!r.is_string()) GYRE_THROW(invalid_argument, "{}: response must be a string", where);
    s.response = r.get<std::string>();
  }
  if (auto rl = opt_int(get("response_length"), where, "response_length")) s.response_length = *rl;
  s.label = get("label");
  s.reward = get("reward");
  if (const json& m = get("loss_mask"); !m.is_null()) {
    if (!m.is_array()) GYRE_THROW(invalid_argument, "{}: loss_mask must be a list of 0/1", where);
    for (size_t i = 0; i < m.size(); ++i) {
      if (!m[i].is_number_integer() || (m[i] != 0 && m[i] != 1))
        GYRE_THROW(invalid_argument, "{}: loss_mask[{}] = {} must be 0 or 1", where, i,
                   m[i].dump());
      s.loss_mask.push_back(uint8_t(m[i].get<int>()));
    }
  }
  s.rollout_log_probs = floats_from_json(get("rollout_log_probs"), where, "rollout_log_probs");
  s.teacher_log_probs = floats_from_json(get("teacher_log_probs"), where, "teacher_log_probs");
  if (const json& st = get("status"); !st.is_null()) {
    if (!st.is_string()) GYRE_THROW(invalid_argument, "{}: status must be a string", where);
    s.status = parse_status(st.get<std::string>(), where);
  }
  if (const json& m = get("metadata"); !m.is_null()) {
    if (!m.is_object()) GYRE_THROW(invalid_argument, "{}: metadata must be an object", where);
    s.metadata = m;
  }
  if (const json& w = get("weight_versions"); !w.is_null()) {
    if (!w.is_array()) GYRE_THROW(invalid_argument, "{}: weight_versions must be a list", where);
    for (const auto& v : w)
      s.weight_versions.push_back(v.is_string() ? v.get<std::string>() : v.dump());
  }
  if (const json& r = get("remove_sample"); !r.is_null()) {
    if (!r.is_boolean()) GYRE_THROW(invalid_argument, "{}: remove_sample must be a bool", where);
    s.remove_sample = r.get<bool>();
  }
  if (const json& id = get("session_id"); !id.is_null()) {
    if (!id.is_string()) GYRE_THROW(invalid_argument, "{}: session_id must be a string", where);
    s.session_id = id.get<std::string>();
  }
  if (const json& segs = get("segments"); !segs.is_null()) {
    if (!segs.is_array()) GYRE_THROW(invalid_argument, "{}: segments must be a list", where);
    for (size_t i = 0; i < segs.size(); ++i) {
      const json& g = segs[i];
      if (!g.is_object() || !g.value("begin", json()).is_number_integer() ||
          !g.value("end", json()).is_number_integer() || !g.value("role", json()).is_string() ||
          !g.value("trainable", json()).is_boolean())
        GYRE_THROW(invalid_argument,
                   "{}: segments[{}] must be {{begin: int, end: int, role: str, trainable: bool}}",
                   where, i);
      s.segments.push_back({g["begin"].get<int64_t>(), g["end"].get<int64_t>(),
                            g["role"].get<std::string>(), g["trainable"].get<bool>()});
    }
  }
  static const char* kKnown[] = {
      "index",      "group_index", "rollout_id",        "prompt",
      "tokens",     "response",    "response_length",   "label",
      "reward",     "loss_mask",   "rollout_log_probs", "teacher_log_probs",
      "status",     "metadata",    "weight_versions",   "remove_sample",
      "session_id", "segments"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known) s.extra[it.key()] = it.value();
  }
  s.validate(where);
  return s;
}

}  // namespace gyre::rl
