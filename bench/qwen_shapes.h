// Model shapes the GPU benchmarks share (bench_model_gpu, bench_rollout_gpu): the config.json
// values of Qwen/Qwen2.5-0.5B and -1.5B, random weights supplied by the caller.
#pragma once
#include <cstdint>
#include <string>

#include "gyre/core/error.h"
#include "gyre/model/config.h"

namespace gyre::bench {

// The real shapes' config.json values (Qwen/Qwen2.5-0.5B and -1.5B); layers <= 0 keeps the shape's.
inline gyre::model::ModelConfig qwen25(const std::string& shape, int64_t layers) {
  gyre::model::ModelConfig c;
  c.arch = gyre::model::Arch::qwen2;
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  if (shape == "qwen2.5-1.5b") {
    c.hidden_size = 1536;
    c.intermediate_size = 8960;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 12;
    c.head_dim = 128;
  } else if (shape != "qwen2.5-0.5b") {
    GYRE_THROW(invalid_argument, "--shape {}: use qwen2.5-0.5b or qwen2.5-1.5b", shape);
  }
  if (layers > 0) c.num_hidden_layers = layers;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.rope.theta = 1000000.0;
  return c;
}

}  // namespace gyre::bench
