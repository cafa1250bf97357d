// The fused RoPE + attention's kernels and glue (rope_attention_bf16.h: the bitwise contract).
//
// Both kernels give each block whole tokens (grid-stride over tokens): the token's table rows are
// read once, and its items — (head, pair) of q, then of k, then of v (or dq, dk, dv) — are spread
// over the block's threads, consecutive threads on consecutive pairs of one head (coalesced). A q/k
// item is exactly one iteration of rows.cu's rope kernel: pair p of head h is (x[p], x[p + D/2]) in
// row (t, h), rotated by the table entries cos/sin[positions[t] * D/2 + p] (rope_item's table_row)
// through rope_rotate; a v item moves the same two elements without rotation.
//
// The packed variant of the backward's kernel (rope_inverse_dqkv_packed_kernel) works on one head's
// columns over a 128-row chunk: the items as above, eight pairs at a time with 16-byte accesses,
// staged in shared memory, so that one thread per column can also sum it over the chunk, rows in
// order, the way column_sums_add does (column_sums.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/column_sums.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/rope_attention_bf16.h"
#include "gyre/backend/cuda/rope_rotate.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

using rope_detail::rope_rotate;

constexpr int kThreads = 256;

// cuda::f32_to_bf16's rounding (elementwise.cu) and bf16_to_f32's widening, element by element.
__device__ __forceinline__ uint16_t round_bf16(float x) { return uint16_t(bf16_rn_bits(x)); }
__device__ __forceinline__ float widen_bf16(uint16_t h) {
  return __bfloat162float(__ushort_as_bfloat16(h));
}

// Where item j of a token lies: which tensor (0 = q, 1 = k, 2 = v), and the element offset of its
// pair's first half within that tensor. kHalf = D/2 is a compile-time constant (32 or 64), so the
// head / pair split is a shift and a mask.
template <int kHalf>
struct TokenItem {
  int which;
  int64_t off;
  int p;
  __device__ __forceinline__ TokenItem(int64_t t, int j, int Hq, int Hkv) {
    const int nq = Hq * kHalf, nk = Hkv * kHalf;
    which = j < nq ? 0 : j < nq + nk ? 1 : 2;
    const int jj = which == 0 ? j : which == 1 ? j - nq : j - nq - nk;
    const int h = jj / kHalf;
    p = jj % kHalf;
    off = (t * (which == 0 ? Hq : Hkv) + h) * (2 * kHalf) + p;
  }
};

// A warp per token, kWarpsPerBlock tokens a block (session 18: a block per token gave each of its
// 256 threads 2-3 items behind the positions -> table load chain, 42 us for ~29 us of bytes at
// 4 x 4096 tokens of Qwen2.5-0.5B). The items and their arithmetic are unchanged, so the bits are.
constexpr int kWarpsPerBlock = kThreads / 32;

template <int kHalf>
__global__ void __launch_bounds__(kThreads)
    rope_qkv_bf16_kernel(const float* q, const float* k, const float* v, int64_t T, int Hq, int Hkv,
                         const int32_t* positions, const float* cos, const float* sin, uint16_t* qb,
                         uint16_t* kb, uint16_t* vb) {
  const int items = (Hq + 2 * Hkv) * kHalf;
  const int lane = int(threadIdx.x & 31);
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t t = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); t < T; t += stride) {
    const int64_t row = int64_t(positions[t]) * kHalf;  // rope_item's table row, less the pair
#pragma unroll 2
    for (int j = lane; j < items; j += 32) {
      const TokenItem<kHalf> it(t, j, Hq, Hkv);
      if (it.which == 2) {
        vb[it.off] = round_bf16(v[it.off]);
        vb[it.off + kHalf] = round_bf16(v[it.off + kHalf]);
        continue;
      }
      const float* x = it.which == 0 ? q : k;
      uint16_t* xb = it.which == 0 ? qb : kb;
      float a, b;  // rope_kernel's forward rotation of the pair, then f32_to_bf16's rounding
      rope_rotate(x[it.off], x[it.off + kHalf], cos[row + it.p], sin[row + it.p], a, b);
      xb[it.off] = round_bf16(a);
      xb[it.off + kHalf] = round_bf16(b);
    }
  }
}

