// The RMSNorm backward's per-element arithmetic, shared by rows.cu's rms_norm_bwd kernels and
// rms_bwd_fused.cu's rms_norm_bwd_add (the backward fused with the residual add), so that the
// fused op is bitwise the composition by construction: both compile this one expression.
//
// With g = dy ∘ w, x̂ = x · r (r = rstd of the row) and mean = Σ_j g_j x̂_j / H (in f64):
//   dx_c = r · (g_c − x̂_c · mean),   dw_c += Σ_rows dy_c · x̂_c (in f64).
// Every f32 operation is an explicit round-to-nearest intrinsic: plain `a * b - c * d` leaves
// ptxas free to contract a multiply into an FMA or not depending on the surrounding kernel
// (rope_rotate.cuh's comment has the measured case), and `r * (...) + res` written in the fused
// kernel would contract into one FMA where the composition rounds the product before add_ adds.
// The f32 products g and x̂ are exact in f64 (24 + 24 bits), so the f64 multiply-adds are exact
// products followed by one rounded add: __fma_rn gives the same bits as a separate multiply and
// add (and as what nvcc emitted for `s += double(a) * double(b)`).
//
// Reduction contract (the dot): thread t of a kThreads block sums its columns t, t + kThreads, ...
// in increasing order from 0 (dot_step), then the block adds lanes (xor-shuffle tree) and warps
// (in order) as device_util.cuh's block_sum does. Any kernel that must match rows.cu's dx bitwise
// keeps that column-to-thread map and that tree (block_sum, or block_sum_n below).
// dw contract: the partial of chunk k (rows [k·kDwRowChunk, (k+1)·kDwRowChunk)) for column c is
// dw_step over the chunk's rows in increasing order from 0; dw_finish adds the partials in chunk
// order to dw[c].
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda::rms_bwd {

// Threads per block of every kernel whose dot must match the others bitwise.
constexpr int kThreads = 256;
// Rows per weight-gradient partial (the chunking of rms_norm_bwd's dw; part of its bits).
constexpr int64_t kDwRowChunk = 128;

// x̂ = x · r, rounded to f32.
__device__ __forceinline__ float x_hat(float x, float rs) { return __fmul_rn(x, rs); }

// One column's term of the row dot: dot + g · x̂ with g = dy · w rounded to f32.
__device__ __forceinline__ double dot_step(double dot, float dy, float w, float xh) {
  return __fma_rn(double(__fmul_rn(dy, w)), double(xh), dot);
}

// mean_j(g_j x̂_j) from the row's block-reduced dot, rounded to f32.
__device__ __forceinline__ float row_mean(double dot, int64_t H) { return float(dot / double(H)); }

// dx_c = r · (g_c − x̂_c · mean): x̂·mean rounded, then dy·w − that in one FMA (g unrounded here,
// unlike in the dot), then the product with r. This is exactly what ptxas made of rows.cu's former
// plain `rs * (dy[c] * w[c] - (x[c] * rs) * mean)` (sm_90a SASS: FMUL, FMUL, FFMA dy, w, -p, FMUL;
// an H200 run gave 0 differing elements against it at H = 3, 100, 896, 1536), so spelling it out
// changed no bits of rms_norm_backward's dx.
__device__ __forceinline__ float dx_elem(float dy, float w, float xh, float rs, float mean) {
  return __fmul_rn(rs, __fmaf_rn(dy, w, -__fmul_rn(xh, mean)));
}

// One row's term of a column's weight-gradient partial: s + dy · x̂ (exact product, one rounding).
__device__ __forceinline__ double dw_step(double s, float dy, float xh) {
  return __fma_rn(double(dy), double(xh), s);
}

// dw_c after adding the chunk partials part[k * H + c], k = 0 .. chunks-1, in order.
__device__ __forceinline__ float dw_finish(const double* part, int64_t chunks, int64_t H, int64_t c,
                                           float dw_c) {
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s = __dadd_rn(s, part[k * H + c]);
  return float(__dadd_rn(double(dw_c), s));
}

// N independent block sums at once, each bitwise device_util.cuh's block_sum of its value (the
// same xor-shuffle tree over the lanes, then the warps' sums added in warp order from 0), with one
// pair of barriers for all N. Blocks of exactly kThreads threads; every thread must call it and
// every thread gets the N results.
template <int N>
__device__ __forceinline__ void block_sum_n(double (&v)[N]) {
  constexpr int kWarps = kThreads / 32;
  __shared__ double part[N][kWarps];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = __dadd_rn(v[i], __shfl_xor_sync(0xffffffffu, v[i], o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < N; ++i) part[i][warp] = v[i];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    double t = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) t = __dadd_rn(t, part[i][w]);
    v[i] = t;
  }
  __syncthreads();
}

}  // namespace gyre::cuda::rms_bwd
