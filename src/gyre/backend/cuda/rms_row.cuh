// The RMSNorm row arithmetic (HF LlamaRMSNorm: y = w * (x * rsqrt(mean(x²) + eps))), shared by
// rows.cu's rms_norm forward kernel and gemv_fused.cu's RMSNorm prologue (rms_norm folded into the
// decode GEMVs), so that the folded norm is bitwise the standalone one.
//
// Bitwise contract: row_rstd's result depends on the block size (thread t sums elements t, t + B,
// t + 2B, ... in that order, then block_sum adds lanes and warps in a fixed order), so every user
// must launch blocks of exactly kThreads threads — or replay that block's sums exactly, as
// rms_bf16.cu's warp-per-row kernel does (a change here must be mirrored there; the bitwise
// RmsNormBf16 GPU test catches a mismatch). The f64 square-and-add is an explicit __fma_rn
// (what nvcc contracted `ss += double(x) * double(x)` to before this helper existed) and the f32
// products are __fmul_rn, so no user can get a different contraction from the compiler.
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/device_util.cuh"

namespace gyre::cuda::rms {

// Threads per block of every kernel that calls row_rstd.
constexpr int kThreads = 256;

// 1 / sqrt(Σ_c x[c]² / H + eps) of the row xr [H], in f64 then rounded to f32 (as the CPU
// reference). Block-wide: every thread of a kThreads block must call it (it synchronises the block
// twice through block_sum and reuses block_sum's shared memory), and every thread gets the result.
__device__ __forceinline__ float row_rstd(const float* xr, int64_t H, double eps) {
  double ss = 0;
  for (int64_t c = threadIdx.x; c < H; c += kThreads) {
    const double v = double(xr[c]);
    ss = __fma_rn(v, v, ss);
  }
  ss = block_sum(ss);
  return float(1.0 / sqrt(ss / double(H) + eps));
}

// The normalised, weighted element: w * (x * rstd) — x·rstd is rounded to f32 before the weight
// multiplies it (HF's order).
__device__ __forceinline__ float normed(float x, float rstd, float w) {
  return __fmul_rn(w, __fmul_rn(x, rstd));
}

}  // namespace gyre::cuda::rms
