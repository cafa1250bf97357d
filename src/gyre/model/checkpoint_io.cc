// CausalLM construction and Hugging Face folder I/O: load (config.json + safetensors, any float
// dtype → f32), random_init (HF _init_weights: normal linears/embeddings, unit norms, zero biases),
// save (config.json + model.safetensors in f32/bf16/f16) and in-place weight reload; every read
// refuses non-finite weights (checkpoint_io.h).
#include "gyre/model/checkpoint_io.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gyre/core/logging.h"
#include "gyre/core/philox.h"
#include "gyre/core/thread_pool.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/model/weights.h"

namespace gyre::model {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool ignorable_extra(const std::string& name, const ModelConfig& c) {
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;  // HF drops it when tied
  return name.find("rotary_emb.inv_freq") != std::string::npos;        // legacy non-weights
}

// NaN / inf by the bits of a U-wide float: exponent all ones, then mantissa zero (inf) or not.
// The first pass only counts (branch-free, so it vectorises); tensors are almost always clean.
template <typename U>
NonFiniteCount count_special(const Tensor& t, U exponent, U mantissa) {
  const char* p = static_cast<const char*>(t.raw());
  const int64_t n = t.numel();
  auto bits = [p](int64_t i) {
    U u;
    std::memcpy(&u, p + size_t(i) * sizeof(U), sizeof(U));
    return u;
  };
  int64_t special = 0;
  for (int64_t i = 0; i < n; ++i) special += (bits(i) & exponent) == exponent;
  NonFiniteCount c;
  for (int64_t i = 0; special > 0 && i < n; ++i) {
    const U u = bits(i);
    if ((u & exponent) != exponent) continue;
    ++((u & mantissa) ? c.nan : c.inf);
    --special;
  }
  return c;
}

// Copies every parameter from the checkpoint into `params` (already allocated, canonical order).
void read_weights(const std::string& dir, const ModelConfig& c, const std::vector<ParamSpec>& specs,
                  std::vector<NamedTensor>& params) {
  SafetensorsReader reader = SafetensorsReader::open(dir);
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    if (!reader.contains(s.name))
      GYRE_THROW(not_found,
                 "checkpoint {}: missing tensor '{}' (expected shape {} for {} per config.json); "
                 "the weights do not match the config",
                 dir, s.name, shape_str(s.shape), arch_name(c.arch));
    const TensorInfo& info = reader.info(s.name);
    if (!is_float(info.dtype))
      GYRE_THROW(invalid_argument,
                 "checkpoint {}: tensor '{}' has dtype {}; expected a float dtype (F32, BF16, F16 "
                 "or F64)",
                 info.file, s.name, safetensors_name(info.dtype));
    if (info.shape != s.shape)
      GYRE_THROW(invalid_argument,
                 "checkpoint {}: tensor '{}' has shape {} but config.json implies {}; the weights "
                 "do not match the config",
                 info.file, s.name, shape_str(info.shape), shape_str(s.shape));
    params[i].tensor.copy_from(reader.get(s.name));
  }
  // Before any caller sees them: load_weights() keeps the old weights when this throws.
  check_finite_weights(params, dir);
  std::vector<std::string> extra;
  for (const std::string& n : reader.names()) {
    bool known = ignorable_extra(n, c);
    if (!known)
      known =
          std::any_of(specs.begin(), specs.end(), [&](const ParamSpec& s) { return s.name == n; });
    if (!known) extra.push_back(n);
  }
  if (!extra.empty())
    log::warn("checkpoint {}: ignoring {} tensor(s) this {} does not use, e.g. '{}'", dir,
              extra.size(), arch_name(c.arch), extra.front());
}

const char* hf_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    default:
      GYRE_THROW(invalid_argument, "save: dtype {} is not a checkpoint dtype (use f32, bf16, f16)",
                 dtype_name(t));
  }
}

