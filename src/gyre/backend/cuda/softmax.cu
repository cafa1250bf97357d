// Softmax-family CUDA kernels: row softmax / log-softmax, the fused per-token log-prob + entropy
// (forward and backward, f32 logits; forward also from bf16 logits) and the MoE top-k router.
//
// Invariants: token_logprobs streams each row of logits ONCE in the forward (online softmax,
// Milakov & Gimelshein 2018: a running max with the exp-sum and the entropy term rescaled when the
// max grows), so no [T, V] probability tensor exists; the backward streams it twice (statistics,
// then gradients). One block per row (the forward splits a row over several blocks when there are
// few rows, see logprob_fwd_split); per-thread partial sums are f64 and merged in a fixed order,
// so results are deterministic and agree with the CPU reference (f64 sums) to ~1e-6.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const uint16_t* p, int64_t i) {
  return __bfloat162float(__ushort_as_bfloat16(p[i]));
}

// Row statistics of z = x * mul: M = max z, S = Σ exp(z - M), W = Σ exp(z - M) (z - M).
struct Stats {
  float m;
  double s, w;
};

// Eight consecutive values as f32 (16-byte loads for bf16, two for f32).
__device__ __forceinline__ void load8(const uint16_t* p, float z[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    z[2 * i] = __uint_as_float(w[i] << 16);  // bf16 is the top half of an f32
    z[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void load8(const float* p, float z[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  z[0] = a.x, z[1] = a.y, z[2] = a.z, z[3] = a.w, z[4] = b.x, z[5] = b.y, z[6] = b.z, z[7] = b.w;
}

// Adds n values z (already scaled) to a thread's running (m, s, w); the f32 partial sums of the
// group are added to the f64 totals, so the dependency chain is one f64 add per group.
template <int N>
__device__ __forceinline__ void online_add(const float (&z)[N], float& m, double& s, double& w,
                                           bool need_w) {
  float lm = z[0];
#pragma unroll
  for (int i = 1; i < N; ++i) lm = fmaxf(lm, z[i]);
  if (lm == -INFINITY) return;  // all masked: nothing to add
  if (lm > m) {                 // rescale what was summed relative to the old max
    if (s > 0) {
      const double f = exp(double(m - lm));
      if (need_w) w = (w + s * double(m - lm)) * f;
      s *= f;
    }
    m = lm;
  }
  float es = 0.0f, ws = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float d = z[i] - m;
    const float e = expf(d);
    es += e;
    ws += e > 0.0f ? e * d : 0.0f;  // e = 0 (z = -inf): p log p -> 0, not 0 · -inf
  }
  s += es;
  if (need_w) w += ws;
}

// One streaming pass (online softmax per thread, then a block merge).
template <typename In>
__device__ Stats row_stats(const In* x, int64_t V, float mul, bool need_w) {
  float m = -INFINITY;
  double s = 0, w = 0;
  if (V % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    for (int64_t j = int64_t(threadIdx.x) * 8; j < V; j += int64_t(blockDim.x) * 8) {
      float z[8];
      load8(x + j, z);
#pragma unroll
      for (int i = 0; i < 8; ++i) z[i] *= mul;
      online_add(z, m, s, w, need_w);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float z[1] = {load_f(x, j) * mul};
      online_add(z, m, s, w, need_w);
    }
  }
  const float M = block_max(m);
  if (s > 0 && m != M) {
    const double f = exp(double(m - M));
    if (need_w) w = (w + s * double(m - M)) * f;
    s *= f;
  }
  Stats st;
  st.m = M;
  st.s = block_sum(s);
  st.w = need_w ? block_sum(w) : 0.0;
  return st;
}

template <typename In>
__global__ void logprob_fwd_kernel(const In* logits, const int32_t* targets, int64_t n, int64_t V,
                                   float mul, float* logp, float* entropy) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const In* x = logits + t * V;
    const Stats st = row_stats(x, V, mul, entropy != nullptr);
    if (threadIdx.x == 0) {
      const double log_s = log(st.s);
      const int32_t tg = targets[t];
      // log p_t = (z_t - M) - log S;  H = log S - W / S
      logp[t] = tg < 0 ? 0.0f : float(double(load_f(x, tg) * mul - st.m) - log_s);
      if (entropy) entropy[t] = float(log_s - st.w / st.s);
    }
  }
}

// Split forward for few rows (decode: one row per sequence; one block per row left the GPU idle
// and took 30 us for V = 151,936 on an H200). Block (row, part) computes the statistics of the
// contiguous ids [part·per, min(V, (part + 1)·per)) relative to its own max m_p; the merge rescales
// them to the row max M in part order (fixed, so deterministic):
//   S = Σ_p S_p e^(m_p - M),  W = Σ_p e^(m_p - M) (W_p + S_p (m_p - M))
// (W_p = Σ e^(z - m_p)(z - m_p); adding (m_p - M) to every (z - m_p) gives the terms of W).
template <typename In>
__global__ void logprob_part_kernel(const In* logits, int64_t V, int64_t per, float mul,
                                    bool need_w, float* pm, double* ps, double* pw) {
  const int64_t row = blockIdx.x;
  const int part = blockIdx.y, parts = gridDim.y;
  const int64_t a = min(V, part * per), b = min(V, a + per);
  Stats st{-INFINITY, 0.0, 0.0};
  if (b > a) st = row_stats(logits + row * V + a, b - a, mul, need_w);
  if (threadIdx.x == 0) {
    pm[row * parts + part] = st.m;
    ps[row * parts + part] = st.s;
    pw[row * parts + part] = st.w;
  }
}

// One warp per row: lane l folds parts l, l + 32, ... at the row max M (found first by a warp
// max), then a butterfly adds the lanes' (S, W) — a fixed order for a given part count.
template <typename In>
__global__ void logprob_merge_kernel(const In* logits, const int32_t* targets, int64_t n, int64_t V,
                                     int parts, float mul, const float* pm, const double* ps,
                                     const double* pw, float* logp, float* entropy) {
  const int64_t t = blockIdx.x;
  const int lane = threadIdx.x;
  if (t >= n) return;
  float M = -INFINITY;
  for (int p = lane; p < parts; p += 32)
    if (ps[t * parts + p] > 0) M = fmaxf(M, pm[t * parts + p]);
  for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  double S = 0, W = 0;
  for (int p = lane; p < parts; p += 32) {
    const double sp = ps[t * parts + p];
    if (!(sp > 0)) continue;  // an all -inf part adds nothing
    const double d = double(pm[t * parts + p] - M), f = exp(d);
    S += sp * f;
    W += (pw[t * parts + p] + sp * d) * f;
  }
  for (int off = 16; off > 0; off >>= 1) {
    S += __shfl_xor_sync(0xffffffffu, S, off);
    W += __shfl_xor_sync(0xffffffffu, W, off);
  }
  if (lane != 0) return;
  const double log_s = log(S);
  const int32_t tg = targets[t];
  logp[t] = tg < 0 ? 0.0f : float(double(load_f(logits + t * V, tg) * mul - M) - log_s);
  if (entropy) entropy[t] = float(log_s - W / S);
}

// Parts per row for the split forward: only while the rows alone cannot fill the GPU (~2 blocks
// per SM of 132), at least 4096 ids per part; the part length is a multiple of 8 so every part
// but the last keeps row_stats' 16-byte vector path.
int logprob_parts(int64_t n, int64_t V) {
  if (n >= 128) return 1;
  int64_t p = (264 + n - 1) / n;
  p = std::min<int64_t>(p, std::max<int64_t>(1, V / 4096));
  return int(std::max<int64_t>(1, std::min<int64_t>(p, 64)));
}

template <typename In>
void logprob_fwd_split(const In* logits, const int32_t* targets, int64_t n, int64_t V, int parts,
                       float mul, float* logp, float* entropy) {
  const int64_t per = ((V + parts - 1) / parts + 7) / 8 * 8;
  DeviceBuffer scratch(size_t(n) * parts * (sizeof(double) * 2 + sizeof(float)));
  auto* ps = scratch.as<double>();
  double* pw = ps + n * parts;
  auto* pm = reinterpret_cast<float*>(pw + n * parts);
  logprob_part_kernel<In><<<dim3(unsigned(n), unsigned(parts)), kThreads * 2, 0, stream()>>>(
      logits, V, per, mul, entropy != nullptr, pm, ps, pw);
  GYRE_CUDA_LAUNCHED("token_logprobs_fwd (parts)");
  logprob_merge_kernel<In><<<unsigned(n), 32, 0, stream()>>>(logits, targets, n, V, parts, mul, pm,
                                                             ps, pw, logp, entropy);
  GYRE_CUDA_LAUNCHED("token_logprobs_fwd (merge)");
}

__global__ void logprob_bwd_kernel(const float* logits, const int32_t* targets, int64_t n,
                                   int64_t V, float mul, const float* dlogp, const float* dentropy,
                                   float* dlogits) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const float* x = logits + t * V;
    float* d = dlogits + t * V;
    const bool has_ent = dentropy && dentropy[t] != 0.0f;
    const Stats st = row_stats(x, V, mul, has_ent);
    const int32_t tg = targets[t];
    const float g_lp = tg < 0 ? 0.0f : dlogp[t];
    const float g_h = has_ent ? dentropy[t] : 0.0f;
    const float log_s = float(log(st.s));
    const float h = float(log(st.s) - st.w / st.s);
    const float inv_s = float(1.0 / st.s), m = st.m;
    // ∂logp_t/∂z_j = 1[j=t] - p_j;  ∂H/∂z_j = -p_j (log p_j + H);  ∂z/∂logits = 1/τ.
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float zj = x[j] * mul - m;
      const float p = expf(zj) * inv_s;
      const float ent = p > 0.0f ? g_h * p * ((zj - log_s) + h) : 0.0f;  // p = 0: limit 0
      float g = (-g_lp * p - ent) * mul;
      if (j == tg) g += g_lp * mul;
      d[j] = g;
    }
  }
}

