// ModelConfig from a Hugging Face config.json: both the transformers v4 spelling (rope_theta,
// rope_scaling{type|rope_type}, torch_dtype) and the v5 spelling (rope_parameters{rope_type,
// rope_theta}, dtype). Defaults for absent keys are the ones of the matching transformers config
// class (LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig), so a sparse hub config means what
// it means there. Every error names the file and the key.
#include "gyre/model/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gyre/core/error.h"
#include "gyre/model/json_util.h"

namespace gyre::model {

namespace fs = std::filesystem;
using json_util::Json;

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::llama: return "LlamaForCausalLM";
    case Arch::qwen2: return "Qwen2ForCausalLM";
    case Arch::qwen3: return "Qwen3ForCausalLM";
    case Arch::qwen3_moe: return "Qwen3MoeForCausalLM";
  }
  return "?";
}

namespace {

constexpr const char* kSupported =
    "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM";

struct ArchInfo {
  Arch arch;
  const char* class_name;
  const char* model_type;
  int64_t default_max_pos;  // transformers config class default for max_position_embeddings
};
constexpr ArchInfo kArchs[] = {
    {Arch::llama, "LlamaForCausalLM", "llama", 2048},
    {Arch::qwen2, "Qwen2ForCausalLM", "qwen2", 32768},
    {Arch::qwen3, "Qwen3ForCausalLM", "qwen3", 32768},
    {Arch::qwen3_moe, "Qwen3MoeForCausalLM", "qwen3_moe", 32768},
};

const ArchInfo& resolve_arch(const Json& j, const std::string& src) {
  auto it = j.find("architectures");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      GYRE_THROW(invalid_argument,
                 "{}: key 'architectures' must be a non-empty list of class names like "
                 "[\"Qwen3ForCausalLM\"], got {}",
                 src, it->dump());
    std::string name = (*it)[0].get<std::string>();
    for (auto& i : kArchs)
      if (name == i.class_name) return i;
    GYRE_THROW(unsupported, "unsupported architecture '{}' in {}; supported: {}", name, src,
               kSupported);
  }
  // No architectures list (some hand-written configs): fall back to model_type, as AutoModel does.
  auto mt = json_util::opt_string(j, "model_type", src);
  if (!mt)
    GYRE_THROW(invalid_argument,
               "{}: missing required key 'architectures' (and no 'model_type' to fall back on); "
               "add e.g. \"architectures\": [\"LlamaForCausalLM\"]",
               src);
  for (auto& i : kArchs)
    if (*mt == i.model_type) return i;
  GYRE_THROW(unsupported, "unsupported architecture 'model_type={}' in {}; supported: {}", *mt, src,
             kSupported);
}

DType parse_dtype(const Json& j, const std::string& src) {
  // v5 writes "dtype", v4 "torch_dtype"; prefer the v5 key when both are present.
  const char* key = "dtype";
  auto s = json_util::opt_string(j, "dtype", src);
  if (!s) {
    key = "torch_dtype";
    s = json_util::opt_string(j, "torch_dtype", src);
  }
  if (!s) return DType::f32;  // PretrainedConfig's default (weights saved as float32)
  std::string v = *s;
  if (v.rfind("torch.", 0) == 0) v = v.substr(6);
  if (v == "float32" || v == "float") return DType::f32;
  if (v == "bfloat16") return DType::bf16;
  if (v == "float16" || v == "half") return DType::f16;
  if (v == "float64" || v == "double") return DType::f64;
  GYRE_THROW(unsupported, "{}: key '{}' is '{}'; supported: float32, bfloat16, float16, float64",
             src, key, *s);
}

std::vector<int32_t> parse_token_ids(const Json& j, const std::string& key,
                                     const std::string& src) {
  std::vector<int32_t> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  auto add = [&](const Json& v) {
    int64_t id = json_util::as_int(v, key, src);
    if (id < 0 || id > INT32_MAX)
      GYRE_THROW(invalid_argument, "{}: key '{}' holds token id {} outside [0, 2^31)", src, key,
                 id);
    if (std::find(out.begin(), out.end(), int32_t(id)) == out.end()) out.push_back(int32_t(id));
  };
  if (it->is_array()) {
    for (auto& v : *it) add(v);
  } else {
    add(*it);
  }
  return out;
}

