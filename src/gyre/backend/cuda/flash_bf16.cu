// bf16 causal varlen GQA attention on tensor cores: FlashAttention-2 (Dao 2023) forward and
// backward with mma.sync.m16n8k16 (bf16 in, f32 accumulate), ldmatrix fragment loads and cp.async
// tile copies. This is the speed path of the CUDA backend; attention.cu is the f32 exact path.
//
// Forward: a block owns 128 query rows of one (sequence, head) (8 warps x 16 rows), streams that
// sequence's keys/values in tiles of 64 through double-buffered shared memory, and keeps the
// online-softmax state (row max, row sum, output accumulators) in registers; scores are in log2
// units (scale * log2 e) so exp2 is one instruction. lse is saved in natural-log units.
// Backward: a block owns 64 keys of one kv head (4 warps x 16 keys) and walks every query tile at
// or after the diagonal for each query head of its GQA group, so dK and dV accumulate in registers
// without atomics. dQ comes, by default, from a second kernel that owns 64 query rows and walks
// their key tiles recomputing S and dP (7 matmuls instead of 5, no atomics, deterministic: 182 vs
// 142 TFLOP/s on an H200, notes/device_measurements.md); the alternative accumulates dQ in an f32
// scratch with atomicAdd inside the dK/dV kernel (last bits vary run to run).
// Blocks run tile-major over the whole grid (block_pos): the tiles with the most causal work
// start first across all sequences and heads (H200, 4 x 4096 causal: D=128 fwd 205 -> 229, bwd
// 179 -> 186 TFLOP/s; Qwen2.5-0.5B's 14/2 heads of 64: fwd 165 -> 185, bwd 121 -> 157).
// D = 64 defaults: forward 4 warps x 32 rows x 128 keys per tile (-> 195); backward splits each
// GQA group over 3 dK/dV blocks (f32 partials in dq_accum, summed in a fixed order) with 3 resident
// dK/dV blocks per SM (168 registers) and 3 resident dQ blocks per SM (168 registers; -> 177).
// 8-warp dK/dV or dQ blocks, and a 4 warps x 16 rows x 128 keys forward, measured slower.
// Invariants: D is 64 or 128; rows beyond a sequence are zero-filled in shared memory and masked;
// packed rows are 16-byte aligned because D * 2 bytes is a multiple of 16.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

// Tile-shape selection for bench_cuda_ops (declared there; not part of kernels.h): the D = 64
// forward variant (0: the rows-per-warp default, 1: 4 warps x 32 rows x 128 keys, 2: 8 warps x
// 16 rows x 128 keys, 3: 8 warps x 32 rows x 64 keys), the backward's GQA split, and the D = 64
// dK/dV kernel's minimum resident blocks, and the block order (block_pos).
void set_flash_bf16_tuning(int fwd64_variant, int bwd_split, int bwd64_min_blocks, int lpt);
// The D = 64 backward's warps per block (4 or 8) of the dK/dV kernel (16 keys each) and of the
// dQ kernel (16 query rows each).
void set_flash_bf16_bwd_warps(int kv_warps, int dq_warps);
// The D = 64 dQ kernel's (4 warps) minimum resident blocks: 2, 3 or 4.
void set_flash_bf16_dq_min_blocks(int min_blocks);

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const uint16_t* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const uint16_t* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void cp_async16(uint16_t* s, const uint16_t* g, bool valid) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(s));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(g),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Copies rows [row0, row0 + R) of a [*, ld] bf16 matrix (columns [0, D)) into shared memory with
// row stride D + 8; rows at or beyond L are zero-filled.
template <int R, int D, int kThreads>
__device__ __forceinline__ void load_rows(uint16_t* s, const uint16_t* g, int64_t ld, int row0,
                                          int L) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < R * kChunks; c += kThreads) {
    const int r = c / kChunks, cc = c % kChunks;
    const bool ok = row0 + r < L;
    cp_async16(s + r * (D + 8) + cc * 8, ok ? g + int64_t(row0 + r) * ld + cc * 8 : g, ok);
  }
}

// A block's (tile, y, z). With lpt the linear block id runs tile-major, so the tiles with the most
// causal work start first over the whole grid (all sequences and heads), not per (sequence, head).
struct BlockPos {
  int tile, y, z;
};
__device__ __forceinline__ BlockPos block_pos(int lpt) {
  if (!lpt) return {int(blockIdx.x), int(blockIdx.y), int(blockIdx.z)};
  const int gy = int(gridDim.y), nyz = gy * int(gridDim.z);
  const int lin = int(blockIdx.x) + int(gridDim.x) * (int(blockIdx.y) + gy * int(blockIdx.z));
  return {lin / nyz, (lin % nyz) % gy, (lin % nyz) / gy};
}

