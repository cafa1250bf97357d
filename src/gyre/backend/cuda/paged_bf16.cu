// bf16 paged KV cache kernels (declarations, layout and semantics in paged_bf16.h).
//
// Attention work item: one CTA (4 warps) owns up to R query rows of one (sequence b, kv head g)
// and one key range. Rows are the flattened (token, head-in-group) pairs f = t * G + hh of the
// sequence's q_len * G rows, so a decode token's G = Hq / Hkv heads share one CTA and every K/V row
// is loaded once for all of them; prefill chunks take R = 16 rows (2+ tokens) per CTA. The key
// range is the whole causal prefix, or with split-KV one chunk of it.
//
// Key loop: tiles of 64 keys are copied page by page into double-buffered shared memory with
// 16-byte cp.async (rows padded by 16 bytes so the 16-byte reads of 8 lanes on 8 different keys
// hit distinct banks). Each warp owns 16 keys of a tile and keeps its own online-softmax state for
// all R rows: scores by lane pairs (lane & 15 = key, lane >> 4 = half of the head dim; q comes from
// shared memory as a broadcast, the bf16 key is widened to f32 in registers), then P V with lanes
// owning 4 output dims (D = 64: two groups of 16 lanes take alternate keys). Scores are in log2
// units (q is pre-multiplied by scale * log2 e) so exp2f is the softmax exponential. At the end the
// 4 warps' states are merged through shared memory (the same formula as the split combine below).
//
// Split-KV (flash-decoding): when (sequences x kv heads x row tiles) cannot fill the GPU, the keys
// [0, max_kv_len) are cut into `splits` chunks of `chunk` keys (a multiple of the 64-key tile), one
// CTA per chunk. A chunk's CTA writes per row the unnormalised partial o_s = sum_j 2^(x_j - m_s)
// v_j, its max m_s (log2 units) and sum l_s = sum_j 2^(x_j - m_s); the combine kernel then computes
//   M = max_s m_s,  L = sum_s l_s 2^(m_s - M),  out = (sum_s o_s 2^(m_s - M)) / L,
// which is exactly softmax over the union of the chunks. Split s holds keys of a row at position
// pos iff s * chunk <= pos, so the combine reads splits 0 .. pos / chunk only (each of those saw
// at least key s * chunk, so l_s > 0); chunks past a row's position are never read. The split plan
// depends only on host-known sizes (B, heads, max_q_len, max_kv_len) and the SM count.
//
// Numerics: f32 products and sums, f32 online softmax with the max subtracted; the only bf16 data
// are the stored keys/values, which are widened exactly. Rows with no visible key yet (padding
// rows, or a warp whose keys are all masked) keep max = -inf and use 0 as the reference, so they
// produce 0 weights, never NaN; keys past the range are zero-filled in shared memory (0 * garbage
// could be NaN) and masked.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeysPerWarp = 16;                  // keys of a tile one warp scores (lane pairs)
constexpr int kTileKeys = kWarps * kKeysPerWarp;  // keys per shared-memory stage
constexpr int kMaxRows = 16;                      // query rows per CTA (prefill)
constexpr int kMinChunk = kTileKeys;              // smallest split-KV chunk

// ---- bf16 helpers -------------------------------------------------------------------------------

// f32 -> bf16 bits, round to nearest even; NaN stays a quiet NaN (core/dtype.h's f32_to_bf16).
__device__ __forceinline__ uint32_t to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (u >> 16) | 0x0040u;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return u >> 16;
}
// The two bf16 of a 32-bit word (little endian: the lower address is the low half), widened.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }

// ---- cache write --------------------------------------------------------------------------------

// Four values per thread: row % 4 == 0, k/v 16-byte and the caches 8-byte aligned.
__global__ void kv_write_vec4_kernel(const float4* k, const float4* v, const int32_t* slots,
                                     int64_t n4, int64_t row4, uint2* k_cache, uint2* v_cache) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n4;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row4, c = e - t * row4;
    const int64_t slot = slots[t];
    if (slot < 0) continue;  // padding row
    const float4 a = k[e], b = v[e];
    k_cache[slot * row4 + c] = make_uint2(to_bf16_bits(a.x) | to_bf16_bits(a.y) << 16,
                                          to_bf16_bits(a.z) | to_bf16_bits(a.w) << 16);
    v_cache[slot * row4 + c] = make_uint2(to_bf16_bits(b.x) | to_bf16_bits(b.y) << 16,
                                          to_bf16_bits(b.z) | to_bf16_bits(b.w) << 16);
  }
}

