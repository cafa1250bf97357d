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
// That is variant 1, the default; variant 2 (set_paged_attention_bf16_variant) scores decode tiles
// by row with q in registers instead (see its section).
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

// A K/V row in shared memory: D bf16 padded by 16 bytes, so that 8 lanes reading the same 16-byte
// chunk of 8 different keys hit 8 different bank groups (row r starts at bank group r mod 8).
constexpr int row_bytes(int D) { return D * 2 + 16; }

// Dynamic shared memory of one CTA, in bytes from the start:
//   [0, 2 * kStage)   two K/V stages: K rows [kTileKeys][row_bytes], then V rows alike;
//                     after the key loop: the warps' partial outputs [kWarps][R][D] f32
//   [kQ, kP)          q rows [R][D] f32, pre-scaled by scale * log2 e (zeros past nrows)
//   [kP, kAlpha)      the tile's probabilities, R x kTileKeys f32: variant 1 per warp
//                     [kWarps][R][kKeysPerWarp], variant 2 [R][kTileKeys] (keys permuted within
//                     each warp's 16, see tile_p_slot); after the key loop: (max, sum) float2s
//   [kAlpha, kBytes)  variant 2: each row's rescale factor for the tile [R] f32
template <int D, int R>
struct Layout {
  static constexpr int kRowBytes = row_bytes(D);
  static constexpr int kStage = 2 * kTileKeys * kRowBytes;
  static constexpr int kQ = 2 * kStage;
  static constexpr int kP = kQ + R * D * 4;
  static constexpr int kAlpha = kP + R * kTileKeys * 4;
  static constexpr int kBytes = kAlpha + (R * 4 + 15) / 16 * 16;
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
// Reductions over groups of n consecutive lanes (n a power of two <= 32).
template <int N>
__device__ __forceinline__ float group_max(float v) {
  for (int o = 1; o < N; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
template <int N>
__device__ __forceinline__ float group_sum(float v) {
  for (int o = 1; o < N; o <<= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

__device__ __forceinline__ float f4_get(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ float4 f4_axpy(float a, const float4& x, const float4& y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}
__device__ __forceinline__ float4 f4_scale(const float4& x, float a) {
  return make_float4(x.x * a, x.y * a, x.z * a, x.w * a);
}
__device__ __forceinline__ void unpack8(const uint4& raw, float kf[8]) {
  kf[0] = bf16_lo(raw.x), kf[1] = bf16_hi(raw.x), kf[2] = bf16_lo(raw.y), kf[3] = bf16_hi(raw.y);
  kf[4] = bf16_lo(raw.z), kf[5] = bf16_hi(raw.z), kf[6] = bf16_lo(raw.w), kf[7] = bf16_hi(raw.w);
}

// One CTA's work: flattened rows [f0, f0 + nrows) (f = token * G + head in group) of sequence b,
// kv head g, over keys [key_begin, key_end).
struct Item {
  int b, g, split, q0, f0, nrows, first_pos, key_begin, key_end;
};

// Decodes blockIdx (grid.x = B * Hkv * row_tiles with the longest causal tiles first, grid.y =
// split); false when the CTA has nothing to do (tile past the sequence's rows, or a chunk past
// every row's position).
template <int R>
__device__ __forceinline__ bool decode_item(const AttnParams& p, Item& it) {
  const int tile = p.row_tiles - 1 - int(blockIdx.x % unsigned(p.row_tiles));
  const int bg = int(blockIdx.x / unsigned(p.row_tiles));
  it.g = bg % p.Hkv, it.b = bg / p.Hkv, it.split = int(blockIdx.y);
  it.q0 = p.cu_q[it.b];
  const int nq = p.cu_q[it.b + 1] - it.q0;
  it.f0 = tile * R;
  if (it.f0 >= nq * p.G) return false;
  it.nrows = min(R, nq * p.G - it.f0);
  it.first_pos = p.kv_lens[it.b] - nq;  // kv position of the sequence's first query
  it.key_begin = it.split * p.chunk;
  it.key_end = min(it.first_pos + (it.f0 + it.nrows - 1) / p.G + 1, it.key_begin + p.chunk);
  return it.key_begin < it.key_end;
}

// Keys [key_begin, row_limit) are visible to CTA row r (none for padding rows r >= nrows).
__device__ __forceinline__ int row_limit(const AttnParams& p, const Item& it, int r) {
  return r < it.nrows ? min(it.first_pos + (it.f0 + r) / p.G + 1, it.key_end) : it.key_begin;
}

// Index of CTA row r in [T * Hq] (token * Hq + head).
__device__ __forceinline__ int64_t out_row(const AttnParams& p, const Item& it, int r) {
  const int f = it.f0 + r;
  return int64_t(it.q0 + f / p.G) * p.Hq + int64_t(it.g) * p.G + f % p.G;
}

// q rows of the CTA -> shared memory [R][D], pre-scaled; zeros for padding rows.
template <int D, int R>
__device__ __forceinline__ void load_q(float* qs, const AttnParams& p, const Item& it) {
  for (int e = threadIdx.x; e < R * (D / 4); e += kThreads) {
    const int r = e / (D / 4), c = e % (D / 4);
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r < it.nrows)
      x = f4_scale(reinterpret_cast<const float4*>(p.q + out_row(p, it, r) * D)[c], p.qscale);
    reinterpret_cast<float4*>(qs)[e] = x;
  }
}

// Dims [4c, 4c + 4) of CTA row r: out = o / sum, or the split partial (o, M, sum).
template <int D>
__device__ __forceinline__ void write_row(const AttnParams& p, const Item& it, int r, int c,
                                          float M, float sum, const float4& o) {
  const int64_t row = out_row(p, it, r);
  if (p.part_o == nullptr) {
    // sum > 0: without a split every row sees key 0.
    reinterpret_cast<float4*>(p.out)[row * (D / 4) + c] = f4_scale(o, 1.0f / sum);
  } else {
    const int64_t prow = int64_t(it.split) * p.T * p.Hq + row;
    reinterpret_cast<float4*>(p.part_o)[prow * (D / 4) + c] = o;
    if (c == 0) p.part_ml[prow] = make_float2(M, sum);
  }
}

// Copies keys [k0, k0 + kTileKeys) of (sequence, kv head g) into a stage; keys at or past key_end
// are zero-filled. Consecutive threads take consecutive 16-byte chunks of a row (coalesced).
template <int D>
__device__ __forceinline__ void load_kv_tile(unsigned char* stage, const AttnParams& p,
                                             const int32_t* pages, int g, int k0, int key_end) {
  constexpr int kChunks = D / 8;
  constexpr int kRowBytes = row_bytes(D);
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

// Position of key k (0..15 of a warp's 16) in that warp's probability row: [key group][keys of
// the group], so each P V lane group (see accumulate_pv) reads its 4 consecutive probabilities as
// one float4.
template <int D>
__device__ __forceinline__ int p_slot(int k) {
  constexpr int kKeyGroups = 32 / (D / 4);
  return (k % kKeyGroups) * (kKeysPerWarp / kKeyGroups) + k / kKeyGroups;
}

// acc[r] += sum over this warp's 16 keys of p[r][key] * v[key][4 dims]. Lanes own 4 dims
// (lane % (D / 4)); with D = 64 the two 16-lane groups take alternate keys. pw points at the
// warp's 16 probabilities of row 0 (stored by p_slot); rows are kPStride floats apart.
template <int D, int R, int kPStride>
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
      const uint2 raw = *reinterpret_cast<const uint2*>(vcol + key * row_bytes(D));
      v[u] = make_float4(bf16_lo(raw.x), bf16_hi(raw.x), bf16_lo(raw.y), bf16_hi(raw.y));
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 pr = *reinterpret_cast<const float4*>(pk + r * kPStride + u0);
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[r] = f4_axpy(f4_get(pr, u), v[u], acc[r]);
    }
  }
}

// Adds the two key groups' partial sums of a P V lane (D = 64: lanes l and l ^ 16).
template <int D, int R>
__device__ __forceinline__ void reduce_key_groups(float4 acc[R]) {
  if constexpr (D / 4 < 32) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      acc[r].x += __shfl_xor_sync(0xFFFFFFFFu, acc[r].x, 16);
      acc[r].y += __shfl_xor_sync(0xFFFFFFFFu, acc[r].y, 16);
      acc[r].z += __shfl_xor_sync(0xFFFFFFFFu, acc[r].z, 16);
      acc[r].w += __shfl_xor_sync(0xFFFFFFFFu, acc[r].w, 16);
    }
  }
}

// ---- attention, variant 1: every warp scores its 16 keys of a tile for all R rows -------------

// s[r] = q_r . k for this lane's key (lane & 15 of the warp's 16), all R rows: each lane of the
// pair sums half of the head dim (lane >> 4 picks the half), then the pair adds.
template <int D, int R>
__device__ __forceinline__ void score_tile(const unsigned char* ks, const float* qs, int warp,
                                           int lane, float s[R]) {
  constexpr int kHalfChunks = D / 16;  // 16-byte chunks (8 dims) in half a row
  const int key = warp * kKeysPerWarp + (lane & 15), half = lane >> 4;
  const unsigned char* krow = ks + key * row_bytes(D) + half * kHalfChunks * 16;
  const float* qh = qs + half * (D / 2);
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.0f;
#pragma unroll
  for (int c = 0; c < kHalfChunks; ++c) {
    float kf[8];
    unpack8(*reinterpret_cast<const uint4*>(krow + c * 16), kf);
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
    const float m_new = fmaxf(m[r], group_max<16>(x));
    const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: all weights 0
    const float alpha = exp2f(m[r] - m_ref);
    s[r] = exp2f(x - m_ref);
    l[r] = fmaf(l[r], alpha, s[r]);
    m[r] = m_new;
    acc[r] = f4_scale(acc[r], alpha);
  }
}

template <int D, int R>
__global__ void __launch_bounds__(kThreads) paged_attn_bf16_kernel(const AttnParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  using L = Layout<D, R>;
  Item it;
  if (!decode_item<R>(p, it)) return;
  int lim[R];
#pragma unroll
  for (int r = 0; r < R; ++r) lim[r] = row_limit(p, it, r);

  const int32_t* pages = p.page_indices + p.page_indptr[it.b];
  load_kv_tile<D>(smem, p, pages, it.g, it.key_begin, it.key_end);
  cp_async_commit();
  float* qs = reinterpret_cast<float*>(smem + L::kQ);
  load_q<D, R>(qs, p, it);

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
  const int n_tiles = (it.key_end - it.key_begin + kTileKeys - 1) / kTileKeys;
  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = it.key_begin + t * kTileKeys;
    if (t + 1 < n_tiles) {  // prefetch the next tile into the other stage
      load_kv_tile<D>(smem + ((t + 1) & 1) * L::kStage, p, pages, it.g, k0 + kTileKeys, it.key_end);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile (and q) visible to every warp
    const unsigned char* stage = smem + (t & 1) * L::kStage;
    float s[R];
    score_tile<D, R>(stage, qs, warp, lane, s);
    softmax_tile<R>(s, lim, k0 + warp * kKeysPerWarp + (lane & 15), m, l, acc);
    if (lane < 16) {
#pragma unroll
      for (int r = 0; r < R; ++r) pw[r * kKeysPerWarp + p_slot<D>(lane)] = s[r];
    }
    __syncwarp();
    accumulate_pv<D, R, kKeysPerWarp>(stage + kTileKeys * L::kRowBytes, pw, warp, lane, acc);
    __syncthreads();  // the stage and pw are rewritten next iteration
  }

  // Per-warp state -> shared memory: l summed over the 16 key lanes, acc over the key groups.
#pragma unroll
  for (int r = 0; r < R; ++r) l[r] = group_sum<16>(l[r]);
  reduce_key_groups<D, R>(acc);
  float4* ow = reinterpret_cast<float4*>(smem);           // [kWarps][R][D / 4]
  float2* mlw = reinterpret_cast<float2*>(smem + L::kP);  // [kWarps][R]
  if (lane < D / 4) {
#pragma unroll
    for (int r = 0; r < R; ++r) ow[(warp * R + r) * (D / 4) + lane] = acc[r];
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) mlw[warp * R + r] = make_float2(m[r], l[r]);
  }
  __syncthreads();

