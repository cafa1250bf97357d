// The RMSNorm backward fused with the residual add and the bf16 rounding of its result
// (ops::rms_norm_backward_add, backend/fused_norm_ops.h; kernels in rms_bwd_fused.cu). Bitwise
// rms_norm_bwd (kernels.h) followed by add and f32_to_bf16: the element arithmetic and the
// reductions are rms_bwd_row.cuh's, shared with rows.cu.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// dx = rms_norm_bwd's input gradient + res; dw (may be null: not computed) += the weight
// gradient; dx_bf16 (may be null) = the bf16 rounding of dx (round to nearest even, f32_to_bf16's
// bits). dy, x, res, dx [R, H]; w, dw [H]; rstd [R]. dx may equal res (in place: each element is
// read before it is written); otherwise the outputs must not overlap the inputs. With dw and at
// least rms_bwd_add_min_fused_chunks() chunks of 128 rows (and H <= 8192) one pass over dy, x and
// res computes dx, dx_bf16 and the weight-gradient partials, a block per chunk; otherwise a
// row-per-block kernel computes dx and dx_bf16 and rms_norm_bwd's own kernels the weight gradient.
void rms_norm_bwd_add(const float* dy, const float* x, const float* w, const float* rstd,
                      const float* res, int64_t R, int64_t H, float* dx, float* dw,
                      uint16_t* dx_bf16);

// The smallest number of 128-row chunks (ceil(R / 128)) for which rms_norm_bwd_add computes the
// weight-gradient partials in its single pass: the one-pass kernel runs one block per chunk, too
// few blocks to fill the GPU for small R. Process-wide; for tests and A/B benchmarks (0 or 1:
// always one pass when possible; a huge value: never). Returns the previous value.
int64_t set_rms_bwd_add_min_fused_chunks(int64_t chunks);
int64_t rms_bwd_add_min_fused_chunks();

}  // namespace gyre::cuda
