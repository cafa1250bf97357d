// ModelConfig: the architecture hyper-parameters read from a Hugging Face config.json, accepting
// both the transformers v4 spelling (rope_theta, rope_scaling, torch_dtype) and the v5 spelling
// (rope_parameters, dtype). Parsing lives in config.cc; unknown architectures are rejected there
// with the list of supported ones.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gyre/core/dtype.h"

namespace gyre::model {

enum class Arch { llama, qwen2, qwen3, qwen3_moe };
const char* arch_name(Arch a);  // the HF class name, e.g. "Qwen3ForCausalLM"

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3 | yarn
  double theta = 10000.0;
  double factor = 1.0;  // linear, llama3, yarn
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // 0 = not given (yarn: HF then uses max_position)
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  std::optional<double> mscale, mscale_all_dim, attention_factor;
  bool truncate = true;
};

struct ModelConfig {
  Arch arch = Arch::llama;
  std::string model_type;  // "llama", "qwen2", "qwen3", "qwen3_moe"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit head_dim, else hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (qwen2 always; llama/qwen3 from attention_bias)
  bool mlp_bias = false;        // llama's mlp_bias (rare)
  bool qk_norm = false;         // qwen3 / qwen3_moe: RMSNorm over head_dim on q and k
  RopeConfig rope;
  DType dtype = DType::f32;  // checkpoint dtype (dtype / torch_dtype)
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // eos_token_id may be an int or a list
  // MoE (qwen3_moe)
  int64_t num_experts = 0;  // num_experts / num_local_experts
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = false;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  // True when layer `i` uses the MoE block (qwen3_moe rule: i not in mlp_only_layers, num_experts >
  // 0, and (i + 1) % decoder_sparse_step == 0).
  bool is_moe_layer(int64_t i) const;
  // o_proj bias: LlamaAttention / Qwen3Attention give o_proj bias=attention_bias too;
  // Qwen2Attention has q/k/v bias but never an o_proj bias.
  bool has_o_proj_bias() const { return attention_bias && arch != Arch::qwen2; }
  int64_t num_parameters()
      const;  // total parameter count implied by the shapes (tied counted once)
};

// Reads <dir>/config.json (and generation_config.json's eos ids when present). Errors name the file
// and the key: missing file (not_found), invalid JSON (invalid_argument with line/column), unknown
// architecture (unsupported, listing the supported ones), missing or non-numeric required keys.
ModelConfig load_config(const std::string& dir);
ModelConfig parse_config_json(const std::string& json_text, const std::string& source_name);

}  // namespace gyre::model
