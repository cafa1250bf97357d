// bf16 FlashAttention-2 backward (flash_attention_bf16_bwd in kernels.h; shared pieces and the
// block order in flash_bf16_common.cuh). Deterministic: no floating-point atomics, fixed orders.
//
// 1. delta = rowsum(dO o O) (FlashAttention-2's D_i), one warp per row.
// 2. dK/dV: a block owns 64 keys of one kv head (4 warps x 16 keys) and walks every query tile at
//    or after the diagonal for each query head of its GQA group (or of its share of the group, see
//    below), so dK and dV accumulate in registers; P is recomputed from the saved lse.
// 3. dQ: a second kernel owns 64 query rows of one head (4 warps x 16 rows) and walks their key
//    tiles recomputing S and dP (7 matmuls instead of 5, no atomics).
// At D = 64 with GQA groups of 4 or more query heads, step 2 splits each group over up to 3 blocks
// (kBwdGqaSplit), each writing f32 partial dK/dV to the caller's scratch; a reduce kernel sums the
// partials in a fixed order. D = 64 runs both kernels at 3 resident blocks per SM (168 registers).
// H200, 4 x 4096 causal: 14/2 heads of 64 bwd 122 -> 177 TFLOP/s with the split, the block order
// and the occupancy (session 4); D = 128 16/16 heads: 182 TFLOP/s with the separate dQ kernel.
// Measured slower and removed (session 5): dQ accumulated with f32 atomics inside the dK/dV kernel
// (142 against 182 TFLOP/s at D = 128, notes/device_measurements.md; last bits varied run to run),
// 8-warp dK/dV or dQ blocks, and other GQA splits / minimum resident blocks.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "gyre/backend/cuda/flash_bf16_common.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using namespace flash_bf16_detail;

constexpr int kBwdWarps = 4;     // warps per block of both kernels (16 keys or 16 query rows each)
constexpr int kBwdGqaSplit = 3;  // most dK/dV blocks per kv head at D = 64 (at most G / 2)

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

// With nsplit > 1 the G query heads of a kv head are split over nsplit
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

template <int D, int kMinBlocks>
__global__ void __launch_bounds__(kBwdWarps * 32, kMinBlocks)
    flash_bwd_kernel(const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
                     const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     const int32_t* __restrict__ cu, int Hq, int Hkv, float scale,
                     float* __restrict__ partials, uint16_t* __restrict__ dk,
                     uint16_t* __restrict__ dv, int nsplit, int64_t slot) {
  constexpr int Bc = kBwdWarps * 16, Br = 64, S = D + 8, kThreads = kBwdWarps * 32, KS = D / 16;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sK = smem;
  uint16_t* sV = sK + Bc * S;
  uint16_t* sQ = sV + Bc * S;
  uint16_t* sdO = sQ + Br * S;
  float* sL = reinterpret_cast<float*>(sdO + Br * S);
  float* sD = sL + Br;

  const BlockPos pos = block_pos();  // key tile 0 (the most query tiles) first
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
      __syncthreads();  // everyone is done with the previous tile's sQ / sdO
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
      // dS^T = P^T (dP^T - delta_q).
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int lc = nt * 8 + 2 * (lane & 3);
        st[nt][0] *= dpt[nt][0] - sD[lc];
        st[nt][1] *= dpt[nt][1] - sD[lc + 1];
        st[nt][2] *= dpt[nt][2] - sD[lc];
        st[nt][3] *= dpt[nt][3] - sD[lc + 1];
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
    }
  }
  if (nsplit > 1) {
    float* pk = partials + sp * slot + int64_t(start) * ldk + int64_t(g) * D + 2 * (lane & 3);
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
template <int D, int kMinBlocks>
__global__ void __launch_bounds__(kBwdWarps * 32, kMinBlocks)
    flash_bwd_dq_kernel(const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
                        const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                        const float* __restrict__ lse, const float* __restrict__ delta,
                        const int32_t* __restrict__ cu, int Hq, int Hkv, float scale,
                        uint16_t* __restrict__ dq) {
  constexpr int Br = kBwdWarps * 16, Bc = 64, S = D + 8, kThreads = kBwdWarps * 32, KS = D / 16;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sdO = sQ + Br * S;
  uint16_t* sK = sdO + Br * S;  // two buffers of Bc rows
  uint16_t* sV = sK + 2 * Bc * S;

  const BlockPos pos = block_pos();
  const int b = pos.y, h = pos.z;
  const int start = cu[b], L = cu[b + 1] - start;
  const int q0 = (int(gridDim.x) - 1 - pos.tile) * Br;  // most causal work first
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

template <int D>
size_t bwd_smem() {
  constexpr int Bc = kBwdWarps * 16;
  return size_t(2 * Bc + 2 * 64) * (D + 8) * 2 + 2 * 64 * sizeof(float);
}
template <int D>
size_t bwd_dq_smem() {
  constexpr int Br = kBwdWarps * 16;
  return size_t(2 * Br + 4 * 64) * (D + 8) * 2;
}

// GQA split of the dK/dV kernel: its f32 partials (2 * nsplit slots of T * Hkv * D floats) fit in
// the caller's [T, Hq, D] scratch because nsplit <= G / 2.
int bwd_gqa_split(int64_t D, int64_t Hq, int64_t Hkv) {
  const int G = int(Hq / Hkv);
  return D != 64 ? 1 : std::max(1, std::min(kBwdGqaSplit, G / 2));
}

template <int D, int kMinBlocks>
void launch_bwd_kv(const uint16_t* dout, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                   const float* lse, const float* delta, const int32_t* cu, int64_t B,
                   int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv, float scale, int nsplit,
                   float* partials, uint16_t* dk, uint16_t* dv) {
  constexpr int Bc = kBwdWarps * 16;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_kernel<D, kMinBlocks>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(bwd_smem<D>())));
    return true;
  }();
  (void)attr;
  const int64_t slot = T * Hkv * D;
  const dim3 grid = dim3(unsigned((max_seqlen + Bc - 1) / Bc), unsigned(B), unsigned(Hkv * nsplit));
  flash_bwd_kernel<D, kMinBlocks><<<grid, kBwdWarps * 32, bwd_smem<D>(), stream()>>>(
      dout, q, k, v, lse, delta, cu, int(Hq), int(Hkv), scale, partials, dk, dv, nsplit, slot);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_bwd");
}

