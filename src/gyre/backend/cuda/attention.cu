// Causal GQA attention in f32 on CUDA: the packed variable-length training kernels (forward,
// backward) and the paged rollout kernels (KV write, attention over paged keys/values). This is
// the exact path that matches the CPU reference to ~1e-6; the bf16 tensor-core path for speed is
// flash_bf16_fwd.cu / flash_bf16_bwd.cu.
//
// Layout: one warp per (query row, head). Keys are visited 32 at a time, one key per lane (the
// lane computes the full q·k dot), with an online softmax (Milakov & Gimelshein 2018) over the
// chunks; each lane owns output dims d = lane + 32 j. Backward (FlashAttention-2, Dao 2023, Alg. 2:
// P = exp(S - lse), dS = P (dP - rowsum(dO ∘ O))) is split in two deterministic kernels instead of
// using atomics: dQ by query row (walking its keys) and dK/dV by key row (walking the queries of
// every head in its GQA group), each recomputing P from the saved lse.
#include <cmath>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxD = 256;
constexpr int kPerLane = kMaxD / 32;

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float dot_row(const float* a_smem, const float* b, int64_t D) {
  float s = 0;
  for (int64_t d = 0; d < D; ++d) s += a_smem[d] * b[d];
  return s;
}

// Online-softmax attention of one query (q in shared memory) over keys 0..last, whose rows are
// key_row(j) / val_row(j). Writes out (D) and returns lse.
template <typename KeyRow, typename ValRow>
__device__ float attend_row(const float* q, int64_t last, int64_t D, float scale, KeyRow key_row,
                            ValRow val_row, float* out) {
  const int lane = threadIdx.x & 31;
  float acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int64_t c0 = 0; c0 <= last; c0 += 32) {
    const int64_t j = c0 + lane;
    const bool valid = j <= last;
    const float s = valid ? scale * dot_row(q, key_row(j), D) : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));
    const float p = valid ? expf(s - m_new) : 0.0f;
    const float corr = expf(m - m_new);  // 0 on the first chunk (m = -inf)
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int jj = 0; jj < kPerLane; ++jj) acc[jj] *= corr;
    const int n = int(imin(32, last - c0 + 1));
    for (int kk = 0; kk < n; ++kk) {
      const float pk = __shfl_sync(0xffffffffu, p, kk);
      const float* vr = val_row(c0 + kk);
#pragma unroll
      for (int jj = 0; jj < kPerLane; ++jj) {
        const int64_t d = lane + 32 * jj;
        if (d < D) acc[jj] += pk * vr[d];
      }
    }
    m = m_new;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int jj = 0; jj < kPerLane; ++jj) {
    const int64_t d = lane + 32 * jj;
    if (d < D) out[d] = acc[jj] * inv;
  }
  return m + logf(l);
}