// The same items four pairs at a time, for 16-byte aligned q/k/v and tables and 8-byte aligned
// outputs: lane work unit j covers pairs 4j' .. 4j' + 3 of one head (kHalf % 4 == 0), so each
// half of the pair group is one float4 load, the table entries one float4 each, and each half's
// four bf16 one 8-byte store — a quarter of the scalar kernel's memory instructions (session 22:
// 70 us for ~48 us of bytes at 4 x 4096 tokens of Qwen2.5-1.5B). Every element goes through the
// scalar kernel's expression (rope_rotate, then round_bf16), so the bits are the same.
template <int kHalf>
__global__ void __launch_bounds__(kThreads)
    rope_qkv_bf16_vec4_kernel(const float* __restrict__ q, const float* __restrict__ k,
                              const float* __restrict__ v, int64_t T, int Hq, int Hkv,
                              const int32_t* __restrict__ positions, const float* __restrict__ cos,
                              const float* __restrict__ sin, uint16_t* __restrict__ qb,
                              uint16_t* __restrict__ kb, uint16_t* __restrict__ vb) {
  constexpr int kQuarter = kHalf / 4;  // pair groups per head
  static_assert(kHalf % 4 == 0, "pair groups of four");
  const int groups = (Hq + 2 * Hkv) * kQuarter;
  const int lane = int(threadIdx.x & 31);
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t t = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); t < T; t += stride) {
    const int64_t row = int64_t(positions[t]) * kHalf;
#pragma unroll 2
    for (int j = lane; j < groups; j += 32) {
      // Group j = 4 pairs starting at pair 4·(j % kQuarter) of head j / kQuarter (q's heads, then
      // k's, then v's): TokenItem of its first pair.
      const int hj = j / kQuarter;
      const TokenItem<kHalf> it(t, hj * kHalf + (j % kQuarter) * 4, Hq, Hkv);
      if (it.which == 2) {
        const float4 a = *reinterpret_cast<const float4*>(v + it.off);
        const float4 b = *reinterpret_cast<const float4*>(v + it.off + kHalf);
        *reinterpret_cast<uint2*>(vb + it.off) = bf16_rn_pack4(a.x, a.y, a.z, a.w);
        *reinterpret_cast<uint2*>(vb + it.off + kHalf) = bf16_rn_pack4(b.x, b.y, b.z, b.w);
        continue;
      }
      const float* x = it.which == 0 ? q : k;
      uint16_t* xb = it.which == 0 ? qb : kb;
      const float4 a = *reinterpret_cast<const float4*>(x + it.off);
      const float4 b = *reinterpret_cast<const float4*>(x + it.off + kHalf);
      const float4 c = *reinterpret_cast<const float4*>(cos + row + it.p);
      const float4 s = *reinterpret_cast<const float4*>(sin + row + it.p);
      float a0, b0, a1, b1, a2, b2, a3, b3;
      rope_rotate(a.x, b.x, c.x, s.x, a0, b0);
      rope_rotate(a.y, b.y, c.y, s.y, a1, b1);
      rope_rotate(a.z, b.z, c.z, s.z, a2, b2);
      rope_rotate(a.w, b.w, c.w, s.w, a3, b3);
      *reinterpret_cast<uint2*>(xb + it.off) = bf16_rn_pack4(a0, a1, a2, a3);
      *reinterpret_cast<uint2*>(xb + it.off + kHalf) = bf16_rn_pack4(b0, b1, b2, b3);
    }
  }
}