RopeConfig parse_rope(const Json& j, const std::string& src) {
  RopeConfig r;
  auto top_theta = json_util::opt_double(j, "rope_theta", src);
  if (top_theta) r.theta = *top_theta;
  const Json* obj = nullptr;
  std::string prefix;
  auto rp = j.find("rope_parameters");  // transformers v5
  auto rs = j.find("rope_scaling");     // transformers v4
  if (rp != j.end() && !rp->is_null()) {
    obj = &*rp;
    prefix = "rope_parameters.";
  } else if (rs != j.end() && !rs->is_null()) {
    obj = &*rs;
    prefix = "rope_scaling.";
  }
  if (!obj) return r;
  if (!obj->is_object())
    GYRE_THROW(invalid_argument, "{}: key '{}' must be an object, got {}", src,
               prefix.substr(0, prefix.size() - 1), json_util::type_name(*obj));
  if (auto t = json_util::opt_double(*obj, "rope_theta", src, prefix)) r.theta = *t;
  // v4 used "type", later v4 and v5 "rope_type"; either may appear.
  auto type = json_util::opt_string(*obj, "rope_type", src, prefix);
  if (!type) type = json_util::opt_string(*obj, "type", src, prefix);
  r.type = type.value_or("default");
  if (r.type != "default" && r.type != "linear" && r.type != "llama3" && r.type != "yarn")
    GYRE_THROW(unsupported,
               "{}: rope type '{}' (key '{}rope_type') is not supported; supported: "
               "default, linear, llama3, yarn",
               src, r.type, prefix);
  bool needs_factor = r.type != "default";
  if (needs_factor)
    r.factor = json_util::get_double(*obj, "factor", src, prefix);
  else if (auto f = json_util::opt_double(*obj, "factor", src, prefix))
    r.factor = *f;
  if (r.type == "llama3") {
    r.low_freq_factor = json_util::get_double(*obj, "low_freq_factor", src, prefix);
    r.high_freq_factor = json_util::get_double(*obj, "high_freq_factor", src, prefix);
    r.original_max_position_embeddings =
        json_util::get_int(*obj, "original_max_position_embeddings", src, prefix);
  } else {
    if (auto v = json_util::opt_double(*obj, "low_freq_factor", src, prefix))
      r.low_freq_factor = *v;
    if (auto v = json_util::opt_double(*obj, "high_freq_factor", src, prefix))
      r.high_freq_factor = *v;
    if (auto v = json_util::opt_int(*obj, "original_max_position_embeddings", src, prefix))
      r.original_max_position_embeddings = *v;
  }
  if (auto v = json_util::opt_double(*obj, "beta_fast", src, prefix)) r.beta_fast = *v;
  if (auto v = json_util::opt_double(*obj, "beta_slow", src, prefix)) r.beta_slow = *v;
  r.mscale = json_util::opt_double(*obj, "mscale", src, prefix);
  r.mscale_all_dim = json_util::opt_double(*obj, "mscale_all_dim", src, prefix);
  r.attention_factor = json_util::opt_double(*obj, "attention_factor", src, prefix);
  if (auto v = json_util::opt_bool(*obj, "truncate", src, prefix)) r.truncate = *v;

  if (!(r.theta > 0))
    GYRE_THROW(invalid_argument, "{}: rope_theta must be positive, got {}", src, r.theta);
  if (needs_factor && !(r.factor > 0))
    GYRE_THROW(invalid_argument, "{}: key '{}factor' must be positive, got {}", src, prefix,
               r.factor);
  if (r.type == "llama3") {
    // Llama 3's smoothing divides by (high_freq_factor - low_freq_factor).
    if (!(r.high_freq_factor > r.low_freq_factor))
      GYRE_THROW(invalid_argument,
                 "{}: '{}high_freq_factor' ({}) must exceed '{}low_freq_factor' ({})", src, prefix,
                 r.high_freq_factor, prefix, r.low_freq_factor);
    if (r.original_max_position_embeddings <= 0)
      GYRE_THROW(invalid_argument,
                 "{}: '{}original_max_position_embeddings' must be positive, got {}", src, prefix,
                 r.original_max_position_embeddings);
  }
  if (r.type == "yarn" && r.original_max_position_embeddings < 0)
    GYRE_THROW(invalid_argument,
               "{}: '{}original_max_position_embeddings' must be positive, got {}", src, prefix,
               r.original_max_position_embeddings);
  return r;
}

void require_positive(int64_t v, const char* key, const std::string& src) {
  if (v <= 0) GYRE_THROW(invalid_argument, "{}: key '{}' must be positive, got {}", src, key, v);
}