// ---------------------------------------------------------------------------- forward
// NW warps, each owning MT m-tiles of 16 query rows (Br = NW * 16 * MT rows per block). With
// MT = 1 the warp keeps its Q fragments in registers; with MT = 2 it re-reads them from shared
// memory but uses every K/V fragment it loads for two m-tiles (fewer shared-memory reads per mma).
template <int D, int NW, int MT, int Bc>
__global__ void __launch_bounds__(NW * 32, 8 / NW)
    flash_fwd_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                     const uint16_t* __restrict__ v, const int32_t* __restrict__ cu, int Hq,
                     int Hkv, float scale_log2, uint16_t* __restrict__ out, float* __restrict__ lse,
                     int n_qtiles, int lpt) {
  constexpr int Br = NW * 16 * MT, S = D + 8, kThreads = NW * 32, KS = D / 16;
  constexpr int NT = Bc / 8;  // n-tiles of 8 keys
  constexpr bool kQInRegs = MT == 1;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sK = sQ + Br * S;  // two buffers of Bc rows
  uint16_t* sV = sK + 2 * Bc * S;

  const BlockPos pos = block_pos(lpt);
  const int qt = n_qtiles - 1 - pos.tile;  // longest causal rows first
  const int b = pos.y, h = pos.z;
  const int start = cu[b], L = cu[b + 1] - start;
  const int q0 = qt * Br;
  if (q0 >= L) return;
  const int g = h / (Hq / Hkv);
  const int64_t ldq = int64_t(Hq) * D, ldk = int64_t(Hkv) * D;
  const uint16_t* qb = q + int64_t(start) * ldq + int64_t(h) * D;
  const uint16_t* kb = k + int64_t(start) * ldk + int64_t(g) * D;
  const uint16_t* vb = v + int64_t(start) * ldk + int64_t(g) * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wr = warp * 16 * MT;  // the warp's first row in the tile

  const int kend = min(L, q0 + Br);  // keys [0, kend) are visible to some row of the tile
  const int n_kt = (kend + Bc - 1) / Bc;
  load_rows<Br, D, kThreads>(sQ, qb, ldq, q0, L);
  load_rows<Bc, D, kThreads>(sK, kb, ldk, 0, L);
  load_rows<Bc, D, kThreads>(sV, vb, ldk, 0, L);
  cp_async_commit();

  uint32_t qf[kQInRegs ? KS : 1][4];
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }
  const int r0 = q0 + wr + (lane >> 2);  // row of o[mt][.][0..1] is r0 + 16 mt; [2..3] is +8

  for (int kt = 0; kt < n_kt; ++kt) {
    const uint16_t* cK = sK + (kt & 1) * Bc * S;
    const uint16_t* cV = sV + (kt & 1) * Bc * S;
    if (kt + 1 < n_kt) {
      load_rows<Bc, D, kThreads>(sK + ((kt + 1) & 1) * Bc * S, kb, ldk, (kt + 1) * Bc, L);
      load_rows<Bc, D, kThreads>(sV + ((kt + 1) & 1) * Bc * S, vb, ldk, (kt + 1) * Bc, L);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kQInRegs && kt == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        ldsm_x4(qf[kQInRegs ? ks : 0],
                sQ + (wr + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 + (lane >> 4) * 8);
    }
    // A warp whose rows all precede this key tile has nothing to add (causal).
    if (kt * Bc <= q0 + wr + 16 * MT - 1) {
      // S = Q K^T for this warp's rows x 64 keys.
      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < NT; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t qa[MT][4];
        if constexpr (kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[0][e] = qf[kQInRegs ? ks : 0][e];
        } else {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            ldsm_x4(qa[mt], sQ + (wr + mt * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 +
                                (lane >> 4) * 8);
        }
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t bk[4];
          ldsm_x4(bk, cK + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * S + ks * 16 +
                          ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(s[mt][2 * np], qa[mt], bk[0], bk[1]);
            mma_bf16(s[mt][2 * np + 1], qa[mt], bk[2], bk[3]);
          }
        }
      }
      // Scale to log2 units, mask (causal / past the sequence end), online softmax.
      const bool need_mask = (kt + 1) * Bc > q0 + wr;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int ra = r0 + mt * 16, rb = ra + 8;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float x = s[mt][nt][e] * scale_log2;
            if (need_mask) {
              const int col = kt * Bc + nt * 8 + 2 * (lane & 3) + (e & 1);
              const int row = e < 2 ? ra : rb;
              if (col > row || col >= L) x = -INFINITY;
            }
            s[mt][nt][e] = x;
          }
          mx0 = fmaxf(mx0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
          mx1 = fmaxf(mx1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m[mt][0], mx0), mn1 = fmaxf(m[mt][1], mx1);
        const float base0 = mn0 == -INFINITY ? 0.0f : mn0;
        const float base1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float c0 = exp2f(m[mt][0] - base0), c1 = exp2f(m[mt][1] - base1);
        m[mt][0] = mn0;
        m[mt][1] = mn1;
        float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          s[mt][nt][0] = exp2f(s[mt][nt][0] - base0);
          s[mt][nt][1] = exp2f(s[mt][nt][1] - base0);
          s[mt][nt][2] = exp2f(s[mt][nt][2] - base1);
          s[mt][nt][3] = exp2f(s[mt][nt][3] - base1);
          ps0 += s[mt][nt][0] + s[mt][nt][1];
          ps1 += s[mt][nt][2] + s[mt][nt][3];
        }
        l[mt][0] = l[mt][0] * c0 + ps0;
        l[mt][1] = l[mt][1] * c1 + ps1;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          o[mt][i][0] *= c0;
          o[mt][i][1] *= c0;
          o[mt][i][2] *= c1;
          o[mt][i][3] *= c1;
        }
      }
      // O += P V (P from registers as the A operand, V via transposing ldmatrix).