template <int kHalf>
__global__ void rope_inverse_dqkv_kernel(const uint16_t* dqb, const uint16_t* dkb,
                                         const uint16_t* dvb, int64_t T, int Hq, int Hkv,
                                         const int32_t* positions, const float* cos,
                                         const float* sin, float* dq, float* dk, float* dv) {
  const int items = (Hq + 2 * Hkv) * kHalf;
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int64_t row = int64_t(positions[t]) * kHalf;
    for (int j = threadIdx.x; j < items; j += blockDim.x) {
      const TokenItem<kHalf> it(t, j, Hq, Hkv);
      if (it.which == 2) {
        dv[it.off] = widen_bf16(dvb[it.off]);
        dv[it.off + kHalf] = widen_bf16(dvb[it.off + kHalf]);
        continue;
      }
      const uint16_t* gb = it.which == 0 ? dqb : dkb;
      float* g = it.which == 0 ? dq : dk;
      // bf16_to_f32 (exact), then rope_kernel's inverse rotation: the angle's sine negated.
      float a, b;
      rope_rotate(widen_bf16(gb[it.off]), widen_bf16(gb[it.off + kHalf]), cos[row + it.p],
                  -sin[row + it.p], a, b);
      g[it.off] = a;
      g[it.off + kHalf] = b;
    }
  }
}

// The packed kernel's launch: the destination and the f64 partials of the members' column sums
// (part[i] [chunks, n_i], null: member i has no db).
struct PackedLaunch {
  uint16_t* dst;
  int64_t ld;
  int64_t col[3];
  double* part[3];
};

// Eight consecutive bf16 (element e in bits 16·(e % 2) of word e / 2, little-endian as in memory):
// one 16-byte access when every address is 16-byte aligned (kVec), else eight 2-byte ones — the
// same bits either way.
template <bool kVec>
__device__ __forceinline__ uint4 load8_bf16(const uint16_t* __restrict__ p) {
  if constexpr (kVec) {
    return *reinterpret_cast<const uint4*>(p);
  } else {
    return make_uint4(p[0] | uint32_t(p[1]) << 16, p[2] | uint32_t(p[3]) << 16,
                      p[4] | uint32_t(p[5]) << 16, p[6] | uint32_t(p[7]) << 16);
  }
}
__device__ __forceinline__ void widen8_bf16(const uint4 w, float (&x)[8]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int e = 0; e < 8; ++e) x[e] = widen_bf16(uint16_t(words[e / 2] >> (16 * (e % 2))));
}
// x[e] rounded by round_bf16 into p[e]: bf16_rn_pair puts its first value in the low half.
template <bool kVec>
__device__ __forceinline__ void store8_bf16(uint16_t* __restrict__ p, const float (&x)[8]) {
  if constexpr (kVec) {
    // __stwb: st.global.wb.v4, the plain store's cache policy, one 16-byte store (a plain
    // assignment was split into four 4-byte stores for one of the two calls).
    __stwb(reinterpret_cast<uint4*>(p),
           make_uint4(bf16_rn_pair(x[0], x[1]), bf16_rn_pair(x[2], x[3]), bf16_rn_pair(x[4], x[5]),
                      bf16_rn_pair(x[6], x[7])));
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) p[e] = round_bf16(x[e]);
  }
}
template <bool kVec>
__device__ __forceinline__ void load8_f32(const float* __restrict__ p, float (&x)[8]) {
  if constexpr (kVec) {
    const float4 a = *reinterpret_cast<const float4*>(p),
                 b = *reinterpret_cast<const float4*>(p + 4);
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = p[e];
  }
}
// Eight f32 into the shared tile at p (16-byte aligned) as two 16-byte stores; `first` picks which
// half goes first. A 16-byte shared store is served a quarter warp (8 lanes, 128 bytes) at a time.
// The tile's rows are multiples of 128 bytes long, so pair group g's halves always fall in the
// 16-byte bank groups 2g and 2g + 1 (mod 8) of a 128-byte line; a quarter warp holds g = 0..7
// (D 128) or g = 0..3 of two rows (D 64), so if every lane wrote its low half first, two lanes
// would share each even group. With first = bit 2 of the lane, lanes 0-3 of the quarter write
// groups 0, 2, 4, 6 and lanes 4-7 groups 1, 3, 5, 7: no conflict. Only the order of two stores to
// different addresses changes, not what is stored where.
__device__ __forceinline__ void stage8_f32(float* p, const float (&x)[8], int first) {
  const float4 lo = make_float4(x[0], x[1], x[2], x[3]), hi = make_float4(x[4], x[5], x[6], x[7]);
  float4* q = reinterpret_cast<float4*>(p);
  q[first] = first ? hi : lo;
  q[first ^ 1] = first ? lo : hi;
}