__global__ void kv_write_scalar_kernel(const float* k, const float* v, const int32_t* slots,
                                       int64_t n, int64_t row, uint16_t* k_cache,
                                       uint16_t* v_cache) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row, c = e - t * row;
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    k_cache[slot * row + c] = uint16_t(to_bf16_bits(k[e]));
    v_cache[slot * row + c] = uint16_t(to_bf16_bits(v[e]));
  }
}

// ---- attention: shared pieces -------------------------------------------------------------------

struct AttnParams {
  const float* q;
  const uint16_t* k_cache;
  const uint16_t* v_cache;
  const int32_t* cu_q;
  const int32_t* kv_lens;
  const int32_t* page_indptr;
  const int32_t* page_indices;
  int T, Hq, Hkv, G, page_size;
  int row_tiles;    // R-row tiles per (sequence, kv head): ceil(max_q_len * G / R)
  int chunk;        // keys per split (a multiple of kTileKeys; >= max_kv_len when not split)
  float qscale;     // scale * log2 e
  float* out;       // [T, Hq, D], written directly when part_o is null
  float* part_o;    // split partials [splits, T * Hq, D] (unnormalised), or null
  float2* part_ml;  // [splits, T * Hq] (max in log2 units, sum)
};

// Dynamic shared memory of one CTA, in bytes from the start:
//   [0, 2 * kStage)      two K/V stages: K rows [kTileKeys][kRowBytes], then V rows alike;
//                        after the key loop: the warps' partial outputs [kWarps][R][D] f32
//   [kQ, kP)             q rows [R][D] f32, pre-scaled by scale * log2 e (zeros past nrows)
//   [kP, kBytes)         per warp, the tile's probabilities [kWarps][R][kKeysPerWarp] f32;
//                        after the key loop: the warps' (max, sum) [kWarps][R] float2
template <int D, int R>
struct Layout {
  static constexpr int kRowBytes = D * 2 + 16;  // padded: 8 keys' 16-byte chunks -> 8 bank groups
  static constexpr int kStage = 2 * kTileKeys * kRowBytes;
  static constexpr int kQ = 2 * kStage;
  static constexpr int kP = kQ + R * D * 4;
  static constexpr int kBytes = kP + kWarps * R * kKeysPerWarp * 4;
  static_assert(kWarps * R * D * 4 <= 2 * kStage, "merge area must fit in the K/V stages");
  static_assert(kKeysPerWarp >= 2, "(max, sum) area must fit in the probability area");
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}
// Reduction over the 16 lanes of each half-warp (both halves hold the same values here).
__device__ __forceinline__ float half_max(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
__device__ __forceinline__ float half_sum(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

__device__ __forceinline__ float f4_get(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ float4 f4_axpy(float a, const float4& x, const float4& y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}

// Copies keys [k0, k0 + kTileKeys) of (sequence, kv head g) into a stage; keys at or past key_end
// are zero-filled. Consecutive threads take consecutive 16-byte chunks of a row (coalesced).
template <int D, int R>
__device__ __forceinline__ void load_kv_tile(unsigned char* stage, const AttnParams& p,
                                             const int32_t* pages, int g, int k0, int key_end) {
  constexpr int kChunks = D / 8;
  constexpr int kRowBytes = Layout<D, R>::kRowBytes;
  unsigned char* ks = stage;
  unsigned char* vs = stage + kTileKeys * kRowBytes;
  for (int e = threadIdx.x; e < kTileKeys * kChunks; e += kThreads) {
    const int j = e / kChunks, c = e % kChunks;
    const int pos = k0 + j;
    const bool ok = pos < key_end;
    int64_t off = 0;  // a valid address for the zero-filling copy (it reads nothing)
    if (ok) {
      const int64_t slot = int64_t(pages[pos / p.page_size]) * p.page_size + pos % p.page_size;
      off = (slot * p.Hkv + g) * D + c * 8;
    }
    cp_async16(ks + j * kRowBytes + c * 16, p.k_cache + off, ok);
    cp_async16(vs + j * kRowBytes + c * 16, p.v_cache + off, ok);
  }
}

// s[r] = q_r . k for this lane's key (lane & 15 of the warp's 16), all R rows: each lane of the
// pair sums half of the head dim (lane >> 4 picks the half), then the pair adds.
template <int D, int R>
__device__ __forceinline__ void score_tile(const unsigned char* ks, const float* qs, int warp,
                                           int lane, float s[R]) {
  constexpr int kHalfChunks = D / 16;  // 16-byte chunks (8 dims) in half a row
  const int key = warp * kKeysPerWarp + (lane & 15), half = lane >> 4;
  const unsigned char* krow = ks + key * Layout<D, R>::kRowBytes + half * kHalfChunks * 16;
  const float* qh = qs + half * (D / 2);
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.0f;
#pragma unroll
  for (int c = 0; c < kHalfChunks; ++c) {
    const uint4 raw = *reinterpret_cast<const uint4*>(krow + c * 16);
    const float kf[8] = {bf16_lo(raw.x), bf16_hi(raw.x), bf16_lo(raw.y), bf16_hi(raw.y),
                         bf16_lo(raw.z), bf16_hi(raw.z), bf16_lo(raw.w), bf16_hi(raw.w)};
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 a = *reinterpret_cast<const float4*>(qh + r * D + c * 8);
      const float4 b = *reinterpret_cast<const float4*>(qh + r * D + c * 8 + 4);
      float x = s[r];
      x = fmaf(a.x, kf[0], x), x = fmaf(a.y, kf[1], x), x = fmaf(a.z, kf[2], x);
      x = fmaf(a.w, kf[3], x), x = fmaf(b.x, kf[4], x), x = fmaf(b.y, kf[5], x);
      x = fmaf(b.z, kf[6], x), x = fmaf(b.w, kf[7], x);
      s[r] = x;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] += __shfl_xor_sync(0xFFFFFFFFu, s[r], 16);
}

// Online softmax over the warp's 16 keys of this tile: masks keys at or past lim[r], updates the
// running max m and this lane's share of the sum l, rescales acc by 2^(m_old - m_new) and turns
// s into the probabilities 2^(s - m_new) (0 where masked).
template <int R>
__device__ __forceinline__ void softmax_tile(float s[R], const int lim[R], int kpos, float m[R],
                                             float l[R], float4 acc[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float x = kpos < lim[r] ? s[r] : -INFINITY;
    const float m_new = fmaxf(m[r], half_max(x));
    const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: all weights 0
    const float alpha = exp2f(m[r] - m_ref);
    s[r] = exp2f(x - m_ref);
    l[r] = fmaf(l[r], alpha, s[r]);
    m[r] = m_new;
    acc[r] = make_float4(acc[r].x * alpha, acc[r].y * alpha, acc[r].z * alpha, acc[r].w * alpha);
  }
}

// acc[r] += sum over the warp's 16 keys of p[r][key] * v[key][4 dims]. Lanes own 4 dims
// (lane % (D / 4)); with D = 64 the two 16-lane groups take alternate keys. p is stored permuted
// ([group][keys of the group]) so each group reads its 4 consecutive probabilities as one float4.
template <int D, int R>
__device__ __forceinline__ void accumulate_pv(const unsigned char* vs, const float* pw, int warp,
                                              int lane, float4 acc[R]) {
  constexpr int kDimGroups = D / 4;
  constexpr int kKeyGroups = 32 / kDimGroups;
  constexpr int kKeysPerLane = kKeysPerWarp / kKeyGroups;
  const int dg = lane % kDimGroups, kg = lane / kDimGroups;
  const unsigned char* vcol = vs + dg * 8;
  const float* pk = pw + kg * kKeysPerLane;
#pragma unroll
  for (int u0 = 0; u0 < kKeysPerLane; u0 += 4) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int key = warp * kKeysPerWarp + kg + kKeyGroups * (u0 + u);
      const uint2 raw = *reinterpret_cast<const uint2*>(vcol + key * Layout<D, R>::kRowBytes);
      v[u] = make_float4(bf16_lo(raw.x), bf16_hi(raw.x), bf16_lo(raw.y), bf16_hi(raw.y));
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 pr = *reinterpret_cast<const float4*>(pk + r * kKeysPerWarp + u0);
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[r] = f4_axpy(f4_get(pr, u), v[u], acc[r]);
    }
  }
}

// Position of key k (0..15) in a warp's probability row: [key group][keys of the group].
template <int D>
__device__ __forceinline__ int p_slot(int k) {
  constexpr int kKeyGroups = 32 / (D / 4);
  return (k % kKeyGroups) * (kKeysPerWarp / kKeyGroups) + k / kKeyGroups;
}

// ---- attention: main kernel ---------------------------------------------------------------------

// grid.x = B * Hkv * row_tiles (sequence, kv head, row tile; the longest causal tiles first),
// grid.y = splits.
template <int D, int R>
__global__ void __launch_bounds__(kThreads) paged_attn_bf16_kernel(const AttnParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  using L = Layout<D, R>;
  const int tile = p.row_tiles - 1 - int(blockIdx.x % unsigned(p.row_tiles));
  const int bg = int(blockIdx.x / unsigned(p.row_tiles));
  const int g = bg % p.Hkv, b = bg / p.Hkv, split = int(blockIdx.y);
  const int q0 = p.cu_q[b], nq = p.cu_q[b + 1] - q0;
  const int f0 = tile * R;  // first flattened row (token * G + head in group) of this CTA
  if (f0 >= nq * p.G) return;
  const int nrows = min(R, nq * p.G - f0);
  const int first_pos = p.kv_lens[b] - nq;  // kv position of the sequence's first query
  const int key_begin = split * p.chunk;
  const int key_end = min(first_pos + (f0 + nrows - 1) / p.G + 1, key_begin + p.chunk);
  if (key_begin >= key_end) return;  // this chunk lies past every row's position

  // Keys [key_begin, lim[r]) are visible to row r in this CTA (none for padding rows).
  int lim[R];
#pragma unroll
  for (int r = 0; r < R; ++r)
    lim[r] = r < nrows ? min(first_pos + (f0 + r) / p.G + 1, key_end) : key_begin;

  const int32_t* pages = p.page_indices + p.page_indptr[b];
  load_kv_tile<D, R>(smem, p, pages, g, key_begin, key_end);
  cp_async_commit();

  float* qs = reinterpret_cast<float*>(smem + L::kQ);
  for (int e = threadIdx.x; e < R * (D / 4); e += kThreads) {
    const int r = e / (D / 4), c = e % (D / 4);
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r < nrows) {
      const int f = f0 + r;
      const int64_t row = int64_t(q0 + f / p.G) * p.Hq + int64_t(g) * p.G + f % p.G;
      x = reinterpret_cast<const float4*>(p.q + row * D)[c];
      x = make_float4(x.x * p.qscale, x.y * p.qscale, x.z * p.qscale, x.w * p.qscale);
    }
    reinterpret_cast<float4*>(qs)[e] = x;
  }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* pw = reinterpret_cast<float*>(smem + L::kP) + warp * R * kKeysPerWarp;
  float m[R], l[R];
  float4 acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    acc[r] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  const int n_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = key_begin + it * kTileKeys;
    if (it + 1 < n_tiles) {  // prefetch the next tile into the other stage
      load_kv_tile<D, R>(smem + ((it + 1) & 1) * L::kStage, p, pages, g, k0 + kTileKeys, key_end);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile (and q) visible to every warp
    const unsigned char* stage = smem + (it & 1) * L::kStage;
    float s[R];
    score_tile<D, R>(stage, qs, warp, lane, s);
    softmax_tile<R>(s, lim, k0 + warp * kKeysPerWarp + (lane & 15), m, l, acc);
    if (lane < 16) {
#pragma unroll
      for (int r = 0; r < R; ++r) pw[r * kKeysPerWarp + p_slot<D>(lane)] = s[r];
    }
    __syncwarp();
    accumulate_pv<D, R>(stage + kTileKeys * L::kRowBytes, pw, warp, lane, acc);
    __syncthreads();  // the stage and pw are rewritten next iteration
  }

  // Per-warp state -> shared memory: l summed over the 16 key lanes, acc over the key groups.
  constexpr int kDimGroups = D / 4;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    l[r] = half_sum(l[r]);
    if constexpr (kDimGroups < 32) {
      acc[r].x += __shfl_xor_sync(0xFFFFFFFFu, acc[r].x, 16);
      acc[r].y += __shfl_xor_sync(0xFFFFFFFFu, acc[r].y, 16);
      acc[r].z += __shfl_xor_sync(0xFFFFFFFFu, acc[r].z, 16);
      acc[r].w += __shfl_xor_sync(0xFFFFFFFFu, acc[r].w, 16);
    }
  }
  float4* ow = reinterpret_cast<float4*>(smem);           // [kWarps][R][D / 4]
  float2* mlw = reinterpret_cast<float2*>(smem + L::kP);  // [kWarps][R]
  if (lane < kDimGroups) {
#pragma unroll
    for (int r = 0; r < R; ++r) ow[(warp * R + r) * (D / 4) + lane] = acc[r];
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) mlw[warp * R + r] = make_float2(m[r], l[r]);
  }
  __syncthreads();

  // Merge the warps (M = max m_w, L = sum l_w 2^(m_w - M), o = sum o_w 2^(m_w - M)) and write.
  const int64_t rows_total = int64_t(p.T) * p.Hq;
  for (int e = threadIdx.x; e < nrows * (D / 4); e += kThreads) {
    const int r = e / (D / 4), c = e % (D / 4);
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, mlw[w * R + r].x);
    const float m_ref = M == -INFINITY ? 0.0f : M;
    float sum = 0.0f;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float2 ml = mlw[w * R + r];
      const float wt = exp2f(ml.x - m_ref);
      sum = fmaf(ml.y, wt, sum);
      o = f4_axpy(wt, ow[(w * R + r) * (D / 4) + c], o);
    }
    const int f = f0 + r;
    const int64_t row = int64_t(q0 + f / p.G) * p.Hq + int64_t(g) * p.G + f % p.G;
    if (p.part_o == nullptr) {
      const float inv = 1.0f / sum;  // > 0: key 0 is visible to every row
      reinterpret_cast<float4*>(p.out)[row * (D / 4) + c] =
          make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
    } else {
      const int64_t prow = int64_t(split) * rows_total + row;
      reinterpret_cast<float4*>(p.part_o)[prow * (D / 4) + c] = o;
      if (c == 0) p.part_ml[prow] = make_float2(M, sum);
    }
  }
}

