// Token sampling with top-k / top-p / min-p on the device (issue 7). Declared here rather than in
// ops.h; implementation: sampling_ops.cc over backend/cuda/sampling_filtered.cu.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// Samples one token per row of logits f32 [R, V] on the GPU, picking the token infer::Sampler
// picks for the same row (no penalties, no masked ids): temperature f32 [R] (< 1e-6: greedy),
// top_k i32 [R] (1: greedy; <= 0 or >= V: off), top_p f32 [R] (>= 1: off), seeds / steps i64 [R]
// as sample_tokens (the seed's uint64 bit pattern; step = tokens generated so far), min_p shared
// by the batch. tokens: i32 [R] on the logits' device (allocated when undefined). Candidates are
// selected with radix selects on the probabilities and only they are sorted; a row whose candidate
// set exceeds one block's shared memory takes a global-memory sort, so this op reads a small
// per-row summary back to the host (it synchronises the stream). CUDA tensors only: CPU tensors
// raise Error(unsupported) (the CPU sampler samples host logits).
void sample_tokens_filtered(const Tensor& logits, const Tensor& temperature, const Tensor& top_k,
                            const Tensor& top_p, const Tensor& seeds, const Tensor& steps,
                            float min_p, Tensor& tokens);

}  // namespace gyre::ops