// The packed kernel's shape: a block per (head of one member, 128-row chunk); thread tid takes
// pair group g = tid % (D/16) (pairs 8g .. 8g + 7: columns 8g .. 8g + 7 and D/2 + 8g .. D/2 + 8g +
// 7 of the head) in rows tid / (D/16) + 32 j of the chunk, j < 4. So 2·D threads a block, and a
// warp's 16-byte accesses cover whole 128-byte (D 128) or 64-byte (D 64) row segments.
constexpr int kPackedRowsPerPass = 32;
constexpr int kPackedPasses = int(colsum::kRowChunk) / kPackedRowsPerPass;
static_assert(kPackedPasses * kPackedRowsPerPass == colsum::kRowChunk, "whole passes a chunk");
template <int kHalf>
constexpr int packed_threads() {
  return kPackedRowsPerPass * (kHalf / 8);
}
// The f32 tile of a whole chunk of the head: [kRowChunk][D] (64 KB at D 128).
template <int kHalf>
constexpr int packed_smem_bytes() {
  return int(colsum::kRowChunk) * 2 * kHalf * int(sizeof(float));
}

// One block per (head of one member, 128-row chunk): blockIdx.x runs over the q heads, then k's,
// then v's; blockIdx.y over the chunks (grid-stride past 65535). Two phases per chunk:
//   1. every thread loads its four rows' pair groups first (two 16-byte loads a row; all 32 KB of
//      the chunk's head in flight at once), then per row: exactly rope_inverse_dqkv_kernel's items
//      — each element widened, then for dq / dk rope_rotate with cos and -sin at positions[t]·D/2
//      + p (dv: as is), the f32 values that kernel writes — each rounded with __float2bfloat16_rn
//      (pack_bf16_kernel's conversion of those values) into the member's packed columns (two
//      16-byte stores), and kept in f32 in the shared tile;
//   2. one thread per column of the head adds the chunk's rows of the tile, in increasing row
//      order, to an f64 sum from 0.0.
// So each column's sum over the chunk is colsum_partial_kernel's, term for term and in its order,
// stored at part[chunk · n + column] as it stores it (n = H·D of the member). kVec = false runs
// the same items and sums with 2-byte accesses, for a destination, member column, ld, input or
// table that is not 16-byte aligned (same bits). Session 28: the previous layout (32-row tiles,
// one 2-byte access per element, two barriers a tile) moved 134 MB in 86 us at 1.5B's heads.
template <int kHalf, bool kVec>
__global__ void __launch_bounds__(packed_threads<kHalf>(), 768 / packed_threads<kHalf>())
    rope_inverse_dqkv_packed_kernel(const uint16_t* __restrict__ dqb,
                                    const uint16_t* __restrict__ dkb,
                                    const uint16_t* __restrict__ dvb, int64_t T, int Hq, int Hkv,
                                    const int32_t* __restrict__ positions,
                                    const float* __restrict__ cos, const float* __restrict__ sin,
                                    PackedLaunch pl) {
  constexpr int kD = 2 * kHalf, kGroups = kHalf / 8;
  static_assert(kHalf % 8 == 0, "pair groups of eight");
  extern __shared__ float4 packed_tile_storage[];  // [kRowChunk][kD] f32, 16-byte aligned
  float* const tile = reinterpret_cast<float*>(packed_tile_storage);
  const int hh = int(blockIdx.x);
  const int which = hh < Hq ? 0 : hh < Hq + Hkv ? 1 : 2;
  const int h = which == 0 ? hh : which == 1 ? hh - Hq : hh - Hq - Hkv;
  const int64_t n = int64_t(which == 0 ? Hq : Hkv) * kD;
  // Selected rather than indexed by `which`: a dynamic index would copy the parameters to local
  // memory.
  const uint16_t* __restrict__ src = (which == 0 ? dqb : which == 1 ? dkb : dvb) + int64_t(h) * kD;
  const int64_t col = which == 0 ? pl.col[0] : which == 1 ? pl.col[1] : pl.col[2];
  double* const part = which == 0 ? pl.part[0] : which == 1 ? pl.part[1] : pl.part[2];
  uint16_t* __restrict__ dst = pl.dst + col + int64_t(h) * kD;
  const bool rotate = which != 2;
  const int64_t ld = pl.ld, chunks = (T + colsum::kRowChunk - 1) / colsum::kRowChunk;
  const int tid = int(threadIdx.x);
  const int pc = 8 * (tid % kGroups), lr0 = tid / kGroups;  // first pair; first row in the chunk
  const int first = (tid >> 2) & 1;                         // stage8_f32's store order
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    const int64_t r0 = chunk * colsum::kRowChunk, r1 = min(T, r0 + colsum::kRowChunk);
    // Phase 1: the loads of all four rows before any arithmetic (memory-level parallelism).
    uint4 va[kPackedPasses], vb[kPackedPasses];
    int32_t pos[kPackedPasses];
#pragma unroll
    for (int j = 0; j < kPackedPasses; ++j) {
      const int64_t r = r0 + lr0 + kPackedRowsPerPass * j;
      va[j] = vb[j] = make_uint4(0, 0, 0, 0);
      pos[j] = 0;
      if (r < r1) {
        va[j] = load8_bf16<kVec>(src + r * n + pc);
        vb[j] = load8_bf16<kVec>(src + r * n + kHalf + pc);
        if (rotate) pos[j] = positions[r];
      }
    }
#pragma unroll
    for (int j = 0; j < kPackedPasses; ++j) {
      const int lr = lr0 + kPackedRowsPerPass * j;
      const int64_t r = r0 + lr;
      if (r >= r1) continue;
      float a[8], b[8], x[8], y[8];
      widen8_bf16(va[j], a);
      widen8_bf16(vb[j], b);
      if (rotate) {
        const int64_t row = int64_t(pos[j]) * kHalf + pc;  // the table row of pair pc
        float c[8], s[8];
        load8_f32<kVec>(cos + row, c);
        load8_f32<kVec>(sin + row, s);
#pragma unroll
        for (int e = 0; e < 8; ++e)  // the inverse rotation: the angle's sine negated
          rope_rotate(a[e], b[e], c[e], -s[e], x[e], y[e]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = a[e], y[e] = b[e];
      }
      store8_bf16<kVec>(dst + r * ld + pc, x);
      store8_bf16<kVec>(dst + r * ld + kHalf + pc, y);
      stage8_f32(tile + lr * kD + pc, x, first);
      stage8_f32(tile + lr * kD + kHalf + pc, y, first);
    }
    __syncthreads();
    // Phase 2: the column sums, rows in order (the adds are not reassociated: no fast-math).
    if (part && tid < kD) {
      const int rows = int(r1 - r0);
      double sum = 0;
#pragma unroll 8
      for (int lr = 0; lr < rows; ++lr) sum += double(tile[lr * kD + tid]);
      part[chunk * n + int64_t(h) * kD + tid] = sum;
    }
    __syncthreads();  // the tile is rewritten by the block's next chunk
  }
}

