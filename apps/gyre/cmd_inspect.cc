// `gyre inspect --model DIR [--json]`: what a Hugging Face model folder holds — architecture and
// sizes from config.json, the checkpoint's tensors cross-checked against the names and shapes the
// config implies (model/param_names.h), NaN / inf values per tensor (model/checkpoint_io.h; skipped
// with --skip-value-check, which reads the headers only), parameter count and memory estimates.
// Exit codes: 0 all consistent, 1 the checkpoint disagrees with the config or holds non-finite
// values, 2 bad input (Error).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/model/checkpoint_io.h"
#include "gyre/model/config.h"
#include "gyre/model/param_names.h"
#include "gyre/model/safetensors.h"

namespace {

using gyre::model::ModelConfig;
using nlohmann::json;

// Training memory per parameter: f32 weights + f32 grads + AdamW's two f32 moments (m, v).
constexpr int64_t kTrainBytesPerParam = 16;

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.2f} {}", b, units[u]);
}

// "7615616 (7.62M)": the exact count first so it can be grepped and compared.
std::string count_str(int64_t v) {
  double d = double(v);
  if (d >= 1e9) return fmt::format("{} ({:.2f}B)", v, d / 1e9);
  if (d >= 1e6) return fmt::format("{} ({:.2f}M)", v, d / 1e6);
  if (d >= 1e3) return fmt::format("{} ({:.2f}K)", v, d / 1e3);
  return std::to_string(v);
}

std::string rope_str(const gyre::model::RopeConfig& r) {
  std::string s = fmt::format("{} (theta {:g}", r.type, r.theta);
  if (r.type == "linear") s += fmt::format(", factor {:g}", r.factor);
  if (r.type == "llama3")
    s += fmt::format(", factor {:g}, low_freq_factor {:g}, high_freq_factor {:g}, original {}",
                     r.factor, r.low_freq_factor, r.high_freq_factor,
                     r.original_max_position_embeddings);
  if (r.type == "yarn")
    s += fmt::format(", factor {:g}, beta_fast {:g}, beta_slow {:g}, original {}", r.factor,
                     r.beta_fast, r.beta_slow, r.original_max_position_embeddings);
  return s + ")";
}

struct Checkpoint {
  bool present = false;
  std::string absent_reason;
  int64_t num_tensors = 0, num_parameters = 0, bytes = 0;
  std::set<std::string> files;
  std::map<std::string, int64_t> dtypes;  // dtype name -> tensor count
  gyre::model::TensorMismatch mismatch;
  bool values_checked = false;
  // Tensors holding NaN / inf, in name order, with their counts.
  std::vector<std::pair<std::string, gyre::model::NonFiniteCount>> non_finite;
};

Checkpoint scan_checkpoint(const std::string& dir, const ModelConfig& cfg, bool check_values) {
  Checkpoint ck;
  gyre::model::SafetensorsReader reader;
  try {
    reader = gyre::model::SafetensorsReader::open(dir);
  } catch (const gyre::Error& e) {
    // A config-only folder can still be inspected; a corrupt checkpoint is an error.
    if (e.kind() != gyre::ErrorKind::not_found) throw;
    ck.absent_reason = e.what();
    return ck;
  }
  ck.present = true;
  std::vector<std::pair<std::string, gyre::Shape>> actual;
  for (auto& name : reader.names()) {
    const auto& info = reader.info(name);
    actual.push_back({name, info.shape});
    ck.num_tensors++;
    ck.num_parameters += gyre::shape_numel(info.shape);
    ck.bytes += gyre::shape_numel(info.shape) * int64_t(gyre::dtype_size(info.dtype));
    ck.files.insert(info.file);
    ck.dtypes[gyre::dtype_name(info.dtype)]++;
    if (check_values) {
      const gyre::model::NonFiniteCount c = gyre::model::count_non_finite(reader.get(name));
      if (c.total() > 0) ck.non_finite.push_back({name, c});
    }
  }
  ck.values_checked = check_values;
  ck.mismatch = gyre::model::compare_tensors(cfg, actual);
  return ck;
}