#pragma unroll
      for (int kk = 0; kk < NT / 2; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bv[4];
          ldsm_x4_t(bv, cV + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + dp * 16 +
                            (lane >> 4) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(o[mt][2 * dp], a[mt], bv[0], bv[1]);
            mma_bf16(o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
          }
        }
      }
    }
    __syncthreads();  // the buffer of this tile is refilled two iterations on
  }
  uint16_t* ob = out + int64_t(start) * ldq + int64_t(h) * D + 2 * (lane & 3);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float l0 = l[mt][0], l1 = l[mt][1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    const int ra = r0 + mt * 16, rb = ra + 8;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      if (ra < L)
        *reinterpret_cast<uint32_t*>(ob + int64_t(ra) * ldq + dn * 8) =
            pack_bf16(o[mt][dn][0] * inv0, o[mt][dn][1] * inv0);
      if (rb < L)
        *reinterpret_cast<uint32_t*>(ob + int64_t(rb) * ldq + dn * 8) =
            pack_bf16(o[mt][dn][2] * inv1, o[mt][dn][3] * inv1);
    }
    if ((lane & 3) == 0) {
      if (ra < L) lse[int64_t(start + ra) * Hq + h] = (m[mt][0] + log2f(l0)) * kLn2;
      if (rb < L) lse[int64_t(start + rb) * Hq + h] = (m[mt][1] + log2f(l1)) * kLn2;
    }
  }
}

// ---------------------------------------------------------------------------- backward
// delta[r] = Σ_d dO ∘ O over rows of D (FlashAttention-2's D_i), one warp per row.
__global__ void flash_delta_kernel(const uint16_t* dout, const uint16_t* out, int64_t rows, int D,
                                   float* delta) {
  const int lane = threadIdx.x & 31;
  const int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  float s = 0;
  for (int d = lane; d < D; d += 32)
    s += __bfloat162float(__ushort_as_bfloat16(dout[r * D + d])) *
         __bfloat162float(__ushort_as_bfloat16(out[r * D + d]));
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) delta[r] = s;
}

__global__ void scale_to_bf16_kernel(const float* src, float scale, int64_t n, uint16_t* dst) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i] * scale));
}

// With nsplit > 1 (separate-dQ mode only) the G query heads of a kv head are split over nsplit
// blocks, each writing its f32 partial dK / dV to slot s of part ([2][nsplit][T, Hkv, D]); a
// reduce kernel sums the slots in a fixed order (deterministic).
// dk = scale * Σ_s part[s], dv = Σ_s part[nsplit + s] over slots of n values (fixed order).
__global__ void reduce_dkdv_kernel(const float* __restrict__ part, int nsplit, int64_t n,
                                   float scale, uint16_t* __restrict__ dk,
                                   uint16_t* __restrict__ dv) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float a = 0.0f, c = 0.0f;
    for (int s = 0; s < nsplit; ++s) {
      a += part[s * n + i];
      c += part[(nsplit + s) * n + i];
    }
    dk[i] = __bfloat16_as_ushort(__float2bfloat16_rn(a * scale));
    dv[i] = __bfloat16_as_ushort(__float2bfloat16_rn(c));
  }
}

