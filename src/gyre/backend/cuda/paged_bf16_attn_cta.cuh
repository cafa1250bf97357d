// The CTA body of the bf16 paged attention (paged_bf16_attention.cu's file comment says what a CTA
// does, its layout and its numerics): everything device-side that paged_bf16_attention.cu's kernels
// run, in a header so that the batch-1 decode stack (decode_stack.cu) runs the very same CTAs as
// virtual blocks of its persistent kernel. attn_cta takes the CTA's block coordinates as arguments
// (the kernels pass blockIdx.x / blockIdx.y) and needs kThreads threads; nothing else about it
// depends on how it was launched (its pdl_wait / pdl_trigger are no-ops in a launch without
// programmatic dependent launch).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/paged_bf16_common.cuh"
#include "gyre/backend/cuda/rope_rotate.cuh"

namespace gyre::cuda::paged_bf16_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeysPerWarp = 16;                  // keys of a tile one warp scores (lane pairs)
constexpr int kTileKeys = kWarps * kKeysPerWarp;  // keys per shared-memory stage
static_assert(kTileKeys == kPlanTileKeys && kPlanMaxRows == 16, "paged_bf16_plan.h's sizes");

// The two bf16 of a 32-bit word (little endian: the lower address is the low half), widened.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }

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
  int splits;       // key chunks per item (grid.y); the chunk is split_chunk(kv_len, splits, ..)
  int min_chunk;    // SplitPlan::min_chunk
  float qscale;     // scale * log2 e
  float* out;       // [T, Hq, D], written directly when part_o is null
  float* part_o;    // split partials [splits, T * Hq, D] (unnormalised), or null
  float2* part_ml;  // [splits, T * Hq] (max in log2 units, sum)
};

// The fused decode's extra kernel parameters (rope_paged_attn_bf16_kernel; q is then unrotated).
// A second kernel argument rather than more AttnParams fields: ptxas handled a parameter struct
// past 128 bytes worse (the D = 128, R = 8 kernel's spill stores went from 36 to 92-104 bytes with
// the same code), and the plain kernel keeps its parameter block.
struct RopeAttnParams {
  const float* k_new;        // [T, Hkv, D] the new tokens' keys (unrotated)
  const float* v_new;        // [T, Hkv, D] their values
  const int32_t* positions;  // [T] RoPE positions
  const float* cos;          // [P, D/2] RoPE tables
  const float* sin;          //
  const int32_t* slots;      // [T] cache slot of each new token (negative: write nothing)
  uint16_t* k_cache_w;       // k_cache / v_cache, written by the CTA holding the new key
  uint16_t* v_cache_w;       //
  // Nonzero: the cache's keys before the new token were written before the chain this launch
  // belongs to began (the launch is captured into a CUDA graph of one decode step), so a CTA may
  // copy its first tile before pdl_wait. See attn_cta.
  int old_keys_settled = 0;
};

// A K/V row in shared memory: D bf16 padded by 16 bytes, so that 8 lanes reading the same 16-byte
// chunk of 8 different keys hit 8 different bank groups (row r starts at bank group r mod 8).
constexpr int row_bytes(int D) { return D * 2 + 16; }