template <int D, int kMinBlocks>
void launch_bwd_dq(const uint16_t* dout, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                   const float* lse, const float* delta, const int32_t* cu, int64_t B,
                   int64_t max_seqlen, int64_t Hq, int64_t Hkv, float scale, uint16_t* dq) {
  constexpr int Br = kBwdWarps * 16;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_dq_kernel<D, kMinBlocks>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(bwd_dq_smem<D>())));
    return true;
  }();
  (void)attr;
  const dim3 qgrid = dim3(unsigned((max_seqlen + Br - 1) / Br), unsigned(B), unsigned(Hq));
  flash_bwd_dq_kernel<D, kMinBlocks><<<qgrid, kBwdWarps * 32, bwd_dq_smem<D>(), stream()>>>(
      dout, q, k, v, lse, delta, cu, int(Hq), int(Hkv), scale, dq);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_bwd_dq");
}

}  // namespace

void flash_attention_bf16_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                              const uint16_t* v, const uint16_t* out, const float* lse,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                              uint16_t* dk, uint16_t* dv, float* partials, float* delta) {
  if (T == 0 || B == 0 || max_seqlen == 0) return;
  cudaStream_t s = stream();
  const int64_t rows = T * Hq;
  flash_delta_kernel<<<unsigned((rows + 7) / 8), 256, 0, s>>>(dout, out, rows, int(D), delta);
  GYRE_CUDA_LAUNCHED("flash_delta");
  const int nsplit = bwd_gqa_split(D, Hq, Hkv);
  if (D == 64) {
    launch_bwd_kv<64, 3>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, T, Hq, Hkv, scale,
                         nsplit, partials, dk, dv);
    launch_bwd_dq<64, 3>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, dq);
  } else {
    launch_bwd_kv<128, 1>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, T, Hq, Hkv, scale,
                          nsplit, partials, dk, dv);
    launch_bwd_dq<128, 2>(dout, q, k, v, lse, delta, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, dq);
  }
  if (nsplit > 1) {
    const int64_t slot = T * Hkv * D;
    reduce_dkdv_kernel<<<grid_for(slot, 256), 256, 0, s>>>(partials, nsplit, slot, scale, dk, dv);
    GYRE_CUDA_LAUNCHED("flash_reduce_dkdv");
  }
}

}  // namespace gyre::cuda