__global__ void attn_fwd_kernel(const float* q, const float* k, const float* v, const int32_t* cu,
                                int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                                float scale, float* out, float* lse) {
  __shared__ float qs[kWarps][kMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * int64_t(kWarps) + warp;
  if (w >= T * Hq) return;
  const int64_t i = w / Hq, h = w % Hq, g = h / (Hq / Hkv);
  const int64_t start = cu[seq_of_row(cu, B, i)];
  const int64_t ldq = Hq * D, ldk = Hkv * D;
  for (int64_t d = lane; d < D; d += 32) qs[warp][d] = q[i * ldq + h * D + d];
  __syncwarp();
  const float* kb = k + start * ldk + g * D;
  const float* vb = v + start * ldk + g * D;
  lse[i * Hq + h] = attend_row(
      qs[warp], i - start, D, scale, [&](int64_t j) { return kb + j * ldk; },
      [&](int64_t j) { return vb + j * ldk; }, out + i * ldq + h * D);
}

// delta[i, h] = Σ_d dO ∘ O (FlashAttention-2's D_i).
__global__ void attn_delta_kernel(const float* dout, const float* out, int64_t rows, int64_t D,
                                  float* delta) {
  const int lane = threadIdx.x & 31;
  const int64_t r = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  double s = 0;
  for (int64_t d = lane; d < D; d += 32) s += double(dout[r * D + d]) * double(out[r * D + d]);
  s = warp_sum(s);
  if (lane == 0) delta[r] = float(s);
}

// dQ_i = scale Σ_j P_ij (dP_ij - D_i) k_j, one warp per (query row, head).
__global__ void attn_dq_kernel(const float* dout, const float* q, const float* k, const float* v,
                               const float* lse, const float* delta, const int32_t* cu, int64_t B,
                               int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                               float* dq) {
  __shared__ float qs[kWarps][kMaxD], dos[kWarps][kMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * int64_t(kWarps) + warp;
  if (w >= T * Hq) return;
  const int64_t i = w / Hq, h = w % Hq, g = h / (Hq / Hkv);
  const int64_t start = cu[seq_of_row(cu, B, i)];
  const int64_t ldq = Hq * D, ldk = Hkv * D;
  for (int64_t d = lane; d < D; d += 32) {
    qs[warp][d] = q[i * ldq + h * D + d];
    dos[warp][d] = dout[i * ldq + h * D + d];
  }
  __syncwarp();
  const float l = lse[i * Hq + h], di = delta[i * Hq + h];
  float acc[kPerLane];
#pragma unroll
  for (int jj = 0; jj < kPerLane; ++jj) acc[jj] = 0.0f;
  for (int64_t c0 = start; c0 <= i; c0 += 32) {
    const int64_t j = c0 + lane;
    float ds = 0.0f;
    if (j <= i) {
      const float* kr = k + j * ldk + g * D;
      const float p = expf(scale * dot_row(qs[warp], kr, D) - l);
      const float dp = dot_row(dos[warp], v + j * ldk + g * D, D);
      ds = p * (dp - di);
    }
    const int n = int(imin(32, i - c0 + 1));
    for (int kk = 0; kk < n; ++kk) {
      const float dsk = __shfl_sync(0xffffffffu, ds, kk);
      const float* kr = k + (c0 + kk) * ldk + g * D;
#pragma unroll
      for (int jj = 0; jj < kPerLane; ++jj) {
        const int64_t d = lane + 32 * jj;
        if (d < D) acc[jj] += dsk * kr[d];
      }
    }
  }
#pragma unroll
  for (int jj = 0; jj < kPerLane; ++jj) {
    const int64_t d = lane + 32 * jj;
    if (d < D) dq[i * ldq + h * D + d] = scale * acc[jj];
  }
}

// dV_j = Σ_{h in group, i >= j} P_ij dO_i;  dK_j = scale Σ P_ij (dP_ij - D_i) q_i.
__global__ void attn_dkv_kernel(const float* dout, const float* q, const float* k, const float* v,
                                const float* lse, const float* delta, const int32_t* cu, int64_t B,
                                int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                                float* dk, float* dv) {
  __shared__ float ks[kWarps][kMaxD], vs[kWarps][kMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * int64_t(kWarps) + warp;
  if (w >= T * Hkv) return;
  const int64_t j = w / Hkv, g = w % Hkv, G = Hq / Hkv;
  const int64_t end = cu[seq_of_row(cu, B, j) + 1];
  const int64_t ldq = Hq * D, ldk = Hkv * D;
  for (int64_t d = lane; d < D; d += 32) {
    ks[warp][d] = k[j * ldk + g * D + d];
    vs[warp][d] = v[j * ldk + g * D + d];
  }
  __syncwarp();
  float ak[kPerLane], av[kPerLane];
#pragma unroll
  for (int jj = 0; jj < kPerLane; ++jj) ak[jj] = av[jj] = 0.0f;
  for (int64_t h = g * G; h < (g + 1) * G; ++h) {
    for (int64_t c0 = j; c0 < end; c0 += 32) {
      const int64_t i = c0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (i < end) {
        p = expf(scale * dot_row(ks[warp], q + i * ldq + h * D, D) - lse[i * Hq + h]);
        const float dp = dot_row(vs[warp], dout + i * ldq + h * D, D);
        ds = p * (dp - delta[i * Hq + h]);
      }
      const int n = int(imin(32, end - c0));
      for (int kk = 0; kk < n; ++kk) {
        const float pk = __shfl_sync(0xffffffffu, p, kk);
        const float dsk = __shfl_sync(0xffffffffu, ds, kk);
        const float* qr = q + (c0 + kk) * ldq + h * D;
        const float* dor = dout + (c0 + kk) * ldq + h * D;
#pragma unroll
        for (int jj = 0; jj < kPerLane; ++jj) {
          const int64_t d = lane + 32 * jj;
          if (d < D) {
            av[jj] += pk * dor[d];
            ak[jj] += dsk * qr[d];
          }
        }
      }
    }
  }
#pragma unroll
  for (int jj = 0; jj < kPerLane; ++jj) {
    const int64_t d = lane + 32 * jj;
    if (d < D) {
      dk[j * ldk + g * D + d] = scale * ak[jj];
      dv[j * ldk + g * D + d] = av[jj];
    }
  }
}

__global__ void paged_kv_write_kernel(const float* k, const float* v, const int32_t* slots,
                                      int64_t T, int64_t row, float* k_cache, float* v_cache) {
  const int64_t total = T * row;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row, c = e - t * row;
    const int64_t slot = slots[t];
    if (slot < 0) continue;  // padding row
    k_cache[slot * row + c] = k[e];
    v_cache[slot * row + c] = v[e];
  }
}

__global__ void paged_attn_kernel(const float* q, const float* k_cache, const float* v_cache,
                                  const int32_t* cu_q, const int32_t* kv_lens,
                                  const int32_t* page_indptr, const int32_t* page_indices,
                                  int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                                  int64_t page_size, float scale, float* out) {
  __shared__ float qs[kWarps][kMaxD];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t w = blockIdx.x * int64_t(kWarps) + warp;
  if (w >= T * Hq) return;
  const int64_t i = w / Hq, h = w % Hq, g = h / (Hq / Hkv);
  const int b = seq_of_row(cu_q, B, i);
  const int64_t nq = cu_q[b + 1] - cu_q[b];
  const int64_t pos = kv_lens[b] - nq + (i - cu_q[b]);  // kv position of this query
  const int32_t* pages = page_indices + page_indptr[b];
  const int64_t ldq = Hq * D, ldkv = Hkv * D;
  for (int64_t d = lane; d < D; d += 32) qs[warp][d] = q[i * ldq + h * D + d];
  __syncwarp();
  auto row = [&](const float* cache, int64_t j) {
    const int64_t slot = int64_t(pages[j / page_size]) * page_size + j % page_size;
    return cache + slot * ldkv + g * D;
  };
  attend_row(
      qs[warp], pos, D, scale, [&](int64_t j) { return row(k_cache, j); },
      [&](int64_t j) { return row(v_cache, j); }, out + i * ldq + h * D);
}

unsigned warp_blocks(int64_t items) { return unsigned((items + kWarps - 1) / kWarps); }

}  // namespace

void attention_fwd(const float* q, const float* k, const float* v, const int32_t* cu_seqlens,
                   int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                   float* out, float* lse) {
  if (T == 0) return;
  attn_fwd_kernel<<<warp_blocks(T * Hq), kWarps * 32, 0, stream()>>>(q, k, v, cu_seqlens, B, T, Hq,
                                                                     Hkv, D, scale, out, lse);
  GYRE_CUDA_LAUNCHED("attention_fwd");
}

void attention_bwd(const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const int32_t* cu_seqlens, int64_t B,
                   int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale, float* dq, float* dk,
                   float* dv) {
  if (T == 0) return;
  cudaStream_t s = stream();
  DeviceBuffer delta(size_t(T * Hq) * sizeof(float));
  attn_delta_kernel<<<warp_blocks(T * Hq), kWarps * 32, 0, s>>>(dout, out, T * Hq, D,
                                                                delta.as<float>());
  GYRE_CUDA_LAUNCHED("attention_bwd_delta");
  attn_dq_kernel<<<warp_blocks(T * Hq), kWarps * 32, 0, s>>>(
      dout, q, k, v, lse, delta.as<float>(), cu_seqlens, B, T, Hq, Hkv, D, scale, dq);
  GYRE_CUDA_LAUNCHED("attention_bwd_dq");
  attn_dkv_kernel<<<warp_blocks(T * Hkv), kWarps * 32, 0, s>>>(
      dout, q, k, v, lse, delta.as<float>(), cu_seqlens, B, T, Hq, Hkv, D, scale, dk, dv);
  GYRE_CUDA_LAUNCHED("attention_bwd_dkv");
}

void paged_kv_write(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                    int64_t Hkv, int64_t D, float* k_cache, float* v_cache) {
  const int64_t total = T * Hkv * D;
  if (total == 0) return;
  paged_kv_write_kernel<<<grid_for(total, 256), 256, 0, stream()>>>(k, v, slot_mapping, T, Hkv * D,
                                                                    k_cache, v_cache);
  GYRE_CUDA_LAUNCHED("paged_kv_write");
}

void paged_attention_fwd(const float* q, const float* k_cache, const float* v_cache,
                         const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                         const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                         int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                         float scale, float* out) {
  if (T == 0) return;
  paged_attn_kernel<<<warp_blocks(T * Hq), kWarps * 32, 0, stream()>>>(
      q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr, page_indices, B, T, Hq, Hkv, D,
      page_size, scale, out);
  GYRE_CUDA_LAUNCHED("paged_attention_fwd");
}

}  // namespace gyre::cuda