template <int D, bool kAtomicDq, int kMinBlocks, int NWK>
__global__ void __launch_bounds__(NWK * 32, kMinBlocks)
    flash_bwd_kernel(const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
                     const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     const int32_t* __restrict__ cu, int Hq, int Hkv, float scale,
                     float* __restrict__ dq_accum, uint16_t* __restrict__ dk,
                     uint16_t* __restrict__ dv, int nsplit, int64_t slot, int lpt) {
  // NWK warps of 16 keys (Bc = NWK * 16); the atomic-dQ tail assumes 4 warps (64 query rows).
  static_assert(NWK == 4 || !kAtomicDq, "the atomic dQ path needs 4 warps");
  constexpr int Bc = NWK * 16, Br = 64, S = D + 8, SP = Br + 8, kThreads = NWK * 32, KS = D / 16;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sK = smem;
  uint16_t* sV = sK + Bc * S;
  uint16_t* sQ = sV + Bc * S;
  uint16_t* sdO = sQ + Br * S;
  uint16_t* sdS = sdO + Br * S;  // dS^T [Bc keys][Br queries]
  float* sL = reinterpret_cast<float*>(sdS + Bc * SP);
  float* sD = sL + Br;

  const BlockPos pos = block_pos(lpt);  // key tile 0 (the most query tiles) first
  const int b = pos.y, g = pos.z / nsplit, sp = pos.z % nsplit;
  const int start = cu[b], L = cu[b + 1] - start;
  const int k0 = pos.tile * Bc;
  if (k0 >= L) return;
  const int G = Hq / Hkv;
  const int h_begin = g * G + (sp * G) / nsplit, h_end = g * G + ((sp + 1) * G) / nsplit;
  const int64_t ldq = int64_t(Hq) * D, ldk = int64_t(Hkv) * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float scale_log2 = scale * kLog2e;

  load_rows<Bc, D, kThreads>(sK, k + int64_t(start) * ldk + int64_t(g) * D, ldk, k0, L);
  load_rows<Bc, D, kThreads>(sV, v + int64_t(start) * ldk + int64_t(g) * D, ldk, k0, L);
  cp_async_commit();

  float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[i][e] = dv_acc[i][e] = 0.0f;
  const int kr0 = k0 + warp * 16 + (lane >> 2), kr1 = kr0 + 8;  // this thread's key rows
  const int n_qt = (L + Br - 1) / Br;

  for (int h = h_begin; h < h_end; ++h) {
    const uint16_t* qh = q + int64_t(start) * ldq + int64_t(h) * D;
    const uint16_t* doh = dout + int64_t(start) * ldq + int64_t(h) * D;
    for (int qt = k0 / Br; qt < n_qt; ++qt) {
      const int q0 = qt * Br;
      __syncthreads();  // everyone is done with the previous tile's sQ / sdO / sdS
      load_rows<Br, D, kThreads>(sQ, qh, ldq, q0, L);
      load_rows<Br, D, kThreads>(sdO, doh, ldq, q0, L);
      cp_async_commit();
      for (int r = threadIdx.x; r < Br; r += kThreads) {
        const bool ok = q0 + r < L;
        const int64_t row = int64_t(start + q0 + r) * Hq + h;
        sL[r] = ok ? lse[row] * kLog2e : INFINITY;  // rows past the end get P = 0
        sD[r] = ok ? delta[row] : 0.0f;
      }
      cp_async_wait<0>();
      __syncthreads();

      // S^T = K Q^T: this warp's 16 keys x 64 queries.
      float st[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) st[i][0] = st[i][1] = st[i][2] = st[i][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t ka[4];
        ldsm_x4(ka, sK + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 +
                        (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t bq[4];
          ldsm_x4(bq, sQ + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * S + ks * 16 +
                          ((lane >> 3) & 1) * 8);
          mma_bf16(st[2 * np], ka, bq[0], bq[1]);
          mma_bf16(st[2 * np + 1], ka, bq[2], bq[3]);
        }
      }
      // P^T = exp(S^T scale - lse), zero where the query precedes the key.
      const bool need_mask = q0 < k0 + Bc;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int lc = nt * 8 + 2 * (lane & 3) + (e & 1);
          const int kr = e < 2 ? kr0 : kr1;
          float p = exp2f(st[nt][e] * scale_log2 - sL[lc]);
          if (need_mask && q0 + lc < kr) p = 0.0f;
          st[nt][e] = p;
        }
        // dV += P^T dO.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(st[2 * kk][0], st[2 * kk][1]);
        a[1] = pack_bf16(st[2 * kk][2], st[2 * kk][3]);
        a[2] = pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]);
        a[3] = pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bo[4];
          ldsm_x4_t(bo, sdO + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + dp * 16 +
                            (lane >> 4) * 8);
          mma_bf16(dv_acc[2 * dp], a, bo[0], bo[1]);
          mma_bf16(dv_acc[2 * dp + 1], a, bo[2], bo[3]);
        }
      }
      // dP^T = V dO^T.
      float dpt[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t va[4];
        ldsm_x4(va, sV + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 +
                        (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t bo[4];
          ldsm_x4(bo, sdO + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * S + ks * 16 +
                          ((lane >> 3) & 1) * 8);
          mma_bf16(dpt[2 * np], va, bo[0], bo[1]);
          mma_bf16(dpt[2 * np + 1], va, bo[2], bo[3]);
        }
      }
      // dS^T = P^T (dP^T - delta_q); stash it (bf16) for dQ.
      uint16_t* sdsw = sdS + (warp * 16 + (lane >> 2)) * SP + 2 * (lane & 3);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int lc = nt * 8 + 2 * (lane & 3);
        st[nt][0] *= dpt[nt][0] - sD[lc];
        st[nt][1] *= dpt[nt][1] - sD[lc + 1];
        st[nt][2] *= dpt[nt][2] - sD[lc];
        st[nt][3] *= dpt[nt][3] - sD[lc + 1];
        if constexpr (kAtomicDq) {
          *reinterpret_cast<uint32_t*>(sdsw + nt * 8) = pack_bf16(st[nt][0], st[nt][1]);
          *reinterpret_cast<uint32_t*>(sdsw + 8 * SP + nt * 8) = pack_bf16(st[nt][2], st[nt][3]);
        }
      }
      // dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(st[2 * kk][0], st[2 * kk][1]);
        a[1] = pack_bf16(st[2 * kk][2], st[2 * kk][3]);
        a[2] = pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]);
        a[3] = pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bq[4];
          ldsm_x4_t(bq, sQ + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + dp * 16 +
                            (lane >> 4) * 8);
          mma_bf16(dk_acc[2 * dp], a, bq[0], bq[1]);
          mma_bf16(dk_acc[2 * dp + 1], a, bq[2], bq[3]);
        }
      }
      if constexpr (!kAtomicDq) continue;  // dQ comes from flash_bwd_dq_kernel
      __syncthreads();                     // dS^T of all warps is in shared memory
      // dQ (this warp's 16 query rows) += dS K, 64 columns at a time, added to the f32 scratch.
      const int qr0 = q0 + warp * 16 + (lane >> 2), qr1 = qr0 + 8;
      float* dqb = dq_accum + int64_t(start) * ldq + int64_t(h) * D + 2 * (lane & 3);
