// ops::prefetch_weights_l2: the decode step's L2 prefetch of linears' weights a few kernels ahead
// (backend/cuda/l2_prefetch.h says why and why it is safe). Declared here rather than in ops.h.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "gyre/backend/ops.h"

namespace gyre::ops {

// Which prefetches the decode step issues (GYRE_DECODE_L2_PREFETCH, read at every call; default
// 0 while it is measured): 0 none; 1 o_proj, gate and up before the attention; 2 also down_proj
// before the MLP.
int decode_l2_prefetch_mode();

// Asks L2 for the bytes the autocast GEMVs will read of `weights`: their bf16 copies in the
// thread's installed Bf16WeightCache (ops::bf16_weight_cache()); weights without a copy yet,
// undefined or non-CUDA ones are skipped (so is everything without a cache or on the CPU).
// Enqueued on a side stream after the work enqueued so far; changes no value anywhere.
void prefetch_weights_l2(std::initializer_list<const Tensor*> weights);
// Prefetch launches made by prefetch_weights_l2 in this process (tests: the path was taken).
uint64_t l2_prefetch_launches();

}  // namespace gyre::ops