// ---- attention: split-KV combine ----------------------------------------------------------------

// The sequence b whose query rows [cu[b], cu[b+1]) hold row i (empty sequences are skipped).
__device__ __forceinline__ int seq_of_row(const int32_t* cu, int B, int i) {
  int lo = 0, hi = B - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// One warp per (token, head) row: merges the partials of splits 0 .. pos / chunk (formula at the
// top of the file).
__global__ void __launch_bounds__(128)
    split_combine_kernel(const float4* part_o, const float2* part_ml, const int32_t* cu_q,
                         const int32_t* kv_lens, int B, int T, int Hq, int D4, int chunk,
                         int splits, float4* out) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t rows = int64_t(T) * Hq, row = int64_t(blockIdx.x) * 4 + warp;
  if (row >= rows) return;
  const int i = int(row / Hq);
  const int b = seq_of_row(cu_q, B, i);
  const int pos = kv_lens[b] - (cu_q[b + 1] - cu_q[b]) + (i - cu_q[b]);
  const int n = min(splits, pos / chunk + 1);
  float M = -INFINITY;
  for (int s = lane; s < n; s += 32) M = fmaxf(M, part_ml[s * rows + row].x);
  M = warp_max(M);  // finite: split 0 holds key 0
  float sum = 0.0f;
  for (int s = lane; s < n; s += 32) {
    const float2 ml = part_ml[s * rows + row];
    sum = fmaf(ml.y, exp2f(ml.x - M), sum);
  }
  const float inv = 1.0f / warp_sum(sum);
  for (int c = lane; c < D4; c += 32) {
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
    for (int s = 0; s < n; ++s)
      o = f4_axpy(exp2f(part_ml[s * rows + row].x - M), part_o[(s * rows + row) * D4 + c], o);
    out[row * D4 + c] = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
  }
}