void check_sanity(const ModelConfig& c, const std::string& src, bool head_dim_explicit) {
  require_positive(c.vocab_size, "vocab_size", src);
  require_positive(c.hidden_size, "hidden_size", src);
  require_positive(c.num_hidden_layers, "num_hidden_layers", src);
  require_positive(c.num_attention_heads, "num_attention_heads", src);
  require_positive(c.num_key_value_heads, "num_key_value_heads", src);
  require_positive(c.max_position_embeddings, "max_position_embeddings", src);
  if (!head_dim_explicit && c.hidden_size % c.num_attention_heads != 0)
    GYRE_THROW(invalid_argument,
               "{}: hidden_size {} is not divisible by num_attention_heads {}; set 'head_dim' "
               "explicitly or fix the sizes",
               src, c.hidden_size, c.num_attention_heads);
  require_positive(c.head_dim, "head_dim", src);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    GYRE_THROW(
        invalid_argument,
        "{}: num_attention_heads {} is not divisible by num_key_value_heads {} (grouped-query "
        "attention shares each kv head among an equal number of query heads)",
        src, c.num_attention_heads, c.num_key_value_heads);
  if (!(c.rms_norm_eps > 0))
    GYRE_THROW(invalid_argument, "{}: key 'rms_norm_eps' must be positive, got {}", src,
               c.rms_norm_eps);
  bool any_dense = false;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) any_dense |= !c.is_moe_layer(i);
  if (any_dense) require_positive(c.intermediate_size, "intermediate_size", src);
  if (c.arch == Arch::qwen3_moe) {
    require_positive(c.num_experts, "num_experts", src);
    require_positive(c.num_experts_per_tok, "num_experts_per_tok", src);
    require_positive(c.moe_intermediate_size, "moe_intermediate_size", src);
    require_positive(c.decoder_sparse_step, "decoder_sparse_step", src);
    if (c.num_experts_per_tok > c.num_experts)
      GYRE_THROW(invalid_argument,
                 "{}: num_experts_per_tok {} exceeds the number of experts {}; top-k must pick "
                 "at most all experts",
                 src, c.num_experts_per_tok, c.num_experts);
    for (int64_t l : c.mlp_only_layers)
      if (l < 0 || l >= c.num_hidden_layers)
        GYRE_THROW(invalid_argument,
                   "{}: mlp_only_layers holds layer {} outside [0, num_hidden_layers={})", src, l,
                   c.num_hidden_layers);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) GYRE_THROW(io, "{}: cannot open for reading", path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) GYRE_THROW(io, "{}: read failed", path);
  return ss.str();
}

}  // namespace

bool ModelConfig::is_moe_layer(int64_t i) const {
  if (arch != Arch::qwen3_moe || num_experts <= 0 || decoder_sparse_step <= 0) return false;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), i) != mlp_only_layers.end())
    return false;
  return (i + 1) % decoder_sparse_step == 0;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size, q_dim = num_attention_heads * head_dim,
                kv_dim = num_key_value_heads * head_dim;
  int64_t attn = h * q_dim + 2 * h * kv_dim + q_dim * h;
  if (attention_bias) attn += q_dim + 2 * kv_dim;
  if (has_o_proj_bias()) attn += h;
  if (qk_norm) attn += 2 * head_dim;
  const int64_t dense_mlp = 3 * h * intermediate_size + (mlp_bias ? 2 * intermediate_size + h : 0);
  const int64_t moe_mlp = num_experts * h + num_experts * 3 * h * moe_intermediate_size;
  int64_t total = vocab_size * h;  // embed_tokens
  for (int64_t i = 0; i < num_hidden_layers; ++i)
    total += attn + (is_moe_layer(i) ? moe_mlp : dense_mlp) + 2 * h;  // + two RMSNorm weights
  total += h;                                                         // final norm
  if (!tie_word_embeddings) total += vocab_size * h;                  // lm_head
  return total;
}

