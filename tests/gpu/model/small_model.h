// A small Qwen2-shaped model and a packed batch the GPU model/train tests share: head dim 64 so
// attention takes the flash bf16 kernels under autocast; sequence lengths include 1 (a sequence
// with no target) and one longer than a flash tile.
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/model/config.h"

namespace gyre::model::testmodel {

inline ModelConfig small_config() {
  ModelConfig c;
  c.arch = Arch::qwen2;
  c.model_type = "qwen2";
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.attention_bias = true;
  c.rope.theta = 1000000.0;
  return c;
}

// Ids below small_config()'s vocabulary from an LCG seeded with `seed`, one sequence per length.
inline std::vector<std::vector<int32_t>> make_seqs(const std::vector<int>& lens = {1, 37, 300, 129},
                                                   uint32_t seed = 7) {
  std::vector<std::vector<int32_t>> seqs;
  uint32_t x = seed;
  for (int len : lens) {
    std::vector<int32_t> s;
    for (int i = 0; i < len; ++i) {
      x = x * 1664525u + 1013904223u;
      s.push_back(int32_t((x >> 8) % 1000u));
    }
    seqs.push_back(s);
  }
  return seqs;
}

}  // namespace gyre::model::testmodel