#pragma unroll
      for (int half = 0; half < D / 64; ++half) {
        float dqa[8][4];
#pragma unroll
        for (int i = 0; i < 8; ++i) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint32_t a[4];
          ldsm_x4_t(a, sdS + (kk * 16 + (lane >> 4) * 8 + (lane & 7)) * SP + warp * 16 +
                           ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int dp = 0; dp < 4; ++dp) {
            uint32_t bk[4];
            ldsm_x4_t(bk, sK + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + half * 64 +
                              dp * 16 + (lane >> 4) * 8);
            mma_bf16(dqa[2 * dp], a, bk[0], bk[1]);
            mma_bf16(dqa[2 * dp + 1], a, bk[2], bk[3]);
          }
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const int col = half * 64 + nt * 8;
          if (qr0 < L) {
            atomicAdd(dqb + int64_t(qr0) * ldq + col, dqa[nt][0]);
            atomicAdd(dqb + int64_t(qr0) * ldq + col + 1, dqa[nt][1]);
          }
          if (qr1 < L) {
            atomicAdd(dqb + int64_t(qr1) * ldq + col, dqa[nt][2]);
            atomicAdd(dqb + int64_t(qr1) * ldq + col + 1, dqa[nt][3]);
          }
        }
      }
    }
  }
  if (nsplit > 1) {
    float* pk = dq_accum + sp * slot + int64_t(start) * ldk + int64_t(g) * D + 2 * (lane & 3);
    float* pv = pk + nsplit * slot;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      if (kr0 < L) {
        *reinterpret_cast<float2*>(pk + int64_t(kr0) * ldk + dn * 8) =
            make_float2(dk_acc[dn][0], dk_acc[dn][1]);
        *reinterpret_cast<float2*>(pv + int64_t(kr0) * ldk + dn * 8) =
            make_float2(dv_acc[dn][0], dv_acc[dn][1]);
      }
      if (kr1 < L) {
        *reinterpret_cast<float2*>(pk + int64_t(kr1) * ldk + dn * 8) =
            make_float2(dk_acc[dn][2], dk_acc[dn][3]);
        *reinterpret_cast<float2*>(pv + int64_t(kr1) * ldk + dn * 8) =
            make_float2(dv_acc[dn][2], dv_acc[dn][3]);
      }
    }
    return;
  }
  uint16_t* dkb = dk + int64_t(start) * ldk + int64_t(g) * D + 2 * (lane & 3);
  uint16_t* dvb = dv + int64_t(start) * ldk + int64_t(g) * D + 2 * (lane & 3);
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    if (kr0 < L) {
      *reinterpret_cast<uint32_t*>(dkb + int64_t(kr0) * ldk + dn * 8) =
          pack_bf16(dk_acc[dn][0] * scale, dk_acc[dn][1] * scale);
      *reinterpret_cast<uint32_t*>(dvb + int64_t(kr0) * ldk + dn * 8) =
          pack_bf16(dv_acc[dn][0], dv_acc[dn][1]);
    }
    if (kr1 < L) {
      *reinterpret_cast<uint32_t*>(dkb + int64_t(kr1) * ldk + dn * 8) =
          pack_bf16(dk_acc[dn][2] * scale, dk_acc[dn][3] * scale);
      *reinterpret_cast<uint32_t*>(dvb + int64_t(kr1) * ldk + dn * 8) =
          pack_bf16(dv_acc[dn][2], dv_acc[dn][3]);
    }
  }
}