ModelConfig parse_config_json(const std::string& json_text, const std::string& src) {
  Json j = json_util::parse(json_text, src);
  if (!j.is_object())
    GYRE_THROW(invalid_argument, "{}: expected a JSON object at the top level, got {}", src,
               json_util::type_name(j));
  const ArchInfo& ai = resolve_arch(j, src);
  ModelConfig c;
  c.arch = ai.arch;
  c.model_type = json_util::opt_string(j, "model_type", src).value_or(ai.model_type);
  c.vocab_size = json_util::get_int(j, "vocab_size", src);
  c.hidden_size = json_util::get_int(j, "hidden_size", src);
  c.num_hidden_layers = json_util::get_int(j, "num_hidden_layers", src);
  c.num_attention_heads = json_util::get_int(j, "num_attention_heads", src);
  // Absent num_key_value_heads means multi-head attention (all config classes default to heads).
  c.num_key_value_heads =
      json_util::opt_int(j, "num_key_value_heads", src).value_or(c.num_attention_heads);
  auto head_dim = json_util::opt_int(j, "head_dim", src);
  bool head_dim_explicit = head_dim.has_value();
  if (!head_dim && c.arch == Arch::qwen3) {
    head_dim = 128;  // Qwen3Config's default head_dim, independent of hidden_size
    head_dim_explicit = true;
  }
  if (!head_dim && c.num_attention_heads > 0) head_dim = c.hidden_size / c.num_attention_heads;
  c.head_dim = head_dim.value_or(0);
  c.max_position_embeddings =
      json_util::opt_int(j, "max_position_embeddings", src).value_or(ai.default_max_pos);
  c.rms_norm_eps = json_util::opt_double(j, "rms_norm_eps", src).value_or(1e-6);
  c.tie_word_embeddings = json_util::opt_bool(j, "tie_word_embeddings", src).value_or(false);
  // Qwen2Attention hard-codes bias=True on q/k/v (and False on o); the others follow
  // attention_bias.
  bool attn_bias = json_util::opt_bool(j, "attention_bias", src).value_or(false);
  c.attention_bias = c.arch == Arch::qwen2 ? true : attn_bias;
  c.mlp_bias = c.arch == Arch::llama && json_util::opt_bool(j, "mlp_bias", src).value_or(false);
  c.qk_norm = c.arch == Arch::qwen3 || c.arch == Arch::qwen3_moe;
  c.rope = parse_rope(j, src);
  c.dtype = parse_dtype(j, src);
  auto bos = parse_token_ids(j, "bos_token_id", src);
  if (!bos.empty()) c.bos_token_id = bos[0];
  c.eos_token_ids = parse_token_ids(j, "eos_token_id", src);

  if (c.arch == Arch::qwen3_moe) {
    // v4 Qwen3MoeConfig says num_experts; v5 writes num_local_experts.
    auto ne = json_util::opt_int(j, "num_experts", src);
    if (!ne) ne = json_util::opt_int(j, "num_local_experts", src);
    if (!ne)
      GYRE_THROW(invalid_argument,
                 "{}: missing required key 'num_experts' (or 'num_local_experts') for {}", src,
                 ai.class_name);
    c.num_experts = *ne;
    c.num_experts_per_tok = json_util::get_int(j, "num_experts_per_tok", src);
    c.moe_intermediate_size = json_util::get_int(j, "moe_intermediate_size", src);
    c.norm_topk_prob = json_util::opt_bool(j, "norm_topk_prob", src).value_or(false);
    c.decoder_sparse_step = json_util::opt_int(j, "decoder_sparse_step", src).value_or(1);
    auto mo = j.find("mlp_only_layers");
    if (mo != j.end() && !mo->is_null()) {
      if (!mo->is_array())
        GYRE_THROW(invalid_argument,
                   "{}: key 'mlp_only_layers' must be a list of layer indices, got {}", src,
                   mo->dump());
      for (auto& v : *mo) c.mlp_only_layers.push_back(json_util::as_int(v, "mlp_only_layers", src));
    }
  }
  // Dense layers need intermediate_size; an all-MoE model may omit it.
  c.intermediate_size = json_util::opt_int(j, "intermediate_size", src).value_or(0);
  bool any_dense = false;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) any_dense |= !c.is_moe_layer(i);
  if (any_dense) c.intermediate_size = json_util::get_int(j, "intermediate_size", src);
  check_sanity(c, src, head_dim_explicit);
  return c;
}

ModelConfig load_config(const std::string& dir) {
  fs::path p = fs::path(dir) / "config.json";
  std::error_code ec;
  if (!fs::exists(p, ec))
    GYRE_THROW(not_found, "{}: config.json not found; pass a Hugging Face model folder",
               p.string());
  ModelConfig c = parse_config_json(read_text(p.string()), p.string());
  // generation_config.json may list more stop tokens (e.g. Llama 3 instruct's <|eot_id|>): union.
  fs::path g = fs::path(dir) / "generation_config.json";
  if (fs::exists(g, ec)) {
    std::string gs = g.string();
    Json gj = json_util::parse(read_text(gs), gs);
    if (!gj.is_object())
      GYRE_THROW(invalid_argument, "{}: expected a JSON object at the top level", gs);
    for (int32_t id : parse_token_ids(gj, "eos_token_id", gs))
      if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
        c.eos_token_ids.push_back(id);
    if (!c.bos_token_id) {
      auto bos = parse_token_ids(gj, "bos_token_id", gs);
      if (!bos.empty()) c.bos_token_id = bos[0];
    }
  }
  return c;
}

}  // namespace gyre::model