// ---- host side ----------------------------------------------------------------------------------

[[noreturn]] void bad_argument(const std::string& what) {
  throw Error(ErrorKind::invalid_argument, "paged_attention_bf16_fwd: " + what);
}

// How one call is cut into CTAs (host-known sizes only; never device data).
struct Plan {
  int rows = 1;       // R: query rows per CTA
  int row_tiles = 1;  // R-row tiles per (sequence, kv head)
  int splits = 1;     // key chunks per sequence
  int chunk = kTileKeys;
  int64_t items = 0;  // grid.x = B * Hkv * row_tiles
};

Plan make_plan(int64_t B, int64_t Hq, int64_t Hkv, int64_t max_q_len, int64_t max_kv_len) {
  Plan pl;
  const int64_t rows = std::max<int64_t>(max_q_len, 1) * (Hq / Hkv);
  while (pl.rows < rows && pl.rows < kMaxRows) pl.rows *= 2;  // 1, 2, 4, 8 or 16
  pl.row_tiles = int((rows + pl.rows - 1) / pl.rows);
  pl.items = B * Hkv * pl.row_tiles;
  const int64_t kv = std::max<int64_t>(max_kv_len, 1);
  pl.chunk = int((kv + kTileKeys - 1) / kTileKeys * kTileKeys);
  // Split when the work items cannot fill the SMs: aim at ~2 CTAs per SM, chunks >= kMinChunk.
  const int64_t sms = sm_count();
  if (pl.items > 0 && pl.items < sms && kv >= 2 * kMinChunk) {
    const int64_t want = std::min((2 * sms + pl.items - 1) / pl.items, kv / kMinChunk);
    if (want > 1) {
      const int64_t per = (kv + want - 1) / want;
      pl.chunk = int((per + kTileKeys - 1) / kTileKeys * kTileKeys);
      pl.splits = int((kv + pl.chunk - 1) / pl.chunk);
    }
  }
  return pl;
}