// dQ without atomics: a block owns 64 query rows of one head (4 warps x 16 rows) and walks the
// key tiles up to the diagonal, recomputing S = Q K^T and dP = dO V^T (FlashAttention-2's
// backward with its dQ loop split out: 7 matmuls instead of 5, but no atomic traffic).
template <int D, int NWQ, int kMinBlocks>
__global__ void __launch_bounds__(NWQ * 32, kMinBlocks)
    flash_bwd_dq_kernel(const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
                        const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                        const float* __restrict__ lse, const float* __restrict__ delta,
                        const int32_t* __restrict__ cu, int Hq, int Hkv, float scale,
                        uint16_t* __restrict__ dq, int lpt) {
  constexpr int Br = NWQ * 16, Bc = 64, S = D + 8, kThreads = NWQ * 32, KS = D / 16;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sdO = sQ + Br * S;
  uint16_t* sK = sdO + Br * S;  // two buffers of Bc rows
  uint16_t* sV = sK + 2 * Bc * S;

  const BlockPos pos = block_pos(lpt);
  const int b = pos.y, h = pos.z;
  const int start = cu[b], L = cu[b + 1] - start;
  const int q0 = (lpt ? int(gridDim.x) - 1 - pos.tile : pos.tile) * Br;  // lpt: most work first
  if (q0 >= L) return;
  const int g = h / (Hq / Hkv);
  const int64_t ldq = int64_t(Hq) * D, ldk = int64_t(Hkv) * D;
  const uint16_t* kb = k + int64_t(start) * ldk + int64_t(g) * D;
  const uint16_t* vb = v + int64_t(start) * ldk + int64_t(g) * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float scale_log2 = scale * kLog2e;

  const int kend = min(L, q0 + Br);
  const int n_kt = (kend + Bc - 1) / Bc;
  load_rows<Br, D, kThreads>(sQ, q + int64_t(start) * ldq + int64_t(h) * D, ldq, q0, L);
  load_rows<Br, D, kThreads>(sdO, dout + int64_t(start) * ldq + int64_t(h) * D, ldq, q0, L);
  load_rows<Bc, D, kThreads>(sK, kb, ldk, 0, L);
  load_rows<Bc, D, kThreads>(sV, vb, ldk, 0, L);
  cp_async_commit();

  const int r0 = q0 + warp * 16 + (lane >> 2), r1 = r0 + 8;
  const float lse0 = r0 < L ? lse[int64_t(start + r0) * Hq + h] * kLog2e : INFINITY;
  const float lse1 = r1 < L ? lse[int64_t(start + r1) * Hq + h] * kLog2e : INFINITY;
  const float dl0 = r0 < L ? delta[int64_t(start + r0) * Hq + h] : 0.0f;
  const float dl1 = r1 < L ? delta[int64_t(start + r1) * Hq + h] : 0.0f;
  uint32_t qf[KS][4], of[KS][4];
  float acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  for (int kt = 0; kt < n_kt; ++kt) {
    const uint16_t* cK = sK + (kt & 1) * Bc * S;
    const uint16_t* cV = sV + (kt & 1) * Bc * S;
    if (kt + 1 < n_kt) {
      load_rows<Bc, D, kThreads>(sK + ((kt + 1) & 1) * Bc * S, kb, ldk, (kt + 1) * Bc, L);
      load_rows<Bc, D, kThreads>(sV + ((kt + 1) & 1) * Bc * S, vb, ldk, (kt + 1) * Bc, L);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const int off =
            (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 + (lane >> 4) * 8;
        ldsm_x4(qf[ks], sQ + off);
        ldsm_x4(of[ks], sdO + off);
      }
    }
    if (kt * Bc <= q0 + warp * 16 + 15) {
      float s[8][4], dp[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          const int off =
              (np * 16 + (lane >> 4) * 8 + (lane & 7)) * S + ks * 16 + ((lane >> 3) & 1) * 8;
          uint32_t bk[4], bv[4];
          ldsm_x4(bk, cK + off);
          ldsm_x4(bv, cV + off);
          mma_bf16(s[2 * np], qf[ks], bk[0], bk[1]);
          mma_bf16(s[2 * np + 1], qf[ks], bk[2], bk[3]);
          mma_bf16(dp[2 * np], of[ks], bv[0], bv[1]);
          mma_bf16(dp[2 * np + 1], of[ks], bv[2], bv[3]);
        }
      }
      // dS = P (dP - delta), P = exp(S scale - lse), zero above the diagonal and past the end.
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = kt * Bc + nt * 8 + 2 * (lane & 3) + (e & 1);
          const int row = e < 2 ? r0 : r1;
          float p = exp2f(s[nt][e] * scale_log2 - (e < 2 ? lse0 : lse1));
          if (col > row || col >= L) p = 0.0f;
          s[nt][e] = p * (dp[nt][e] - (e < 2 ? dl0 : dl1));
        }
        // dQ += dS K.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp2 = 0; dp2 < D / 16; ++dp2) {
          uint32_t bk[4];
          ldsm_x4_t(bk, cK + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + dp2 * 16 +
                            (lane >> 4) * 8);
          mma_bf16(acc[2 * dp2], a, bk[0], bk[1]);
          mma_bf16(acc[2 * dp2 + 1], a, bk[2], bk[3]);
        }
      }
    }
    __syncthreads();
  }
  uint16_t* db = dq + int64_t(start) * ldq + int64_t(h) * D + 2 * (lane & 3);
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
    if (r0 < L)
      *reinterpret_cast<uint32_t*>(db + int64_t(r0) * ldq + dn * 8) =
          pack_bf16(acc[dn][0] * scale, acc[dn][1] * scale);
    if (r1 < L)
      *reinterpret_cast<uint32_t*>(db + int64_t(r1) * ldq + dn * 8) =
          pack_bf16(acc[dn][2] * scale, acc[dn][3] * scale);
  }
}