// Launches one instantiation, its dynamic shared memory limit raised once (64 KB > the default
// 48 KB at D 128).
template <int kHalf, bool kVec>
void launch_packed(dim3 grid, cudaStream_t st, const uint16_t* dqb, const uint16_t* dkb,
                   const uint16_t* dvb, int64_t T, int Hq, int Hkv, const int32_t* positions,
                   const float* cos, const float* sin, const PackedLaunch& pl) {
  constexpr auto kernel = rope_inverse_dqkv_packed_kernel<kHalf, kVec>;
  constexpr int kSmem = packed_smem_bytes<kHalf>();
  static const bool attr = [] {
    GYRE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)attr;
  kernel<<<grid, packed_threads<kHalf>(), kSmem, st>>>(dqb, dkb, dvb, T, Hq, Hkv, positions, cos,
                                                       sin, pl);
}

unsigned token_blocks(int64_t T) { return unsigned(std::min<int64_t>(T, 65535)); }

void check_head_dim(const char* what, int64_t D) {
  GYRE_CHECK(D == 64 || D == 128, "cuda::{}: head dim {} (the bf16 attention takes 64 or 128)",
             what, D);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
bool aligned8(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7) == 0; }

void copy_bf16(uint16_t* dst, const uint16_t* src, int64_t n) {
  GYRE_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * 2, cudaMemcpyDeviceToDevice, stream()));
}