  // Merge the warps (M = max m_w, L = sum l_w 2^(m_w - M), o = sum o_w 2^(m_w - M)) and write.
  for (int e = threadIdx.x; e < it.nrows * (D / 4); e += kThreads) {
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
    write_row<D>(p, it, r, c, M, sum, o);
  }
}

// ---- attention, variant 2: decode tiles (R <= 8) score by row with q in registers ------------
//
// Variant 1 re-reads every q value from shared memory for each key (a broadcast 16-byte load per
// 4 FMAs); variant 2 removes those loads, expecting the shared-memory pipe to be the limit at
// decode sizes. Measured on an H200 it is not faster (g_variant below has the figures): the q
// registers raise the kernel to 168 registers, which costs occupancy. Here warp w owns rows [w *
// RW, w * RW + RW) (RW = max(R / 4, 1)) for the score phase and keeps their q slices in registers:
// kZ = D / 32 lanes share a key, each summing 32 dims, so a warp scores kKP = 32 / kZ keys per pass
// and the tile in kNP passes; only K is read from shared memory. Lane mapping key = lane % kKP,
// part = lane / kKP puts 8 consecutive lanes on 8 different keys (conflict-free with the padded
// rows). The row's owner warp keeps its running max m and sum l, writes the tile's probabilities
// (relative to its new max) and the rescale factor alpha to shared memory; after a barrier every
// warp does P V for its 16 keys of the tile for all R rows exactly as in variant 1 (acc *= alpha
// first). All warps' acc of a row share the owner's max, so the final merge is a plain sum.
template <int D>
struct RowSplit {
  static constexpr int kZ = D / 32;            // lanes per key
  static constexpr int kKP = 32 / kZ;          // keys per pass: 16 (D = 64) or 8 (D = 128)
  static constexpr int kNP = kTileKeys / kKP;  // passes per tile
};