int g_lpt = 1;                 // block order (block_pos)
int g_fwd_rows_per_warp = 32;  // default variant; both are timed by bench_cuda_ops
int g_fwd64_variant = 1;       // D = 64 tile shape (set_flash_bf16_tuning)
int g_bwd_split = 3;           // most blocks per kv head over its query heads (at most G / 2)
int g_bwd64_min_blocks = 3;    // D = 64 dK/dV kernel __launch_bounds__ min blocks

template <int D, int Br, int Bc>
size_t fwd_smem() {
  return size_t(Br + 4 * Bc) * (D + 8) * 2;
}
template <int D, int Bc>
size_t bwd_smem() {
  return size_t(2 * Bc + 2 * 64) * (D + 8) * 2 + size_t(Bc) * (64 + 8) * 2 + 2 * 64 * sizeof(float);
}
template <int D, int Br>
size_t bwd_dq_smem() {
  return size_t(2 * Br + 4 * 64) * (D + 8) * 2;
}

template <int D, int NW, int MT, int Bc>
void launch_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int32_t* cu,
                int64_t B, int64_t max_seqlen, int64_t Hq, int64_t Hkv, float scale, uint16_t* out,
                float* lse) {
  constexpr int Br = NW * 16 * MT;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<D, NW, MT, Bc>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(fwd_smem<D, Br, Bc>())));
    return true;
  }();
  (void)attr;
  const int n_qtiles = int((max_seqlen + Br - 1) / Br);
  const dim3 grid = dim3(unsigned(n_qtiles), unsigned(B), unsigned(Hq));
  flash_fwd_kernel<D, NW, MT, Bc><<<grid, NW * 32, fwd_smem<D, Br, Bc>(), stream()>>>(
      q, k, v, cu, int(Hq), int(Hkv), scale * kLog2e, out, lse, n_qtiles, g_lpt);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_fwd");
}

int g_bwd64_kv_warps = 4;       // D = 64 dK/dV kernel: warps of 16 keys per block
int g_bwd64_dq_warps = 4;       // D = 64 dQ kernel: warps of 16 query rows per block
int g_bwd64_dq_min_blocks = 3;  // D = 64 dQ kernel (4 warps) __launch_bounds__ min blocks

// dK/dV (and, with kAtomicDq, dQ into dq_accum); returns the GQA split it used.
template <int D, bool kAtomicDq, int kMinBlocks, int NWK>
int launch_bwd_kv(const uint16_t* dout, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                  const float* lse, const float* delta, const int32_t* cu, int64_t B,
                  int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv, float scale,
                  float* dq_accum, uint16_t* dk, uint16_t* dv) {
  constexpr int Bc = NWK * 16;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_kernel<D, kAtomicDq, kMinBlocks, NWK>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(bwd_smem<D, Bc>())));
    return true;
  }();
  (void)attr;
  // Split the GQA group over blocks only where the f32 partials fit in dq_accum (2 * nsplit
  // slots of T * Hkv * D <= T * Hq * D), i.e. in separate-dQ mode with G >= 4; at D = 64 only
  // (measured there).
  const int G = int(Hq / Hkv);
  const int nsplit = kAtomicDq || D != 64 ? 1 : std::max(1, std::min(g_bwd_split, G / 2));
  const int64_t slot = T * Hkv * D;
  const dim3 grid = dim3(unsigned((max_seqlen + Bc - 1) / Bc), unsigned(B), unsigned(Hkv * nsplit));
  flash_bwd_kernel<D, kAtomicDq, kMinBlocks, NWK><<<grid, NWK * 32, bwd_smem<D, Bc>(), stream()>>>(
      dout, q, k, v, lse, delta, cu, int(Hq), int(Hkv), scale, dq_accum, dk, dv, nsplit, slot,
      g_lpt);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_bwd");
  return nsplit;
}

template <int D, int NWQ, int kMinBlocks>
void launch_bwd_dq(const uint16_t* dout, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                   const float* lse, const float* delta, const int32_t* cu, int64_t B,
                   int64_t max_seqlen, int64_t Hq, int64_t Hkv, float scale, uint16_t* dq) {
  constexpr int Br = NWQ * 16;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_dq_kernel<D, NWQ, kMinBlocks>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(bwd_dq_smem<D, Br>())));
    return true;
  }();
  (void)attr;
  const dim3 qgrid = dim3(unsigned((max_seqlen + Br - 1) / Br), unsigned(B), unsigned(Hq));
  flash_bwd_dq_kernel<D, NWQ, kMinBlocks><<<qgrid, NWQ * 32, bwd_dq_smem<D, Br>(), stream()>>>(
      dout, q, k, v, lse, delta, cu, int(Hq), int(Hkv), scale, dq, g_lpt);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_bwd_dq");
}