__global__ void softmax_kernel(const float* x, int64_t R, int64_t C, float* out, bool log_out) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    float* o = out + r * C;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m);
    double s = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(xr[j] - m);
    s = block_sum(s);
    if (log_out) {
      const float log_s = float(log(s));
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) o[j] = (xr[j] - m) - log_s;
    } else {
      const float inv = float(1.0 / s);
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) o[j] = expf(xr[j] - m) * inv;
    }
  }
}

// One thread per token: softmax over E experts, then top-k by repeated strict-'>' scans (ties ->
// lower index, as torch.topk), optionally renormalised (Qwen3-MoE norm_topk_prob).
__global__ void moe_route_fwd_kernel(const float* logits, int64_t n, int64_t E, int64_t k,
                                     bool norm_topk, float* probs, int32_t* indices,
                                     float* weights) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const float* x = logits + t * E;
    float* p = probs + t * E;
    float m = -INFINITY;
    for (int64_t e = 0; e < E; ++e) m = fmaxf(m, x[e]);
    double s = 0;
    for (int64_t e = 0; e < E; ++e) {
      p[e] = expf(x[e] - m);
      s += p[e];
    }
    const float inv = float(1.0 / s);
    for (int64_t e = 0; e < E; ++e) p[e] *= inv;
    int32_t* idx = indices + t * k;
    float* w = weights + t * k;
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        bool taken = false;
        for (int64_t j = 0; j < i; ++j) taken |= idx[j] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      idx[i] = int32_t(best);
      w[i] = p[best];
      sum += double(p[best]);
    }
    if (norm_topk)
      for (int64_t i = 0; i < k; ++i) w[i] = float(double(w[i]) / sum);
  }
}

