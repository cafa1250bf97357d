// CUDA kernels of the vocabulary-chunked log-prob ops (ops.h logprob_chunk_*; CPU reference in
// backend/cpu/logprob_chunk.cc). The caller streams the vocabulary in chunks of C columns:
// logprob_chunk_stats folds one [n, C] chunk of logits into per-row online softmax statistics
// (m, s, w, z_target), logprob_chunk_finish turns them into logp / entropy / lse, and
// logprob_chunk_bwd writes the chunk's dlogits (in place of the logits when dx == x);
// logprob_chunk_bwd_bf16 (logprob_head.h) writes them rounded to bf16 into a separate buffer.
//
// Invariants: one block per row (grid-stride over rows); per-thread partial sums are f64 and
// merged in a fixed order, so results are deterministic and agree with the CPU reference (f64
// sums) to ~1e-6 relative; the statistics between chunks are f32.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;

unsigned row_grid(int64_t n) { return unsigned(n < 1 ? 1 : (n < 65535 ? n : 65535)); }

__global__ void stats_kernel(const float* __restrict__ x, const int32_t* __restrict__ targets,
                             int64_t n, int64_t C, int64_t v0, float mul, bool accumulate,
                             float* __restrict__ stats) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const float* xr = x + t * C;
    // Chunk max of z = x·mul (mul > 0: max(x)·mul), then sc = Σ exp(z - mc) and
    // wc = Σ exp(z - mc)(z - mc) with f64 partial sums.
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) mx = fmaxf(mx, xr[j]);
    const float mc = block_max(mx) * mul;
    double s = 0, w = 0;
    // An all -inf (masked) chunk holds no mass: s = w = 0, skipped by the fold below.
    if (mc != -INFINITY)
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        const float d = xr[j] * mul - mc;
        const float e = expf(d);
        s += double(e);
        if (e > 0.0f) w += double(e) * double(d);  // e = 0 (z = -inf): adds 0, not 0 · -inf
      }
    const double sc = block_sum(s), wc = block_sum(w);
    if (threadIdx.x != 0) continue;
    float* st = stats + t * 4;
    const int64_t j = int64_t(targets[t]) - v0;
    const bool has_target = j >= 0 && j < C;
    if (!accumulate) {
      st[0] = mc, st[1] = float(sc), st[2] = float(wc), st[3] = has_target ? xr[j] * mul : 0.0f;
      continue;
    }
    // Fold (m1, s1, w1) and (mc, sc, wc) at the larger max M: rebasing from m to M multiplies
    // exp(z - m) by a = exp(m - M) and shifts (z - m) by (m - M), so s' = a·s and
    // w' = a·(w + (m - M)·s); an empty triple (s = 0) adds nothing.
    const double m1 = st[0], s1 = st[1], w1 = st[2];
    const double M = fmax(m1, double(mc));
    double so = 0, wo = 0;
    if (s1 > 0) {
      const double a = exp(m1 - M);
      so += a * s1, wo += a * (w1 + (m1 - M) * s1);
    }
    if (sc > 0) {
      const double a = exp(double(mc) - M);
      so += a * sc, wo += a * (wc + (double(mc) - M) * sc);
    }
    st[0] = float(M), st[1] = float(so), st[2] = float(wo);
    if (has_target) st[3] = xr[j] * mul;
  }
}

__global__ void finish_kernel(const float* __restrict__ stats, const int32_t* __restrict__ targets,
                              int64_t n, float* __restrict__ logp, float* __restrict__ entropy,
                              float* __restrict__ lse) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const float* st = stats + t * 4;
    const double log_s = log(double(st[1]));
    // log p_target = (z_target - m) - log s; H = log s - w / s; lse = m + log s.
    logp[t] = targets[t] < 0 ? 0.0f : float(double(st[3] - st[0]) - log_s);
    if (entropy) entropy[t] = float(log_s - double(st[2]) / double(st[1]));
    if (lse) lse[t] = float(double(st[0]) + log_s);
  }
}

// The value written for one dz element: f32 as computed (Out = float), or rounded to nearest-even
// bf16 (Out = uint16_t, the bf16 bit pattern) — exactly what cuda::f32_to_bf16 would make of the
// f32 value, so the bf16 variant equals the f32 kernel followed by that conversion.
__device__ __forceinline__ void store_dz(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_dz(uint16_t* p, float v) {
  *p = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// dx may alias x when Out = float: each element is read and written by the same thread. Both
// instantiations evaluate the same f32 expression (one template), so they agree before rounding.
template <typename Out>
__global__ void bwd_kernel(const float* x, const int32_t* __restrict__ targets, int64_t n,
                           int64_t C, int64_t v0, float mul, const float* __restrict__ lse,
                           const float* __restrict__ entropy, const float* __restrict__ dlogp,
                           const float* __restrict__ dentropy, Out* dx) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const int32_t tgt = targets[t];
    const int64_t tg = tgt < 0 ? -1 : int64_t(tgt) - v0;
    const float g_lp = tgt < 0 ? 0.0f : dlogp[t];
    const float g_h = dentropy ? dentropy[t] : 0.0f;
    const float h = g_h != 0.0f ? entropy[t] : 0.0f;
    const float L = lse[t];
    const float* xr = x + t * C;
    Out* d = dx + t * C;
    // dz_j = dlogp (1[j = target] - p_j) - dH p_j (log p_j + H), log p_j = z_j - lse; dx = dz / τ.
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const float lp = xr[j] * mul - L;
      const float p = expf(lp);
      const float hit = j == tg ? g_lp : 0.0f;
      const float ent = p > 0.0f ? g_h * p * (lp + h) : 0.0f;  // p = 0: limit 0, not 0 · -inf
      store_dz(d + j, (hit - g_lp * p - ent) * mul);
    }
  }
}

}  // namespace

void logprob_chunk_stats(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                         float temperature, bool accumulate, float* stats) {
  if (n == 0 || C == 0) return;
  stats_kernel<<<row_grid(n), kThreads, 0, stream()>>>(x, targets, n, C, v0, 1.0f / temperature,
                                                       accumulate, stats);
  GYRE_CUDA_LAUNCHED("logprob_chunk_stats");
}

void logprob_chunk_finish(const float* stats, const int32_t* targets, int64_t n, float* logp,
                          float* entropy, float* lse) {
  if (n == 0) return;
  finish_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(stats, targets, n, logp, entropy,
                                                                  lse);
  GYRE_CUDA_LAUNCHED("logprob_chunk_finish");
}

void logprob_chunk_bwd(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                       float temperature, const float* lse, const float* entropy,
                       const float* dlogp, const float* dentropy, float* dx) {
  if (n == 0 || C == 0) return;
  bwd_kernel<float><<<row_grid(n), kThreads, 0, stream()>>>(
      x, targets, n, C, v0, 1.0f / temperature, lse, entropy, dlogp, dentropy, dx);
  GYRE_CUDA_LAUNCHED("logprob_chunk_bwd");
}

void logprob_chunk_bwd_bf16(const float* x, const int32_t* targets, int64_t n, int64_t C,
                            int64_t v0, float temperature, const float* lse, const float* entropy,
                            const float* dlogp, const float* dentropy, uint16_t* dz) {
  if (n == 0 || C == 0) return;
  bwd_kernel<uint16_t><<<row_grid(n), kThreads, 0, stream()>>>(
      x, targets, n, C, v0, 1.0f / temperature, lse, entropy, dlogp, dentropy, dz);
  GYRE_CUDA_LAUNCHED("logprob_chunk_bwd_bf16");
}

}  // namespace gyre::cuda
