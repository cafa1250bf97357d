// Rotary position embedding tables: inverse frequencies per rope type, computed exactly as Hugging
// Face transformers' ROPE_INIT_FUNCTIONS (modeling_rope_utils.py: default, linear, llama3, yarn),
// and cos/sin tables [P, head_dim/2] that ops::rope_ consumes.
//
// Invariants: frequencies, angles, cos and sin are computed in double and stored as f32; the
// attention factor (YaRN's mscale; 1 otherwise) is already multiplied into both tables, as HF does
// (`cos = emb.cos() * attention_scaling`). Tables only grow (RopeCache is thread-safe) and a table
// handed out stays valid while the caller holds it.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/config.h"

namespace gyre::model {

struct RopeFrequencies {
  std::vector<double> inv_freq;   // [head_dim / 2]
  double attention_factor = 1.0;  // multiplies cos and sin
};

// For a bf16/f16 checkpoint (config.dtype) inv_freq is rounded to that dtype, as transformers'
// model-wide dtype cast does to its inv_freq buffer.
// Errors (unsupported rope type, missing llama3 original_max_position_embeddings, factor <= 0,
// odd head_dim) name the config field.
RopeFrequencies rope_frequencies(const ModelConfig& config);

// Fills cos/sin f32 [num_positions, D/2] for positions 0..num_positions-1.
void rope_tables(const RopeFrequencies& f, int64_t num_positions, Tensor& cos, Tensor& sin);

class RopeCache {
 public:
  explicit RopeCache(const ModelConfig& config);
  // Tables covering at least positions [0, min_positions); grown (to a power of two, at least
  // max_position_embeddings or 4096, whichever is smaller) when needed. The tables are built on the
  // host; for another device a copy is made once per growth and cached (same values).
  void get(int64_t min_positions, Tensor* cos, Tensor* sin, Device device = Device::cpu);
  const RopeFrequencies& frequencies() const { return freq_; }

 private:
  RopeFrequencies freq_;
  int64_t initial_;
  std::mutex mu_;
  Tensor cos_, sin_;          // host tables
  Tensor dev_cos_, dev_sin_;  // copies on a device (empty, or the same size as the host tables)
};

}  // namespace gyre::model