__global__ void moe_route_bwd_kernel(const float* dweights, const float* probs,
                                     const int32_t* indices, int64_t n, int64_t E, int64_t k,
                                     bool norm_topk, float* dlogits) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const float* p = probs + t * E;
    const int32_t* idx = indices + t * k;
    const float* dw = dweights + t * k;
    float* dp = dlogits + t * E;  // ∂L/∂probs first, then ∂L/∂logits
    for (int64_t e = 0; e < E; ++e) dp[e] = 0.0f;
    if (norm_topk) {
      // w_i = p_i / S, S = Σ_sel p: ∂L/∂p_i = (dw_i - Σ_j dw_j w_j) / S for selected i.
      double sum = 0, c = 0;
      for (int64_t i = 0; i < k; ++i) sum += double(p[idx[i]]);
      for (int64_t i = 0; i < k; ++i) c += double(dw[i]) * (double(p[idx[i]]) / sum);
      for (int64_t i = 0; i < k; ++i) dp[idx[i]] += float((double(dw[i]) - c) / sum);
    } else {
      for (int64_t i = 0; i < k; ++i) dp[idx[i]] += dw[i];
    }
    // softmax backward: dlogit_j = p_j (dp_j - Σ_l dp_l p_l)
    double c = 0;
    for (int64_t e = 0; e < E; ++e) c += double(dp[e]) * double(p[e]);
    const float cf = float(c);
    for (int64_t e = 0; e < E; ++e) dp[e] = p[e] * (dp[e] - cf);
  }
}