bool g_bwd_separate_dq =
    true;  // default: the separate dQ kernel (faster on an H200, deterministic)

}  // namespace

bool flash_bf16_supported(int64_t D) { return D == 64 || D == 128; }

void set_flash_fwd_rows_per_warp(int rows) { g_fwd_rows_per_warp = rows == 16 ? 16 : 32; }

void set_flash_bf16_tuning(int fwd64_variant, int bwd_split, int bwd64_min_blocks, int lpt) {
  g_lpt = lpt;
  g_fwd64_variant = fwd64_variant;
  g_bwd_split = bwd_split;
  g_bwd64_min_blocks = bwd64_min_blocks;
}

void flash_attention_bf16_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                              float* lse) {
  if (T == 0 || B == 0 || max_seqlen == 0) return;
  const bool two = g_fwd_rows_per_warp == 32;
  if (D == 64) {
    if (g_fwd64_variant == 1)
      launch_fwd<64, 4, 2, 128>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else if (g_fwd64_variant == 2)
      launch_fwd<64, 8, 1, 128>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else if (g_fwd64_variant == 3)
      launch_fwd<64, 8, 2, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else if (g_fwd64_variant == 4)
      launch_fwd<64, 4, 1, 128>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else if (two)
      launch_fwd<64, 4, 2, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else
      launch_fwd<64, 8, 1, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
  } else {
    if (two)
      launch_fwd<128, 4, 2, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
    else
      launch_fwd<128, 8, 1, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
  }
}

void set_flash_bwd_separate_dq(bool separate) { g_bwd_separate_dq = separate; }

void set_flash_bf16_bwd_warps(int kv_warps, int dq_warps) {
  g_bwd64_kv_warps = kv_warps;
  g_bwd64_dq_warps = dq_warps;
}

void set_flash_bf16_dq_min_blocks(int min_blocks) { g_bwd64_dq_min_blocks = min_blocks; }

void flash_attention_bf16_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                              const uint16_t* v, const uint16_t* out, const float* lse,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                              uint16_t* dk, uint16_t* dv, float* dq_accum, float* delta) {
  if (T == 0 || B == 0 || max_seqlen == 0) return;
  cudaStream_t s = stream();
  const int64_t rows = T * Hq;
  flash_delta_kernel<<<unsigned((rows + 7) / 8), 256, 0, s>>>(dout, out, rows, int(D), delta);
  GYRE_CUDA_LAUNCHED("flash_delta");
  if (g_bwd_separate_dq) {
    int nsplit = 1;
    if (D == 64) {
#define GYRE_BWD_KV(MB, NWK)                                                                       \
  nsplit = launch_bwd_kv<64, false, MB, NWK>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, \
                                             T, Hq, Hkv, scale, dq_accum, dk, dv)
      const int mb = g_bwd64_min_blocks;
      if (g_bwd64_kv_warps == 8) {
        if (mb >= 2)
          GYRE_BWD_KV(2, 8);
        else
          GYRE_BWD_KV(1, 8);
      } else if (mb >= 3) {
        GYRE_BWD_KV(3, 4);
      } else if (mb == 2) {
        GYRE_BWD_KV(2, 4);
      } else {
        GYRE_BWD_KV(1, 4);
      }
#undef GYRE_BWD_KV
      if (g_bwd64_dq_warps == 8)
        launch_bwd_dq<64, 8, 1>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv,
                                scale, dq);
      else if (g_bwd64_dq_min_blocks >= 4)
        launch_bwd_dq<64, 4, 4>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv,
                                scale, dq);
      else if (g_bwd64_dq_min_blocks == 3)
        launch_bwd_dq<64, 4, 3>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv,
                                scale, dq);
      else
        launch_bwd_dq<64, 4, 2>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv,
                                scale, dq);
    } else {
      launch_bwd_kv<128, false, 1, 4>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, T, Hq,
                                      Hkv, scale, dq_accum, dk, dv);
      launch_bwd_dq<128, 4, 2>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv, scale,
                               dq);
    }
    if (nsplit > 1) {
      const int64_t slot = T * Hkv * D;
      reduce_dkdv_kernel<<<grid_for(slot, 256), 256, 0, s>>>(dq_accum, nsplit, slot, scale, dk, dv);
      GYRE_CUDA_LAUNCHED("flash_reduce_dkdv");
    }
    return;
  }
  GYRE_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, size_t(rows * D) * sizeof(float), s));
  if (D == 64)
    launch_bwd_kv<64, true, 1, 4>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, T, Hq, Hkv,
                                  scale, dq_accum, dk, dv);
  else
    launch_bwd_kv<128, true, 1, 4>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, T, Hq, Hkv,
                                   scale, dq_accum, dk, dv);
  scale_to_bf16_kernel<<<grid_for(rows * D, 256), 256, 0, s>>>(dq_accum, scale, rows * D, dq);
  GYRE_CUDA_LAUNCHED("flash_dq_convert");
}

}  // namespace gyre::cuda