// config.json for a model that was not loaded from disk (transformers v5 spelling plus rope_theta
// so v4 readers work too).
nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j;
  j["architectures"] = {arch_name(c.arch)};
  const char* types[] = {"llama", "qwen2", "qwen3", "qwen3_moe"};
  j["model_type"] = c.model_type.empty() ? types[int(c.arch)] : c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  j["hidden_act"] = "silu";
  nlohmann::json rope;
  rope["rope_type"] = c.rope.type;
  rope["rope_theta"] = c.rope.theta;
  if (c.rope.type != "default") rope["factor"] = c.rope.factor;
  if (c.rope.type == "llama3") {
    rope["low_freq_factor"] = c.rope.low_freq_factor;
    rope["high_freq_factor"] = c.rope.high_freq_factor;
  }
  if (c.rope.original_max_position_embeddings > 0)
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
  if (c.rope.type == "yarn") {
    rope["beta_fast"] = c.rope.beta_fast;
    rope["beta_slow"] = c.rope.beta_slow;
    if (c.rope.mscale) rope["mscale"] = *c.rope.mscale;
    if (c.rope.mscale_all_dim) rope["mscale_all_dim"] = *c.rope.mscale_all_dim;
    if (c.rope.attention_factor) rope["attention_factor"] = *c.rope.attention_factor;
    rope["truncate"] = c.rope.truncate;
  }
  j["rope_parameters"] = rope;
  j["rope_theta"] = c.rope.theta;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (c.arch == Arch::qwen3_moe) {
    j["num_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["decoder_sparse_step"] = c.decoder_sparse_step;
    j["mlp_only_layers"] = c.mlp_only_layers;
  }
  return j;
}

}  // namespace

NonFiniteCount count_non_finite(const Tensor& t) {
  GYRE_CHECK(t.device() == Device::cpu, "count_non_finite: a host tensor is needed");
  switch (t.dtype()) {
    case DType::f32: return count_special<uint32_t>(t, 0x7F800000u, 0x007FFFFFu);
    case DType::bf16: return count_special<uint16_t>(t, 0x7F80, 0x007F);
    case DType::f16: return count_special<uint16_t>(t, 0x7C00, 0x03FF);
    case DType::f64:
      return count_special<uint64_t>(t, 0x7FF0000000000000ull, 0x000FFFFFFFFFFFFFull);
    default: return {};
  }
}

void check_finite_weights(const std::vector<NamedTensor>& tensors, const std::string& source) {
  constexpr size_t kNamed = 4;
  std::vector<std::string> named;
  size_t bad = 0;
  for (const NamedTensor& t : tensors) {
    const NonFiniteCount c = count_non_finite(t.tensor);
    if (c.total() == 0) continue;
    if (++bad <= kNamed)
      named.push_back(fmt::format("'{}' ({} NaN, {} inf of {} values)", t.name, c.nan, c.inf,
                                  t.tensor.numel()));
  }
  if (bad > 0)
    GYRE_THROW(invalid_argument,
               "checkpoint {}: {} tensor(s) hold NaN or infinite weights: {}{}; the file is "
               "corrupt or was saved from a diverged run (use an earlier checkpoint)",
               source, bad, fmt::join(named, ", "), bad > kNamed ? ", ..." : "");
}

std::unique_ptr<CausalLM> CausalLM::random_init(const ModelConfig& config, uint64_t seed,
                                                float stddev, TpComm* tp) {
  std::unique_ptr<CausalLM> m(new CausalLM(config));
  Weights& w = *m->w_;
  for (size_t i = 0; i < w.specs.size(); ++i) {
    const ParamSpec& s = w.specs[i];
    Tensor t = Tensor::empty(s.shape, DType::f32);
    float* p = t.f32();
    const int64_t n = t.numel();
    if (s.init == ParamInit::ones) {
      t.fill(1.0f);
    } else if (s.init == ParamInit::zeros) {
      t.zero();
    } else {
      // One Philox stream per parameter (order-independent), element k = stddev x the stream's
      // k-th normal. A normal takes two u32 draws and a Philox block holds four, so element k's
      // block is k / 2: chunks of an even length start on a block boundary and each can seek
      // there, which makes the parallel fill bitwise the sequential one (a 1.5B-parameter model
      // drew ~20 s on one core; the benches build one per run).
      constexpr int64_t kChunk = int64_t(1) << 20;  // even
      parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          PhiloxStream rng(seed, /*stream=*/i);
          rng.seek(uint64_t(c * kChunk / 2), /*index=*/4);  // the next draw is block c*kChunk/2
          const int64_t end = std::min(n, (c + 1) * kChunk);
          for (int64_t k = c * kChunk; k < end; ++k) p[k] = stddev * rng.next_normal();
        }
      });
    }
    w.params.push_back({s.name, t});
  }
  w.t = bind_tensors(w.slots, w.params);
  m->shard_for_tensor_parallel(tp);  // the full draw, then this rank's shard
  return m;
}