// A bf16 buffer the forward writes and the attention reads: the caller's `dst` when given and
// 16-byte aligned, else pool scratch (a fresh block: aligned), copied to `dst` by finish().
struct Bf16Dest {
  std::optional<DeviceBuffer> scratch;
  uint16_t* dst;
  uint16_t* p;
  int64_t n;
  Bf16Dest(uint16_t* dst_, int64_t n_) : dst(dst_), p(dst_), n(n_) {
    if (!dst || !aligned16(dst)) p = scratch.emplace(size_t(n) * 2).as<uint16_t>();
  }
  void finish() {
    if (dst && p != dst) copy_bf16(dst, p, n);
  }
};

// The bf16 values the backward's attention reads for an operand: its bf16 buffer when 16-byte
// aligned (else a scratch copy), or its f32 values rounded into scratch — f32_to_bf16, the
// rounding attention_bwd_autocast applies.
struct Bf16Source {
  std::optional<DeviceBuffer> scratch;
  const uint16_t* p;
  Bf16Source(Bf16Operand op, int64_t n) : p(op.bf16) {
    if (op.bf16 && aligned16(op.bf16)) return;
    uint16_t* s = scratch.emplace(size_t(n) * 2).as<uint16_t>();
    if (op.bf16)
      copy_bf16(s, op.bf16, n);
    else
      f32_to_bf16(op.f32, s, n);
    p = s;
  }
};

}  // namespace

void rope_qkv_bf16(const float* q, const float* k, const float* v, int64_t T, int64_t Hq,
                   int64_t Hkv, int64_t D, const int32_t* positions, const float* cos,
                   const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb) {
  if (T == 0) return;
  check_head_dim("rope_qkv_bf16", D);
  // Four pairs per lane step where every access is aligned for it (the GEMM outputs and pool
  // buffers always are; a caller's narrowed view may not be): same bits either way.
  const bool vec4 = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(cos) &&
                    aligned16(sin) && aligned8(qb) && aligned8(kb) && aligned8(vb);
  auto* kernel = D == 64 ? (vec4 ? rope_qkv_bf16_vec4_kernel<32> : rope_qkv_bf16_kernel<32>)
                         : (vec4 ? rope_qkv_bf16_vec4_kernel<64> : rope_qkv_bf16_kernel<64>);
  const unsigned blocks =
      unsigned(std::min<int64_t>((T + kWarpsPerBlock - 1) / kWarpsPerBlock, 65535));
  kernel<<<blocks, kThreads, 0, stream()>>>(q, k, v, T, int(Hq), int(Hkv), positions, cos, sin, qb,
                                            kb, vb);
  GYRE_CUDA_LAUNCHED("rope_qkv_bf16");
}