json to_json(const std::string& dir, const ModelConfig& c, const Checkpoint& ck) {
  json j;
  j["model"] = dir;
  j["architecture"] = gyre::model::arch_name(c.arch);
  j["model_type"] = c.model_type;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["qk_norm"] = c.qk_norm;
  j["rope"] = {{"type", c.rope.type},
               {"theta", c.rope.theta},
               {"factor", c.rope.factor},
               {"original_max_position_embeddings", c.rope.original_max_position_embeddings}};
  if (c.num_experts > 0) {
    int64_t moe_layers = 0;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) moe_layers += c.is_moe_layer(i);
    j["moe"] = {{"num_experts", c.num_experts},
                {"num_experts_per_tok", c.num_experts_per_tok},
                {"moe_intermediate_size", c.moe_intermediate_size},
                {"norm_topk_prob", c.norm_topk_prob},
                {"moe_layers", moe_layers}};
  }
  j["dtype"] = gyre::dtype_name(c.dtype);
  j["num_parameters"] = c.num_parameters();
  j["memory"] = {
      {"weight_bytes", c.num_parameters() * int64_t(gyre::dtype_size(c.dtype))},
      {"training_bytes", c.num_parameters() * kTrainBytesPerParam},
  };
  if (ck.present) {
    j["checkpoint"] = {{"num_tensors", ck.num_tensors},
                       {"num_parameters", ck.num_parameters},
                       {"bytes", ck.bytes},
                       {"files", ck.files},
                       {"dtypes", ck.dtypes}};
    j["tensors_ok"] = ck.mismatch.ok();
    j["missing"] = ck.mismatch.missing;
    j["unexpected"] = ck.mismatch.unexpected;
    json ws = json::array();
    for (auto& [name, shapes] : ck.mismatch.wrong_shape)
      ws.push_back({{"name", name}, {"expected", shapes.first}, {"actual", shapes.second}});
    j["wrong_shape"] = ws;
    if (ck.values_checked) {
      json nf = json::array();
      for (auto& [name, c] : ck.non_finite)
        nf.push_back({{"name", name}, {"nan", c.nan}, {"inf", c.inf}});
      j["values_ok"] = ck.non_finite.empty();
      j["non_finite"] = nf;
    } else {
      j["values_ok"] = nullptr;  // not read (--skip-value-check)
    }
  } else {
    j["checkpoint"] = nullptr;
    j["checkpoint_absent"] = ck.absent_reason;
  }
  return j;
}