std::unique_ptr<CausalLM> CausalLM::load(const std::string& dir, const LoadOptions& options) {
  ModelConfig config = load_config(dir);
  std::unique_ptr<CausalLM> m(new CausalLM(config));
  Weights& w = *m->w_;
  for (const ParamSpec& s : w.specs)
    w.params.push_back({s.name, Tensor::empty(s.shape, DType::f32)});
  read_weights(dir, config, w.specs, w.params);
  w.t = bind_tensors(w.slots, w.params);
  m->config_json_ = read_text(fs::path(dir) / "config.json");
  m->generation_config_json_ = read_text(fs::path(dir) / "generation_config.json");
  m->shard_for_tensor_parallel(options.tp);  // read full, keep this rank's shard
  m->to(options.device);  // read on the host (f32), then one copy per tensor to the device
  m->set_precision(options.precision);
  return m;
}

void CausalLM::load_weights(const std::string& dir) {
  ModelConfig other = load_config(dir);
  ModelSlots slots;
  std::vector<ParamSpec> specs = param_specs(other, &slots);
  bool same = specs.size() == w_->specs.size();
  for (size_t i = 0; same && i < specs.size(); ++i)
    same = specs[i].name == w_->specs[i].name && specs[i].shape == w_->specs[i].shape;
  if (!same)
    GYRE_THROW(invalid_argument,
               "load_weights: {}/config.json describes a different architecture or size than the "
               "loaded model; load it as a new model instead",
               dir);
  // Read into fresh buffers first so a bad checkpoint leaves the current weights untouched.
  std::vector<NamedTensor> fresh;
  for (const ParamSpec& s : specs) fresh.push_back({s.name, Tensor::empty(s.shape, DType::f32)});
  read_weights(dir, config_, specs, fresh);
  if (tp_) fresh = shard_like(*tp_, fresh);  // the file is full; keep this rank's shard
  // copy_from also uploads when the model lives on a device (same f32 dtype on both sides).
  mark_weights_changed();  // before the copies: a failure part-way still invalidates
  for (size_t i = 0; i < fresh.size(); ++i) w_->params[i].tensor.copy_from(fresh[i].tensor);
}

void CausalLM::save(const std::string& dir, DType dtype) const {
  const char* dname = hf_dtype_name(dtype);
  const std::vector<NamedTensor> full = gather_full(w_->params);  // collective under TP
  if (tp_ && tp_->rank != 0) return;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) GYRE_THROW(io, "save: cannot create directory {}: {}", dir, ec.message());
  nlohmann::json j;
  if (!config_json_.empty()) {
    j = nlohmann::json::parse(config_json_, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) j = config_to_json(config_);
  } else {
    j = config_to_json(config_);
  }
  j["dtype"] = dname;
  if (j.contains("torch_dtype")) j["torch_dtype"] = dname;
  {
    std::ofstream f(fs::path(dir) / "config.json", std::ios::binary);
    if (!f) GYRE_THROW(io, "save: cannot write {}/config.json", dir);
    f << j.dump(2) << "\n";
  }
  if (!generation_config_json_.empty()) {
    std::ofstream f(fs::path(dir) / "generation_config.json", std::ios::binary);
    if (!f) GYRE_THROW(io, "save: cannot write {}/generation_config.json", dir);
    f << generation_config_json_;
  }
  std::map<std::string, Tensor> tensors;
  // dtype conversion runs on the host: device parameters are copied down first.
  // Under TP every rank takes part in the gather; tp rank 0 alone has written the files above.
  for (const auto& p : full) tensors[p.name] = p.tensor.to(Device::cpu).to(dtype);
  write_safetensors_dir(dir, tensors);
}

}  // namespace gyre::model