void rope_inverse_dqkv_f32(const uint16_t* dqb, const uint16_t* dkb, const uint16_t* dvb, int64_t T,
                           int64_t Hq, int64_t Hkv, int64_t D, const int32_t* positions,
                           const float* cos, const float* sin, float* dq, float* dk, float* dv) {
  if (T == 0) return;
  check_head_dim("rope_inverse_dqkv_f32", D);
  auto* kernel = D == 64 ? rope_inverse_dqkv_kernel<32> : rope_inverse_dqkv_kernel<64>;
  kernel<<<token_blocks(T), kThreads, 0, stream()>>>(dqb, dkb, dvb, T, int(Hq), int(Hkv), positions,
                                                     cos, sin, dq, dk, dv);
  GYRE_CUDA_LAUNCHED("rope_inverse_dqkv_f32");
}

void rope_inverse_dqkv_packed(const uint16_t* dqb, const uint16_t* dkb, const uint16_t* dvb,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                              const int32_t* positions, const float* cos, const float* sin,
                              const PackedDqkv& out) {
  check_head_dim("rope_inverse_dqkv_packed", D);
  const int64_t n[3] = {Hq * D, Hkv * D, Hkv * D};
  // The members' columns, in increasing col: each inside [0, ld), none overlapping; the columns
  // between and after them are the zero padding.
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int x, int y) { return out.col[x] < out.col[y]; });
  int64_t end = 0;
  for (int i : order) {
    GYRE_CHECK(out.col[i] >= end && out.col[i] + n[i] <= out.ld,
               "cuda::rope_inverse_dqkv_packed: member {} (col {}, {} columns) overlaps another or "
               "passes ld {}",
               i, out.col[i], n[i], out.ld);
    end = out.col[i] + n[i];
  }
  if (T == 0) {
    // Nothing to write; db gets column_sums_add's sum of no rows (the same call, R = 0).
    for (int i = 0; i < 3; ++i)
      if (out.db[i]) column_sums_add(nullptr, 0, n[i], out.db[i]);
    return;
  }
  cudaStream_t st = stream();
  end = 0;
  auto zero_columns = [&](int64_t from, int64_t to) {
    if (to > from)
      GYRE_CUDA_CHECK(cudaMemset2DAsync(out.dst + from, size_t(out.ld) * 2, 0,
                                        size_t(to - from) * 2, size_t(T), st));
  };
  for (int i : order) {
    zero_columns(end, out.col[i]);
    end = out.col[i] + n[i];
  }
  zero_columns(end, out.ld);

  const int64_t chunks = colsum::chunks(T);
  int64_t part_len = 0;
  for (int i = 0; i < 3; ++i)
    if (out.db[i]) part_len += chunks * n[i];
  std::optional<DeviceBuffer> part;
  if (part_len > 0) part.emplace(size_t(part_len) * sizeof(double));
  PackedLaunch pl{out.dst, out.ld, {out.col[0], out.col[1], out.col[2]}, {}};
  for (int64_t i = 0, off = 0; i < 3; ++i)
    if (out.db[i]) {
      pl.part[i] = part->as<double>() + off;
      off += chunks * n[i];
    }
  const dim3 grid(unsigned(Hq + 2 * Hkv), unsigned(std::min<int64_t>(chunks, 65535)));
  // 16-byte accesses where every one is aligned: the inputs' and tables' rows are (H·D bf16, D/2
  // f32: multiples of 16 bytes), so their bases; the destination's rows start 16-byte aligned in
  // every member's columns when dst + col_i is and ld is a multiple of 8 (the training step's
  // pool buffers and ld: always). Same bits either way.
  bool vec = aligned16(dqb) && aligned16(dkb) && aligned16(dvb) && aligned16(cos) &&
             aligned16(sin) && out.ld % 8 == 0;
  for (int i = 0; i < 3; ++i) vec = vec && aligned16(out.dst + out.col[i]);
  const int hq = int(Hq), hkv = int(Hkv);
  if (D == 64)
    (vec ? launch_packed<32, true> : launch_packed<32, false>)(grid, st, dqb, dkb, dvb, T, hq, hkv,
                                                               positions, cos, sin, pl);
  else
    (vec ? launch_packed<64, true> : launch_packed<64, false>)(grid, st, dqb, dkb, dvb, T, hq, hkv,
                                                               positions, cos, sin, pl);
  GYRE_CUDA_LAUNCHED("rope_inverse_dqkv_packed");
  for (int i = 0; i < 3; ++i)
    if (out.db[i]) colsum::finish_add(pl.part[i], chunks, n[i], out.db[i]);
}