unsigned row_blocks(int64_t R) { return unsigned(R < 1 ? 1 : (R < 65535 ? R : 65535)); }

}  // namespace

void softmax_rows(const float* x, int64_t R, int64_t C, float* out) {
  if (R == 0) return;
  softmax_kernel<<<row_blocks(R), kThreads, 0, stream()>>>(x, R, C, out, false);
  GYRE_CUDA_LAUNCHED("softmax_rows");
}

void log_softmax_rows(const float* x, int64_t R, int64_t C, float* out) {
  if (R == 0) return;
  softmax_kernel<<<row_blocks(R), kThreads, 0, stream()>>>(x, R, C, out, true);
  GYRE_CUDA_LAUNCHED("log_softmax_rows");
}

void token_logprobs_fwd(const float* logits, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, float* logp, float* entropy) {
  if (n == 0) return;
  if (const int parts = logprob_parts(n, V); parts > 1)
    return logprob_fwd_split(logits, targets, n, V, parts, 1.0f / temperature, logp, entropy);
  logprob_fwd_kernel<float><<<row_blocks(n), kThreads * 2, 0, stream()>>>(
      logits, targets, n, V, 1.0f / temperature, logp, entropy);
  GYRE_CUDA_LAUNCHED("token_logprobs_fwd");
}

void token_logprobs_fwd_bf16(const uint16_t* logits, const int32_t* targets, int64_t n, int64_t V,
                             float temperature, float* logp, float* entropy) {
  if (n == 0) return;
  if (const int parts = logprob_parts(n, V); parts > 1)
    return logprob_fwd_split(logits, targets, n, V, parts, 1.0f / temperature, logp, entropy);
  logprob_fwd_kernel<uint16_t><<<row_blocks(n), kThreads * 2, 0, stream()>>>(
      logits, targets, n, V, 1.0f / temperature, logp, entropy);
  GYRE_CUDA_LAUNCHED("token_logprobs_fwd_bf16");
}

void token_logprobs_bwd(const float* logits, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, const float* dlogp, const float* dentropy,
                        float* dlogits) {
  if (n == 0) return;
  logprob_bwd_kernel<<<row_blocks(n), kThreads * 2, 0, stream()>>>(
      logits, targets, n, V, 1.0f / temperature, dlogp, dentropy, dlogits);
  GYRE_CUDA_LAUNCHED("token_logprobs_bwd");
}

void moe_route_fwd(const float* logits, int64_t n, int64_t E, int64_t k, bool norm_topk,
                   float* probs, int32_t* indices, float* weights) {
  if (n == 0) return;
  moe_route_fwd_kernel<<<grid_for(n, 128), 128, 0, stream()>>>(logits, n, E, k, norm_topk, probs,
                                                               indices, weights);
  GYRE_CUDA_LAUNCHED("moe_route_fwd");
}

void moe_route_bwd(const float* dweights, const float* probs, const int32_t* indices, int64_t n,
                   int64_t E, int64_t k, bool norm_topk, float* dlogits) {
  if (n == 0) return;
  moe_route_bwd_kernel<<<grid_for(n, 128), 128, 0, stream()>>>(dweights, probs, indices, n, E, k,
                                                               norm_topk, dlogits);
  GYRE_CUDA_LAUNCHED("moe_route_bwd");
}

}  // namespace gyre::cuda
