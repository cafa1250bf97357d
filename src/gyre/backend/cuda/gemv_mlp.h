// The batch-1 decode MLP in one persistent launch (gemv_mlp.cu): post-attention RMSNorm, gate/up
// with SiLU·mul, down projection and residual — bitwise the two fused GEMVs it replaces
// (linear_gemv_bf16_silu_mul_rms, then linear_gemv_bf16_residual over its output; gemv_fused.h).
//
// Why (issue 7, the batch-1 decode step within 1.5x of its bytes / 3.3 TB/s): at Qwen2.5-1.5B the
// two kernels were 18.3 + 13.3 us a layer on the step's critical path (session 34's CUPTI
// timeline), down_proj streaming its 27.5 MB at only 2.1 TB/s — its 1,536 short blocks start after
// gate/up's tail and pay a DRAM round trip or two each. Here every block copies its share of
// down_proj's rows into shared memory with bulk copies at the kernel's start, so those bytes stream
// in WHILE gate/up runs, and after one grid-wide barrier the down projection reads only shared
// memory and the 18 KB bf16 act.
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_fused.h"

namespace gyre::cuda {

// Whether the one-launch MLP takes these sizes on this device: x [1, K], gate/up [I, K], down
// [N, I], K and I multiples of 8, and each block's share of down's rows (ceil(N / blocks) rows of
// I bf16) fits in its shared memory at one or two blocks an SM (Qwen2.5-0.5B and 1.5B do; wider
// models keep the two kernels). False where GYRE_GEMV_MLP=0 (the A/B switch).
bool gemv_mlp_supported(int64_t K, int64_t I, int64_t N);

// y [N] = r + (bd + wd · act), act = bf16(silu(g) * u), g / u = bf16(wg / wu · rms_norm(x) + bg /
// bu): linear_gemv_bf16_silu_mul_rms(x, n, wg, bg, wu, bu, 1, I, K, act32) followed by
// linear_gemv_bf16_residual(act32, wd, bd, r, 1, N, I, y), bit for bit. act: bf16 [I] scratch
// (16-byte aligned). y may be r, and either may be x (every read of x precedes the barrier, every
// write of y follows it); nothing else may overlap. n.xn / n.rstd must be null. Returns false
// (launching nothing) where gemv_mlp_supported is false or no grid-barrier slot is left for the
// stream (more than 64 streams), and the caller runs the two kernels.
bool linear_gemv_bf16_mlp_rms(const float* x, const RmsPrologue& n, const uint16_t* wg,
                              const float* bg, const uint16_t* wu, const float* bu,
                              const uint16_t* wd, const float* bd, const float* r, int64_t K,
                              int64_t I, int64_t N, uint16_t* act, float* y);

}  // namespace gyre::cuda
