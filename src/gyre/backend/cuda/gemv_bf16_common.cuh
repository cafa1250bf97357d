// The per-column arithmetic of the small-M bf16 GEMV (decode linears), shared by gemv_bf16.cu (one
// linear) and gemv_fused.cu (grouped linears, gate/up with SiLU·mul, residual epilogue) so that a
// fused launch computes every output column bitwise as the plain GEMV does.
//
// One warp owns C weight rows (C output columns of possibly different weights): it streams each row
// with 16-byte loads (8 bf16), rounds the matching x values to bf16 in registers (round to nearest
// even, autocast's f32_to_bf16) and keeps M f32 sums per row: lane l adds the products of the
// 16-byte vectors l, l + 32, l + 64, ... in that order with fmaf, then a butterfly over the warp
// (xor 16, 8, 4, 2, 1) adds the 32 lane sums. Invariant: the sequence of f32 operations for one
// row does not depend on C or on the other rows, so C = 2 (gate and up at once) gives bitwise the
// sums of two C = 1 calls. Every lane ends with the same totals (each butterfly step adds the same
// two values in swapped order, and f32 addition is commutative).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "gyre/backend/cuda/rms_row.cuh"

namespace gyre::cuda::gemv {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// acc[c][m] = Σ_k bf16(xin(m, k)) · w_c[k] over K = 8 · K8 (x rows of K floats, 16-byte aligned;
// wr[c] the bf16 weight row as 16-byte vectors), reduced across the warp. xin(m, k) is x[m, k], or
// with kNorm the RMSNorm of it, rms::normed(x[m, k], rstd[m], nw[k]) (nw 16-byte aligned): the
// value rms_norm would have stored, computed in registers in the same f32 operations, so the GEMV
// of the normed row is bitwise the GEMV of rms_norm's output (the fused decode prologue).
template <int M, int C, bool kNorm>
__device__ __forceinline__ void dot_rows_impl(const float* __restrict__ x,
                                              const float* __restrict__ nw, const float (&rstd)[M],
                                              const uint4* const (&wr)[C], int64_t K8, int lane,
                                              float (&acc)[C][M]) {
  const int64_t K = K8 * 8;
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
  // The weight vectors of kAhead iterations are loaded before any of them is used, so each lane
  // keeps up to kAhead · C 16-byte loads in flight (one at a time left a 0.5B decode's o_proj at
  // 7.5 us where its 1.6 MB need 0.5 us: latency-bound). The products are still added in the order
  // k8 = lane, lane + 32, lane + 64, ..., so the sums are bitwise those of the one-at-a-time loop.
  // Eight ahead while one or two rows of products are live (down_proj at batch 1 has only 896
  // warps for 8.7 MB: four loads in flight per lane left it at ~12 us); fewer as M·C grows so the
  // accumulators and the loaded vectors still fit in registers.
  constexpr int kAhead = M * C <= 2 ? 8 : (M * C <= 4 ? 4 : 2);
  for (int64_t base = lane; base < K8; base += 32 * kAhead) {
    uint4 wv[kAhead][C];
#pragma unroll
    for (int u = 0; u < kAhead; ++u)
#pragma unroll
      for (int c = 0; c < C; ++c)
        if (base + 32 * u < K8) wv[u][c] = __ldg(wr[c] + base + 32 * u);  // weights: read once
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t k8 = base + 32 * u;
      if (k8 >= K8) break;
      float wf[C][8];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const uint4 w = wv[u][c];
        wf[c][0] = bf16_lo(w.x), wf[c][1] = bf16_hi(w.x), wf[c][2] = bf16_lo(w.y);
        wf[c][3] = bf16_hi(w.y), wf[c][4] = bf16_lo(w.z), wf[c][5] = bf16_hi(w.z);
        wf[c][6] = bf16_lo(w.w), wf[c][7] = bf16_hi(w.w);
      }
      float4 na{}, nb{};  // the norm weights of these 8 columns, shared by the M rows
      if constexpr (kNorm) {
        const float4* nr = reinterpret_cast<const float4*>(nw) + k8 * 2;
        na = nr[0], nb = nr[1];
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4* xr = reinterpret_cast<const float4*>(x + m * K) + k8 * 2;
        float4 a = xr[0], b = xr[1];
        if constexpr (kNorm) {
          const float r = rstd[m];
          a = make_float4(rms::normed(a.x, r, na.x), rms::normed(a.y, r, na.y),
                          rms::normed(a.z, r, na.z), rms::normed(a.w, r, na.w));
          b = make_float4(rms::normed(b.x, r, nb.x), rms::normed(b.y, r, nb.y),
                          rms::normed(b.z, r, nb.z), rms::normed(b.w, r, nb.w));
        }
        const float xv[8] = {round_bf16(a.x), round_bf16(a.y), round_bf16(a.z), round_bf16(a.w),
                             round_bf16(b.x), round_bf16(b.y), round_bf16(b.z), round_bf16(b.w)};
#pragma unroll
        for (int c = 0; c < C; ++c) {
          float s = acc[c][m];
#pragma unroll
          for (int j = 0; j < 8; ++j) s = fmaf(xv[j], wf[c][j], s);
          acc[c][m] = s;
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s = acc[c][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      acc[c][m] = s;
    }
}

// The plain GEMV's sums: acc[c][m] = Σ_k bf16(x[m, k]) · w_c[k].
template <int M, int C>
__device__ __forceinline__ void dot_rows(const float* __restrict__ x, const uint4* const (&wr)[C],
                                         int64_t K8, int lane, float (&acc)[C][M]) {
  const float unused[M] = {};
  dot_rows_impl<M, C, false>(x, nullptr, unused, wr, K8, lane, acc);
}

// Column n's value with its bias, exactly as the plain GEMV writes it.
__device__ __forceinline__ float with_bias(float s, const float* __restrict__ b, int64_t n) {
  return b ? s + b[n] : s;
}

}  // namespace gyre::cuda::gemv