// Slot of tile key j (0..63) in a variant-2 probability row: the warps' 16-key blocks in order,
// each permuted by p_slot.
template <int D>
__device__ __forceinline__ int tile_p_slot(int j) {
  return (j & ~(kKeysPerWarp - 1)) + p_slot<D>(j & (kKeysPerWarp - 1));
}

// s[rw][ps] = q_row . k for key ps * kKP + lane % kKP of the tile (every lane of the key's group
// ends with the full sum).
template <int D, int RW>
__device__ __forceinline__ void score_rows(const unsigned char* ks, const float (&qr)[RW][32],
                                           int lane, float (&s)[RW][RowSplit<D>::kNP]) {
  using S = RowSplit<D>;
  const int key = lane % S::kKP, part = lane / S::kKP;
#pragma unroll
  for (int ps = 0; ps < S::kNP; ++ps) {
    const unsigned char* krow = ks + (ps * S::kKP + key) * row_bytes(D) + part * 64;
    float x[RW];
#pragma unroll
    for (int rw = 0; rw < RW; ++rw) x[rw] = 0.0f;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float kf[8];
      unpack8(*reinterpret_cast<const uint4*>(krow + c * 16), kf);
#pragma unroll
      for (int rw = 0; rw < RW; ++rw) {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[rw] = fmaf(qr[rw][c * 8 + e], kf[e], x[rw]);
      }
    }
#pragma unroll
    for (int rw = 0; rw < RW; ++rw) {
      for (int o = S::kKP; o < 32; o <<= 1) x[rw] += __shfl_xor_sync(0xFFFFFFFFu, x[rw], o);
      s[rw][ps] = x[rw];
    }
  }
}