void print_text(const std::string& dir, const ModelConfig& c, const Checkpoint& ck) {
  auto line = [](const char* k, const std::string& v) { std::printf("%-18s %s\n", k, v.c_str()); };
  line("model:", dir);
  line("architecture:",
       fmt::format("{} (model_type {})", gyre::model::arch_name(c.arch), c.model_type));
  line("layers:", std::to_string(c.num_hidden_layers));
  line("hidden size:", std::to_string(c.hidden_size));
  line("intermediate:", std::to_string(c.intermediate_size));
  line("attention:",
       fmt::format("{} heads, {} kv heads, head_dim {}{}{}", c.num_attention_heads,
                   c.num_key_value_heads, c.head_dim, c.attention_bias ? ", qkv bias" : "",
                   c.qk_norm ? ", qk_norm" : ""));
  line("vocab size:", std::to_string(c.vocab_size));
  line("max positions:", std::to_string(c.max_position_embeddings));
  line("tied embeddings:", c.tie_word_embeddings ? "yes" : "no");
  if (c.num_experts > 0) {
    int64_t moe_layers = 0;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) moe_layers += c.is_moe_layer(i);
    line("MoE:", fmt::format("{} experts, top-{}, moe_intermediate {}, norm_topk_prob {}, {} of {} "
                             "layers sparse",
                             c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size,
                             c.norm_topk_prob ? "yes" : "no", moe_layers, c.num_hidden_layers));
  }
  line("rope:", rope_str(c.rope));
  line("dtype:", gyre::dtype_name(c.dtype));
  const int64_t n = c.num_parameters();
  line("parameters:", count_str(n) + " (from config)");
  line("weights:", fmt::format("{} in {}", human_bytes(double(n) * gyre::dtype_size(c.dtype)),
                               gyre::dtype_name(c.dtype)));
  line("training memory:",
       fmt::format("{} (f32 weights + grads + 2 Adam moments = {} bytes/param, "
                   "activations not included)",
                   human_bytes(double(n) * kTrainBytesPerParam), kTrainBytesPerParam));
  if (!ck.present) {
    line("checkpoint:", "none (" + ck.absent_reason + ")");
    return;
  }
  std::string dts;
  for (auto& [d, cnt] : ck.dtypes) dts += fmt::format("{}{} x{}", dts.empty() ? "" : ", ", d, cnt);
  line("checkpoint:", fmt::format("{} tensors in {} file(s), {} parameters, {} ({})",
                                  ck.num_tensors, ck.files.size(), count_str(ck.num_parameters),
                                  human_bytes(double(ck.bytes)), dts));
  if (!ck.values_checked)
    line("values:", "not read (--skip-value-check)");
  else if (ck.non_finite.empty())
    line("values:", "all finite");
  else
    line("values:", fmt::format("NON-FINITE in {} tensor(s)", ck.non_finite.size()));
  for (auto& [name, c] : ck.non_finite)
    std::printf("  non-finite: %s: %lld NaN, %lld inf\n", name.c_str(),
                static_cast<long long>(c.nan), static_cast<long long>(c.inf));
  const auto& m = ck.mismatch;
  if (m.ok()) {
    line("tensors:", "checkpoint tensors match the config");
    return;
  }
  line("tensors:", fmt::format("MISMATCH: {} missing, {} unexpected, {} of wrong shape",
                               m.missing.size(), m.unexpected.size(), m.wrong_shape.size()));
  for (auto& s : m.missing) std::printf("  missing: %s\n", s.c_str());
  for (auto& s : m.unexpected) std::printf("  unexpected: %s\n", s.c_str());
  for (auto& [name, shapes] : m.wrong_shape)
    std::printf("  wrong shape: %s expected %s, got %s\n", name.c_str(),
                gyre::shape_str(shapes.first).c_str(), gyre::shape_str(shapes.second).c_str());
}

int run_inspect(int argc, char** argv) {
  CLI::App app{"Describe a Hugging Face model folder and check its checkpoint against its config"};
  std::string dir;
  bool as_json = false, skip_values = false;
  app.add_option("--model", dir, "model folder (config.json + *.safetensors)")->required();
  app.add_flag("--json", as_json, "print one JSON object instead of text");
  app.add_flag("--skip-value-check", skip_values,
               "do not read the weights for NaN / inf (headers only: fast on a large model)");
  CLI11_PARSE(app, argc, argv);
  ModelConfig cfg = gyre::model::load_config(dir);
  Checkpoint ck = scan_checkpoint(dir, cfg, !skip_values);
  if (as_json)
    std::printf("%s\n", to_json(dir, cfg, ck).dump(2).c_str());
  else
    print_text(dir, cfg, ck);
  if (!ck.non_finite.empty()) {
    // Also on stderr, so a script that checks the status sees why.
    std::vector<std::string> names;
    for (auto& [name, c] : ck.non_finite) names.push_back(name);
    std::fprintf(
        stderr,
        "error: checkpoint %s: %zu tensor(s) hold NaN or infinite weights: %s; the file is "
        "corrupt or was saved from a diverged run\n",
        dir.c_str(), names.size(), fmt::format("{}", fmt::join(names, ", ")).c_str());
  }
  return ck.present && (!ck.mismatch.ok() || !ck.non_finite.empty()) ? 1 : 0;
}

}  // namespace

GYRE_COMMAND(inspect, "describe a model folder: config, parameters, memory, checkpoint check",
             run_inspect);
