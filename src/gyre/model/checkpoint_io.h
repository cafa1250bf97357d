// The value check every reader of checkpoint weights shares (CausalLM::load and load_weights in
// checkpoint_io.cc, hence `gyre train`, `gyre serve` and its /update_weights_from_disk, and `gyre
// inspect`): a NaN or an infinity in a checkpoint is a corrupt file or a diverged run, never
// weights to serve or to train from. The scan reads each tensor's bits in its own dtype, once —
// cheap next to reading the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/causal_lm.h"

namespace gyre::model {

struct NonFiniteCount {
  int64_t nan = 0, inf = 0;  // inf counts both signs
  int64_t total() const { return nan + inf; }
};

// NaN and +-inf values of a host tensor of a float dtype (f32, bf16, f16, f64); zero for the
// integer dtypes, which cannot hold either.
NonFiniteCount count_non_finite(const Tensor& host);

// Throws Error(invalid_argument) when any of `tensors` (host) holds a NaN or an infinity, naming
// the checkpoint `source` and each such tensor (the first few) with its counts.
void check_finite_weights(const std::vector<NamedTensor>& tensors, const std::string& source);

}  // namespace gyre::model