// Online softmax of the owner warp's rows over the whole tile: masks keys at or past lim, updates
// m and this lane's share of l (its kNP keys; the kZ lanes of a key hold the same values), returns
// the rescale factor and leaves the probabilities 2^(s - m_new) in s.
template <int D, int RW>
__device__ __forceinline__ void softmax_rows(float (&s)[RW][RowSplit<D>::kNP], const int (&lim)[RW],
                                             int k0, int lane, float (&m)[RW], float (&l)[RW],
                                             float (&alpha)[RW]) {
  using S = RowSplit<D>;
  const int key = lane % S::kKP;
#pragma unroll
  for (int rw = 0; rw < RW; ++rw) {
    float mx = -INFINITY;
#pragma unroll
    for (int ps = 0; ps < S::kNP; ++ps) {
      s[rw][ps] = k0 + ps * S::kKP + key < lim[rw] ? s[rw][ps] : -INFINITY;
      mx = fmaxf(mx, s[rw][ps]);
    }
    const float m_new = fmaxf(m[rw], group_max<S::kKP>(mx));
    const float m_ref = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: all weights 0
    alpha[rw] = exp2f(m[rw] - m_ref);
    float sum = 0.0f;
#pragma unroll
    for (int ps = 0; ps < S::kNP; ++ps) {
      s[rw][ps] = exp2f(s[rw][ps] - m_ref);
      sum += s[rw][ps];
    }
    l[rw] = fmaf(l[rw], alpha[rw], sum);
    m[rw] = m_new;
  }
}

