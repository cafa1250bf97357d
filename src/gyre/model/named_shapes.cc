// The Qwen2.5 values are those of the hub config.json files (Qwen2ForCausalLM: q/k/v bias, no
// o_proj bias, RoPE theta 1e6, RMSNorm eps 1e-6); max_position_embeddings is 32768 for all of them
// (the Instruct models' value; it only bounds the rollout engine's context here). Qwen3-8B's are
// Qwen/Qwen3-8B's (Qwen3ForCausalLM: no biases, RMSNorm on q and k per head, head_dim 128, RoPE
// theta 1e6, untied lm_head, max_position_embeddings 40960).
#include "gyre/model/named_shapes.h"

#include "gyre/core/error.h"

namespace gyre::model {

namespace {

ModelConfig qwen2(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers,
                  int64_t heads, int64_t kv_heads, bool tied) {
  ModelConfig c;
  c.arch = Arch::qwen2;
  c.model_type = "qwen2";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = tied;
  c.attention_bias = true;
  c.rope.theta = 1000000.0;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151643};
  return c;
}

}  // namespace

std::vector<std::string> named_shape_names() {
  return {"tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen3-8b"};
}

ModelConfig named_shape(const std::string& name) {
  if (name == "qwen2.5-0.5b") return qwen2(151936, 896, 4864, 24, 14, 2, true);
  if (name == "qwen2.5-1.5b") return qwen2(151936, 1536, 8960, 28, 12, 2, true);
  if (name == "qwen2.5-7b") return qwen2(152064, 3584, 18944, 28, 28, 4, false);
  if (name == "qwen3-8b") {
    // The 8-GPU scale run's tensor-parallel shape (issue 9): its 32 query and 8 KV heads split
    // over 8 ranks, Qwen2.5-7B's 28 and 4 do not.
    ModelConfig c = qwen2(151936, 4096, 12288, 36, 32, 8, false);
    c.arch = Arch::qwen3;
    c.model_type = "qwen3";
    c.head_dim = 128;
    c.qk_norm = true;
    c.attention_bias = false;
    c.max_position_embeddings = 40960;
    c.eos_token_ids = {151645};
    return c;
  }
  if (name == "tiny") {
    // Small enough for a training step in milliseconds on one CPU core; GQA (4 query heads over 2
    // KV heads) and the Qwen2 biases like the real shapes.
    ModelConfig c = qwen2(512, 64, 128, 2, 4, 2, true);
    c.max_position_embeddings = 4096;
    c.bos_token_id.reset();
    c.eos_token_ids = {0};
    return c;
  }
  std::string known;
  for (const auto& n : named_shape_names()) known += (known.empty() ? "" : ", ") + n;
  GYRE_THROW(invalid_argument, "unknown model shape '{}'; known shapes: {}", name, known);
}

}  // namespace gyre::model