// Dynamic shared memory of one CTA, in bytes from the start:
//   [0, 2 * kStage)   two K/V stages: K rows [kTileKeys][row_bytes], then V rows alike;
//                     after the key loop: the warps' partial outputs [kWarps][R][D] f32
//   [kQ, kP)          q rows [R][D] f32, pre-scaled by scale * log2 e (zeros past nrows)
//   [kP, kBytes)      the tile's probabilities, per warp [kWarps][R][kKeysPerWarp] f32 (keys
//                     permuted by p_slot); after the key loop: the warps' (max, sum) float2s
template <int D, int R>
struct Layout {
  static constexpr int kRowBytes = row_bytes(D);
  static constexpr int kStage = 2 * kTileKeys * kRowBytes;
  static constexpr int kQ = 2 * kStage;
  static constexpr int kP = kQ + R * D * 4;
  static constexpr int kBytes = kP + R * kTileKeys * 4;
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
__device__ __forceinline__ void unpack8(const uint4& raw, float kf[8]) {
  kf[0] = bf16_lo(raw.x), kf[1] = bf16_hi(raw.x), kf[2] = bf16_lo(raw.y), kf[3] = bf16_hi(raw.y);
  kf[4] = bf16_lo(raw.z), kf[5] = bf16_hi(raw.z), kf[6] = bf16_lo(raw.w), kf[7] = bf16_hi(raw.w);
}

// One CTA's work: flattened rows [f0, f0 + nrows) (f = token * G + head in group) of sequence b,
// kv head g, over keys [key_begin, key_end).
struct Item {
  int b, g, split, q0, f0, nrows, first_pos, key_begin, key_end;
  int direct_rows;  // CTA rows [0, direct_rows) are written to `out` finished (see write_row)
};

// Decodes the CTA's block coordinates (bx, by) (grid.x = B * Hkv * row_tiles with the longest
// causal tiles first, grid.y = split); false when the CTA has nothing to do (tile past the
// sequence's rows, or a chunk past every row's position).
template <int R>
__device__ __forceinline__ bool decode_item(const AttnParams& p, Item& it, unsigned bx,
                                            unsigned by) {
  const int tile = p.row_tiles - 1 - int(bx % unsigned(p.row_tiles));
  const int bg = int(bx / unsigned(p.row_tiles));
  it.g = bg % p.Hkv, it.b = bg / p.Hkv, it.split = int(by);
  it.q0 = p.cu_q[it.b];
  const int nq = p.cu_q[it.b + 1] - it.q0;
  it.f0 = tile * R;
  if (it.f0 >= nq * p.G) return false;
  it.nrows = min(R, nq * p.G - it.f0);
  const int kv_len = p.kv_lens[it.b];
  it.first_pos = kv_len - nq;  // kv position of the sequence's first query
  const int chunk = split_chunk(kv_len, p.splits, p.min_chunk);
  // split < kMaxSplits and chunk <= kv_len + kTileKeys - 1 with kv_len <= 2^30 (host-checked):
  // split * chunk < 2^31 whenever it is <= the last row's position; larger products only arise
  // for chunks past every position, whose CTAs leave here — compare in 64 bits.
  const int64_t begin = int64_t(it.split) * chunk;
  const int row_end = it.first_pos + (it.f0 + it.nrows - 1) / p.G + 1;
  if (begin >= row_end) return false;
  it.key_begin = int(begin);
  it.key_end = min(row_end, it.key_begin + chunk);
  // Rows finished here: all of them without a split; with one, split 0's rows at positions below
  // the chunk (the combine skips those), i.e. the r with first_pos + (f0 + r) / G < chunk, that is
  // r < (chunk - first_pos) * G - f0 (positions grow with r). One int instead of keeping the chunk
  // and first_pos live through the key loop (registers decide the CTAs per SM here).
  int64_t direct = 0;
  if (p.part_o == nullptr)
    direct = R;
  else if (it.split == 0)
    direct = max(int64_t(0), min(int64_t(R), int64_t(chunk - it.first_pos) * p.G - it.f0));
  it.direct_rows = int(direct);
  return true;
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

// load_q for the fused decode: the CTA's q rows (token q0, unrotated in p.q) rotated at position
// pos, then pre-scaled. Per pair (i, i + D/2): rope_kv_write.cu's rope_rotate_pair on the same
// table entries (cos/sin[pos * D/2 + i]), so the rotated values are bitwise those that kernel
// stores in q, and the scale is load_q's multiply on them.
template <int D, int R>
__device__ __forceinline__ void load_q_rope(float* qs, const AttnParams& p,
                                            const RopeAttnParams& rp, const Item& it, int pos) {
  constexpr int kHalf = D / 2, kQuads = D / 8;  // float4s in half a row
  const float* cs = rp.cos + int64_t(pos) * kHalf;
  const float* sn = rp.sin + int64_t(pos) * kHalf;
  for (int e = threadIdx.x; e < R * kQuads; e += kThreads) {
    const int r = e / kQuads, c = e % kQuads;
    float4 lo = make_float4(0.0f, 0.0f, 0.0f, 0.0f), hi = lo;
    if (r < it.nrows) {
      const float4* qr = reinterpret_cast<const float4*>(p.q + out_row(p, it, r) * D);
      const float4 a = qr[c], b = qr[c + kQuads];
      float ao[4], bo[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        rope_detail::rope_rotate(f4_get(a, j), f4_get(b, j), cs[4 * c + j], sn[4 * c + j], ao[j],
                                 bo[j]);
      lo = f4_scale(make_float4(ao[0], ao[1], ao[2], ao[3]), p.qscale);
      hi = f4_scale(make_float4(bo[0], bo[1], bo[2], bo[3]), p.qscale);
    }
    reinterpret_cast<float4*>(qs + r * D)[c] = lo;
    reinterpret_cast<float4*>(qs + r * D)[c + kQuads] = hi;
  }
}

// The fused decode's cache write for (token q0, kv head g): rope(k_new) and v_new rounded to bf16
// at cache slot `slot` (>= 0) — rope_kv_write.cu's k/v items: the same rotation of the same pair,
// the same rounding, the same element offsets. Threads [0, D/2) take the key's pairs, [D/2, D) the
// value's. The caller __syncthreads before any thread loads the tile holding this key — unless it
// passes that tile's rows for the key: ks_row / vs_row (shared memory, or null) then receive the
// same bf16 bits as the cache, and the tile was copied without this key's row (load_kv_tile's
// skip_pos), so nothing in the CTA reads the key back from global memory.
template <int D>
__device__ __forceinline__ void write_new_kv(const AttnParams& p, const RopeAttnParams& rp,
                                             const Item& it, int pos, int slot,
                                             unsigned char* ks_row = nullptr,
                                             unsigned char* vs_row = nullptr) {
  static_assert(D <= kThreads, "one thread per key pair and per value pair");
  constexpr int kHalf = D / 2;
  const int64_t src = (int64_t(it.q0) * p.Hkv + it.g) * D;
  const int64_t dst = (int64_t(slot) * p.Hkv + it.g) * D;
  const int i = threadIdx.x;
  if (i < kHalf) {
    const int64_t row = int64_t(pos) * kHalf + i;
    float ka, kb;
    rope_detail::rope_rotate(rp.k_new[src + i], rp.k_new[src + i + kHalf], rp.cos[row], rp.sin[row],
                             ka, kb);
    const uint16_t a = uint16_t(to_bf16_bits(ka)), b = uint16_t(to_bf16_bits(kb));
    rp.k_cache_w[dst + i] = a;
    rp.k_cache_w[dst + i + kHalf] = b;
    if (ks_row) {
      reinterpret_cast<uint16_t*>(ks_row)[i] = a;
      reinterpret_cast<uint16_t*>(ks_row)[i + kHalf] = b;
    }
  } else if (i < D) {
    const int j = i - kHalf;
    const uint16_t a = uint16_t(to_bf16_bits(rp.v_new[src + j]));
    const uint16_t b = uint16_t(to_bf16_bits(rp.v_new[src + j + kHalf]));
    rp.v_cache_w[dst + j] = a;
    rp.v_cache_w[dst + j + kHalf] = b;
    if (vs_row) {
      reinterpret_cast<uint16_t*>(vs_row)[j] = a;
      reinterpret_cast<uint16_t*>(vs_row)[j + kHalf] = b;
    }
  }
}

// Dims [4c, 4c + 4) of CTA row r: out = o / sum, or the split partial (o, M, sum). Split 0 also
// finishes the rows whose keys all lie in its chunk (position < chunk; the combine skips them).
template <int D>
__device__ __forceinline__ void write_row(const AttnParams& p, const Item& it, int r, int c,
                                          float M, float sum, const float4& o) {
  const int64_t row = out_row(p, it, r);
  if (r < it.direct_rows) {
    // sum > 0: the row sees key 0, which is in this chunk.
    reinterpret_cast<float4*>(p.out)[row * (D / 4) + c] = f4_scale(o, 1.0f / sum);
  } else {
    const int64_t prow = int64_t(it.split) * p.T * p.Hq + row;
    reinterpret_cast<float4*>(p.part_o)[prow * (D / 4) + c] = o;
    if (c == 0) p.part_ml[prow] = make_float2(M, sum);
  }
}

// Copies keys [k0, k0 + kTileKeys) of (sequence, kv head g) into a stage; keys at or past key_end
// are zero-filled. Consecutive threads take consecutive 16-byte chunks of a row (coalesced). The
// row of key skip_pos (if in the tile) is left alone: the caller stores it (write_new_kv's rows).
template <int D>
__device__ __forceinline__ void load_kv_tile(unsigned char* stage, const AttnParams& p,
                                             const int32_t* pages, int g, int k0, int key_end,
                                             int skip_pos = -1) {
  constexpr int kChunks = D / 8;
  constexpr int kRowBytes = row_bytes(D);
  unsigned char* ks = stage;
  unsigned char* vs = stage + kTileKeys * kRowBytes;
  for (int e = threadIdx.x; e < kTileKeys * kChunks; e += kThreads) {
    const int j = e / kChunks, c = e % kChunks;
    const int pos = k0 + j;
    if (pos == skip_pos) continue;
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

// ---- attention: every warp scores its 16 keys of a tile for all R rows -------------------------

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

// Decode tiles (R <= 8) must keep 4 CTAs per SM: at most 128 registers a thread. Left to
// itself ptxas gave this kernel 149-161 registers once the split bookkeeping grew (3 CTAs per SM,
// a second wave: batch-256 decode with 14/2/64 heads went from 33 to 42 us on an H200); R = 16
// (prefill) needs ~240 and runs 2 CTAs per SM, so it keeps the plain bound. kRope: the fused
// decode (see the top of this file; one new token per sequence, Hq / Hkv <= R); its extra work
// happens before the key loop, so the loop's registers are those of the plain kernel. One body for
// both kernels (rp is only read when kRope).
// kBarrier: 0 synchronises the CTA with __syncthreads (the kernels below); n > 0 with named
// barrier n over kThreads threads, for a caller whose CTA is larger and runs the attention on its
// first kThreads threads (decode_stack.cu).
template <int kBarrier>
__device__ __forceinline__ void attn_sync() {
  if constexpr (kBarrier == 0)
    __syncthreads();
  else
    asm volatile("bar.sync %0, %1;" ::"n"(kBarrier), "n"(kThreads) : "memory");
}

template <int D, int R, bool kRope, int kBarrier = 0>
__device__ __forceinline__ void attn_cta(const AttnParams& p, const RopeAttnParams& rp, unsigned bx,
                                         unsigned by) {
  extern __shared__ __align__(16) unsigned char smem[];
  using L = Layout<D, R>;
  Item it;
  if (!decode_item<R>(p, it, bx, by))
    return;  // the index arrays are not written by the previous kernel
  // The fused decode's token: its RoPE position and cache slot are step index arrays as well
  // (uploaded by a copy, never written by a kernel of the chain), read before the wait.
  int pos = 0, slot = -1;
  if constexpr (kRope) pos = rp.positions[it.q0], slot = rp.slots[it.q0];
  const int32_t* pages = p.page_indices + p.page_indptr[it.b];  // index arrays, as above
  // kRope: the CTA holding the new key (position first_pos = kv_len - 1, the end of its range;
  // row tile 0, the only one) writes it unless the row is padding (slot < 0). CTA-uniform. The
  // first tile goes out before the RoPE work — when it holds the new key (a writer
  // whose range is one tile: every CTA of a split batch-1 decode with 64-key chunks, and short
  // contexts) without that key's row (skip_pos), which write_new_kv then stores into the stage
  // itself. The writer used to store the key, __syncthreads, and only then copy its tile: two
  // dependent memory round trips more than the other CTAs on the step's critical path.
  bool writes = false, first_loaded = false;
  int skip_pos = -1;
  if constexpr (kRope) {
    writes = slot >= 0 && it.f0 == 0 && it.key_end == it.first_pos + 1;
    if (writes && it.key_end - it.key_begin <= kTileKeys) skip_pos = it.first_pos;
    // In a captured decode step (old_keys_settled) that tile is copied even before pdl_wait, so
    // its latency overlaps the q/k/v projection still running (session 33, H200: the 1.5B batch-1
    // decode 1.774 -> 1.737 ms a token). pdl.cuh's invariant 1 holds: the keys copied are all
    // before the new token (the early copy skips it), and those were written by earlier
    // steps — earlier graph launches or the prefill, which a graph launch waits for — never by a
    // kernel of this graph (within one step only this kernel writes this layer's cache, and only
    // the new key). Outside a capture (eager calls, tests, a prefill's writes possibly still
    // running under PDL) the copy waits as before. Only when the bytes are copied moves.
    if (rp.old_keys_settled) {
      load_kv_tile<D>(smem, p, pages, it.g, it.key_begin, it.key_end, skip_pos);
      cp_async_commit();
      first_loaded = true;
    }
  }
  // Under programmatic dependent launch (pdl.cuh) the previous kernel — the RoPE + KV write of
  // this step's keys, or with kRope the q/k/v projection — may still run: wait before reading q,
  // k/v or the cache. CTAs with no keys have returned without waiting; every call has CTAs with
  // keys, which wait (pdl.cuh's invariant 3).
  pdl_wait();
  int lim[R];
#pragma unroll
  for (int r = 0; r < R; ++r) lim[r] = row_limit(p, it, r);

  float* qs = reinterpret_cast<float*>(smem + L::kQ);
  if constexpr (kRope) {
    if (!first_loaded) {
      load_kv_tile<D>(smem, p, pages, it.g, it.key_begin, it.key_end, skip_pos);
      cp_async_commit();
    }
    load_q_rope<D, R>(qs, p, rp, it, pos);
    if (writes && skip_pos >= 0) {
      // The new key's row of the first (only) tile, in stage 0; the loop's barrier before the
      // scores makes these stores visible to every warp. Other threads' cp.async copies never
      // touch the row (skipped), so the two cannot race.
      unsigned char* ks_row = smem + (skip_pos - it.key_begin) * L::kRowBytes;
      write_new_kv<D>(p, rp, it, pos, slot, ks_row, ks_row + kTileKeys * L::kRowBytes);
    } else if (writes) {
      write_new_kv<D>(p, rp, it, pos, slot);
      // The stores are visible to every thread of the CTA before any of them copies the tile
      // holding the new key (the last one, prefetched in the loop below).
      attn_sync<kBarrier>();
    }
  } else {
    load_kv_tile<D>(smem, p, pages, it.g, it.key_begin, it.key_end);
    cp_async_commit();
    load_q<D, R>(qs, p, it);
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
    attn_sync<kBarrier>();  // this tile (and q) visible to every warp
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
    attn_sync<kBarrier>();  // the stage and pw are rewritten next iteration
  }

  // The combine (when split) may start launching now; it waits for this grid before reading.
  pdl_trigger();
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
  attn_sync<kBarrier>();

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

}  // namespace gyre::cuda::paged_bf16_detail