template <int D, int R>
__global__ void __launch_bounds__(kThreads) paged_attn_bf16_rows_kernel(const AttnParams p) {
  static_assert(R <= 2 * kWarps, "variant 2 keeps at most 2 rows of q per warp in registers");
  constexpr int RW = R >= kWarps ? R / kWarps : 1;
  using L = Layout<D, R>;
  using S = RowSplit<D>;
  extern __shared__ __align__(16) unsigned char smem[];
  Item it;
  if (!decode_item<R>(p, it)) return;
  const int32_t* pages = p.page_indices + p.page_indptr[it.b];
  load_kv_tile<D>(smem, p, pages, it.g, it.key_begin, it.key_end);
  cp_async_commit();
  float* qs = reinterpret_cast<float*>(smem + L::kQ);
  load_q<D, R>(qs, p, it);
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r0 = warp * RW;    // first row this warp scores
  const bool scorer = r0 < R;  // warp-uniform; false for some warps when R < 4
  const int part = lane / S::kKP;
  float qr[RW][32];
  int lim[RW];
  float m[RW], l[RW];
#pragma unroll
  for (int rw = 0; rw < RW; ++rw) {
    const int r = r0 + rw;
    const bool own = scorer && r < R;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 x = own ? *reinterpret_cast<const float4*>(qs + r * D + part * 32 + i * 4)
                           : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      qr[rw][4 * i] = x.x, qr[rw][4 * i + 1] = x.y, qr[rw][4 * i + 2] = x.z;
      qr[rw][4 * i + 3] = x.w;
    }
    lim[rw] = own ? row_limit(p, it, r) : it.key_begin;
    m[rw] = -INFINITY;
    l[rw] = 0.0f;
  }
  float4 acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float* prob = reinterpret_cast<float*>(smem + L::kP);         // [R][kTileKeys]
  float* alpha_s = reinterpret_cast<float*>(smem + L::kAlpha);  // [R]

  const int n_tiles = (it.key_end - it.key_begin + kTileKeys - 1) / kTileKeys;
  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = it.key_begin + t * kTileKeys;
    if (t + 1 < n_tiles) {  // prefetch the next tile into the other stage
      load_kv_tile<D>(smem + ((t + 1) & 1) * L::kStage, p, pages, it.g, k0 + kTileKeys, it.key_end);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile visible to every warp
    const unsigned char* stage = smem + (t & 1) * L::kStage;
    if (scorer) {
      float s[RW][S::kNP], alpha[RW];
      score_rows<D, RW>(stage, qr, lane, s);
      softmax_rows<D, RW>(s, lim, k0, lane, m, l, alpha);
#pragma unroll
      for (int rw = 0; rw < RW; ++rw) {
        if (r0 + rw >= R) continue;
        if (lane < S::kKP) {
#pragma unroll
          for (int ps = 0; ps < S::kNP; ++ps)
            prob[(r0 + rw) * kTileKeys + tile_p_slot<D>(ps * S::kKP + lane)] = s[rw][ps];
        }
        if (lane == 0) alpha_s[r0 + rw] = alpha[rw];
      }
    }
    __syncthreads();  // probabilities and rescale factors visible to every warp
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = f4_scale(acc[r], alpha_s[r]);
    accumulate_pv<D, R, kTileKeys>(stage + kTileKeys * L::kRowBytes, prob + warp * kKeysPerWarp,
                                   warp, lane, acc);
    __syncthreads();  // the stage, prob and alpha are rewritten next iteration
  }

  reduce_key_groups<D, R>(acc);
  float4* ow = reinterpret_cast<float4*>(smem);           // [kWarps][R][D / 4]
  float2* mls = reinterpret_cast<float2*>(smem + L::kP);  // [R] (max, sum) from the row owners
  if (lane < D / 4) {
#pragma unroll
    for (int r = 0; r < R; ++r) ow[(warp * R + r) * (D / 4) + lane] = acc[r];
  }
  if (scorer) {
#pragma unroll
    for (int rw = 0; rw < RW; ++rw) {
      const float sum = group_sum<S::kKP>(l[rw]);
      if (lane == 0 && r0 + rw < R) mls[r0 + rw] = make_float2(m[rw], sum);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < it.nrows * (D / 4); e += kThreads) {
    const int r = e / (D / 4), c = e % (D / 4);
    float4 o = ow[r * (D / 4) + c];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 a = ow[(w * R + r) * (D / 4) + c];
      o = make_float4(o.x + a.x, o.y + a.y, o.z + a.z, o.w + a.w);
    }
    const float2 ml = mls[r];
    write_row<D>(p, it, r, c, ml.x, ml.y, o);
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

// Splits holding keys of output row `row` (token i = row / Hq): 0 .. pos / chunk.
__device__ __forceinline__ int valid_splits(const int32_t* cu_q, const int32_t* kv_lens, int B,
                                            int Hq, int64_t row, int chunk, int splits) {
  const int i = int(row / Hq);
  const int b = seq_of_row(cu_q, B, i);
  const int pos = kv_lens[b] - (cu_q[b + 1] - cu_q[b]) + (i - cu_q[b]);
  return min(splits, pos / chunk + 1);
}

constexpr int kCombineThreads = 256;
constexpr int kMaxSplits = 512;

// One CTA per (token, head) row (formula at the top of the file). The weights 2^(m_s - M) go to
// shared memory once; thread t sums column t % D4 over the splits t / D4, t / D4 +
// kCombineThreads / D4, ... (many loads in flight), then the split groups are added. An earlier
// warp-per-row combine walking the splits serially: batch-1 decode at 4k-32k keys took 19-43 us
// with it and 14-32 us with this one (H200, measured together with variant 2's kernel).
__global__ void __launch_bounds__(kCombineThreads)
    split_combine_cta_kernel(const float4* part_o, const float2* part_ml, const int32_t* cu_q,
                             const int32_t* kv_lens, int B, int T, int Hq, int D4, int chunk,
                             int splits, float4* out) {
  __shared__ float wts[kMaxSplits];
  __shared__ float red[kCombineThreads / 32];
  __shared__ float4 cols[kCombineThreads];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t rows = int64_t(T) * Hq, row = blockIdx.x;
  const int n = valid_splits(cu_q, kv_lens, B, Hq, row, chunk, splits);
  float M = -INFINITY;
  for (int s = tid; s < n; s += kCombineThreads) M = fmaxf(M, part_ml[s * rows + row].x);
  M = warp_max(M);
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = red[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) M = fmaxf(M, red[w]);  // finite: split 0
  __syncthreads();                                                      // red is reused below
  float sum = 0.0f;
  for (int s = tid; s < n; s += kCombineThreads) {
    const float2 ml = part_ml[s * rows + row];
    const float w = exp2f(ml.x - M);
    wts[s] = w;
    sum = fmaf(ml.y, w, sum);
  }
  sum = warp_sum(sum);
  if (lane == 0) red[warp] = sum;
  __syncthreads();  // also publishes wts
  sum = 0.0f;
  for (int w = 0; w < kCombineThreads / 32; ++w) sum += red[w];
  const int groups = kCombineThreads / D4, c = tid % D4, grp = tid / D4;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (grp < groups) {
#pragma unroll 4
    for (int s = grp; s < n; s += groups) o = f4_axpy(wts[s], part_o[(s * rows + row) * D4 + c], o);
  }
  cols[tid] = o;
  __syncthreads();
  if (tid < D4) {
    for (int g = 1; g < groups; ++g) {
      const float4 a = cols[g * D4 + tid];
      o = make_float4(o.x + a.x, o.y + a.y, o.z + a.z, o.w + a.w);
    }
    out[row * D4 + tid] = f4_scale(o, 1.0f / sum);
  }
}

// ---- host side ----------------------------------------------------------------------------------

// Decode kernel variant (set_paged_attention_bf16_variant). 1 is the default: on an H200 it took
// 32.7 us against variant 2's 42.3 us for batch-256 decode at 384 keys with 14/2/64 heads (variant
// 2 needs 168 registers, so 3 instead of 4 CTAs per SM and a second wave), and 67.1 vs 64.4 us
// with 12/2/128 heads (both 3 CTAs per SM by shared memory).
int g_variant = 1;

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
    const int64_t want =
        std::min({(2 * sms + pl.items - 1) / pl.items, kv / kMinChunk, int64_t(kMaxSplits)});
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

// Sets the kernel's dynamic shared memory limit once per instantiation, then launches it.
template <typename Kernel>
void launch(Kernel kernel, int smem_bytes, const AttnParams& p, const Plan& pl) {
  const dim3 grid(unsigned(pl.items), unsigned(pl.splits));
  kernel<<<grid, kThreads, smem_bytes, stream()>>>(p);
  GYRE_CUDA_LAUNCHED("paged_attention_bf16_fwd");
}

template <int D, int R>
void launch_attn(const AttnParams& p, const Plan& pl) {
  constexpr bool kRowSplit = R <= 2 * kWarps;  // variant 2 exists for decode-sized tiles
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(paged_attn_bf16_kernel<D, R>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Layout<D, R>::kBytes));
    if constexpr (kRowSplit)
      GYRE_CUDA_CHECK(cudaFuncSetAttribute(paged_attn_bf16_rows_kernel<D, R>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Layout<D, R>::kBytes));
    return true;
  }();
  (void)attr;
  if constexpr (kRowSplit) {
    if (g_variant == 2)
      return launch(paged_attn_bf16_rows_kernel<D, R>, Layout<D, R>::kBytes, p, pl);
  }
  launch(paged_attn_bf16_kernel<D, R>, Layout<D, R>::kBytes, p, pl);
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

void launch_combine(const AttnParams& p, const Plan& pl, const int32_t* cu_q,
                    const int32_t* kv_lens, int64_t B, int64_t D) {
  const int64_t rows = int64_t(p.T) * p.Hq;
  split_combine_cta_kernel<<<unsigned(rows), kCombineThreads, 0, stream()>>>(
      reinterpret_cast<const float4*>(p.part_o), p.part_ml, cu_q, kv_lens, int(B), p.T, p.Hq,
      int(D / 4), pl.chunk, pl.splits, reinterpret_cast<float4*>(p.out));
  GYRE_CUDA_LAUNCHED("paged_attention_bf16_combine");
}

}  // namespace

void set_paged_attention_bf16_variant(int variant) {
  if (variant != 1 && variant != 2)
    throw Error(ErrorKind::invalid_argument,
                "paged attention bf16 variant must be 1 or 2, got " + std::to_string(variant));
  g_variant = variant;
}
int paged_attention_bf16_variant() { return g_variant; }

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
  if (need > 0) launch_combine(p, pl, cu_seqlens_q, kv_lens, B, D);
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