size_t workspace_for(const Plan& pl, int64_t T, int64_t Hq, int64_t D) {
  if (pl.splits <= 1) return 0;
  return size_t(pl.splits) * size_t(T * Hq) * size_t(D + 2) * sizeof(float);
}

void check_args(const void* q, const void* k_cache, const void* v_cache, const void* out, int64_t B,
                int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size, int64_t max_q_len,
                int64_t max_kv_len) {
  if (!paged_attention_bf16_supported(D))
    bad_argument("head dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (Hkv < 1 || Hq < 1 || Hq % Hkv != 0)
    bad_argument("Hq = " + std::to_string(Hq) +
                 " must be a positive multiple of Hkv = " + std::to_string(Hkv));
  if (page_size < 1) bad_argument("page_size must be >= 1, got " + std::to_string(page_size));
  if (B < 0 || T < 0) bad_argument("negative B or T");
  if (max_q_len < 1 || max_kv_len < 1)
    bad_argument("max_q_len and max_kv_len must be >= 1 when T > 0");
  // Positions, row counts and split starts (< 2 * max_kv_len) are 32-bit in the kernels.
  const int64_t kIntMax = 0x7FFFFFFF, kMaxKv = int64_t(1) << 30;
  if (T * Hq > kIntMax || max_kv_len > kMaxKv || max_q_len * Hq > kIntMax)
    bad_argument("sizes exceed 32-bit row/position indices");
  for (const void* ptr : {q, k_cache, v_cache, out})
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      bad_argument("q, out, k_cache and v_cache must be 16-byte aligned");
}

template <int D, int R>
void launch_attn(const AttnParams& p, const Plan& pl) {
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(paged_attn_bf16_kernel<D, R>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Layout<D, R>::kBytes));
    return true;
  }();
  (void)attr;
  const dim3 grid(unsigned(pl.items), unsigned(pl.splits));
  paged_attn_bf16_kernel<D, R><<<grid, kThreads, Layout<D, R>::kBytes, stream()>>>(p);
  GYRE_CUDA_LAUNCHED("paged_attention_bf16_fwd");
}