void rope_attention_fwd_bf16(const float* q, const float* k, const float* v,
                             const int32_t* positions, const float* cos, const float* sin,
                             const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                             int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* qb,
                             uint16_t* kb, uint16_t* vb, float* out, uint16_t* out_bf16,
                             float* lse) {
  if (T == 0) return;
  const int64_t nq = T * Hq * D, nkv = T * Hkv * D;
  Bf16Dest qd(qb, nq), kd(kb, nkv), vd(vb, nkv), od(out_bf16, nq);
  rope_qkv_bf16(q, k, v, T, Hq, Hkv, D, positions, cos, sin, qd.p, kd.p, vd.p);
  attention_fwd_bf16(qd.p, kd.p, vd.p, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale, od.p, lse);
  if (!out_bf16) bf16_to_f32(od.p, out, nq);  // attention_fwd_autocast's widening
  qd.finish();
  kd.finish();
  vd.finish();
  od.finish();
}

void rope_attention_bwd_bf16(Bf16Operand dout, Bf16Operand q, Bf16Operand k, Bf16Operand v,
                             Bf16Operand out, const float* lse, const int32_t* positions,
                             const float* cos, const float* sin, const int32_t* cu_seqlens,
                             int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv,
                             int64_t D, float scale, float* dq, float* dk, float* dv) {
  if (T == 0) return;
  const int64_t nq = T * Hq * D, nkv = T * Hkv * D;
  Bf16Source dos(dout, nq), qs(q, nq), ks(k, nkv), vs(v, nkv), os(out, nq);
  DeviceBuffer dqb(size_t(nq) * 2), dkb(size_t(nkv) * 2), dvb(size_t(nkv) * 2);
  attention_bwd_bf16(dos.p, qs.p, ks.p, vs.p, os.p, lse, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D,
                     scale, dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>());
  rope_inverse_dqkv_f32(dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>(), T, Hq, Hkv, D,
                        positions, cos, sin, dq, dk, dv);
}

void rope_attention_bwd_bf16_packed(Bf16Operand dout, Bf16Operand q, Bf16Operand k, Bf16Operand v,
                                    Bf16Operand out, const float* lse, const int32_t* positions,
                                    const float* cos, const float* sin, const int32_t* cu_seqlens,
                                    int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq,
                                    int64_t Hkv, int64_t D, float scale, const PackedDqkv& dqkv) {
  if (T == 0)  // no attention; the bias gradients still get their (empty) column sums
    return rope_inverse_dqkv_packed(nullptr, nullptr, nullptr, 0, Hq, Hkv, D, positions, cos, sin,
                                    dqkv);
  const int64_t nq = T * Hq * D, nkv = T * Hkv * D;
  Bf16Source dos(dout, nq), qs(q, nq), ks(k, nkv), vs(v, nkv), os(out, nq);
  DeviceBuffer dqb(size_t(nq) * 2), dkb(size_t(nkv) * 2), dvb(size_t(nkv) * 2);
  attention_bwd_bf16(dos.p, qs.p, ks.p, vs.p, os.p, lse, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D,
                     scale, dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>());
  rope_inverse_dqkv_packed(dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>(), T, Hq, Hkv,
                           D, positions, cos, sin, dqkv);
}

}  // namespace gyre::cuda