template <int D>
void launch_attn_rows(const AttnParams& p, const Plan& pl) {
  switch (pl.rows) {
    case 1: return launch_attn<D, 1>(p, pl);
    case 2: return launch_attn<D, 2>(p, pl);
    case 4: return launch_attn<D, 4>(p, pl);
    case 8: return launch_attn<D, 8>(p, pl);
    default: return launch_attn<D, 16>(p, pl);
  }
}

}  // namespace

void paged_kv_write_bf16(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                         int64_t Hkv, int64_t D, uint16_t* k_cache, uint16_t* v_cache) {
  const int64_t row = Hkv * D, total = T * row;
  if (total == 0) return;
  const auto aligned = [](const void* ptr, uintptr_t a) {
    return reinterpret_cast<uintptr_t>(ptr) % a == 0;
  };
  if (row % 4 == 0 && aligned(k, 16) && aligned(v, 16) && aligned(k_cache, 8) &&
      aligned(v_cache, 8)) {
    kv_write_vec4_kernel<<<grid_for(total / 4, 256), 256, 0, stream()>>>(
        reinterpret_cast<const float4*>(k), reinterpret_cast<const float4*>(v), slot_mapping,
        total / 4, row / 4, reinterpret_cast<uint2*>(k_cache), reinterpret_cast<uint2*>(v_cache));
  } else {
    kv_write_scalar_kernel<<<grid_for(total, 256), 256, 0, stream()>>>(k, v, slot_mapping, total,
                                                                       row, k_cache, v_cache);
  }
  GYRE_CUDA_LAUNCHED("paged_kv_write_bf16");
}

bool paged_attention_bf16_supported(int64_t D) { return D == 64 || D == 128; }

size_t paged_attention_bf16_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                            int64_t D, int64_t max_q_len, int64_t max_kv_len) {
  if (T == 0 || B == 0 || Hkv < 1) return 0;
  return workspace_for(make_plan(B, Hq, Hkv, max_q_len, max_kv_len), T, Hq, D);
}

void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out,
                              void* workspace, size_t workspace_bytes) {
  if (T == 0 || B == 0) return;
  check_args(q, k_cache, v_cache, out, B, T, Hq, Hkv, D, page_size, max_q_len, max_kv_len);
  const Plan pl = make_plan(B, Hq, Hkv, max_q_len, max_kv_len);
  if (pl.items > 0x7FFFFFFF) bad_argument("too many work items for one grid");
  const size_t need = workspace_for(pl, T, Hq, D);
  if (workspace_bytes < need)
    bad_argument("workspace of " + std::to_string(workspace_bytes) + " bytes, need " +
                 std::to_string(need));
  if (need > 0 && reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    bad_argument("workspace must be 16-byte aligned");

  AttnParams p;
  p.q = q;
  p.k_cache = k_cache;
  p.v_cache = v_cache;
  p.cu_q = cu_seqlens_q;
  p.kv_lens = kv_lens;
  p.page_indptr = page_indptr;
  p.page_indices = page_indices;
  p.T = int(T);
  p.Hq = int(Hq);
  p.Hkv = int(Hkv);
  p.G = int(Hq / Hkv);
  p.page_size = int(page_size);
  p.row_tiles = pl.row_tiles;
  p.chunk = pl.chunk;
  p.qscale = scale * kLog2e;
  p.out = out;
  p.part_o = need > 0 ? static_cast<float*>(workspace) : nullptr;
  p.part_ml = need > 0 ? reinterpret_cast<float2*>(static_cast<float*>(workspace) +
                                                   size_t(pl.splits) * size_t(T * Hq * D))
                       : nullptr;
  if (D == 64)
    launch_attn_rows<64>(p, pl);
  else
    launch_attn_rows<128>(p, pl);
  if (need == 0) return;
  const int64_t rows = T * Hq;
  split_combine_kernel<<<unsigned((rows + 3) / 4), 128, 0, stream()>>>(
      reinterpret_cast<const float4*>(p.part_o), p.part_ml, cu_seqlens_q, kv_lens, int(B), int(T),
      int(Hq), int(D / 4), pl.chunk, pl.splits, reinterpret_cast<float4*>(out));
  GYRE_CUDA_LAUNCHED("paged_attention_bf16_combine");
}

void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out) {
  if (T == 0 || B == 0) return;
  check_args(q, k_cache, v_cache, out, B, T, Hq, Hkv, D, page_size, max_q_len, max_kv_len);
  const size_t need = workspace_for(make_plan(B, Hq, Hkv, max_q_len, max_kv_len), T, Hq, D);
  // Pool scratch, stream-ordered: released when this returns, reused only after these kernels.
  std::optional<DeviceBuffer> scratch;
  if (need > 0) scratch.emplace(need);
  paged_attention_bf16_fwd(q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr, page_indices, B,
                           T, Hq, Hkv, D, page_size, scale, max_q_len, max_kv_len, out,
                           need > 0 ? scratch->as<void>() : nullptr, need);
}

}  // namespace gyre::cuda
