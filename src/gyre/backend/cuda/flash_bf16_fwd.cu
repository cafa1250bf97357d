// bf16 FlashAttention-2 forward (flash_attention_bf16_fwd in kernels.h; shared pieces and the
// block order in flash_bf16_common.cuh).
//
// A block (4 warps) owns 128 query rows of one (sequence, head): each warp owns 2 m-tiles of 16
// rows, re-reads their Q fragments from shared memory and uses every K/V fragment it loads for
// both. The block streams the sequence's keys/values in tiles of Bc through double-buffered shared
// memory and keeps the online-softmax state (row max, row sum, output accumulators) in registers;
// scores are in log2 units (scale * log2 e) so exp2 is one instruction. lse is saved in
// natural-log units. Key tiles of 64 at D = 128 and of 128 at D = 64.
// These are the measured defaults; the other shapes that set_flash_fwd_rows_per_warp /
// set_flash_bf16_tuning used to select were slower on an H200 and were removed (session 5): 8 warps
// x 16 rows with Q in registers (D = 128: 196.6 against 222.1 TFLOP/s,
// notes/device_measurements.md) and, at D = 64, 8 x 16 x 128, 8 x 32 x 64, 4 x 16 x 128 and 4 x 32
// x 64 (warps x rows x keys; session 4's tile sweep, 4 x 32 x 128 reached 195 TFLOP/s at 4 x 4096
// with 14/2 heads).
#include <cuda_bf16.h>

#include <cmath>

#include "gyre/backend/cuda/flash_bf16_common.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using namespace flash_bf16_detail;

constexpr int kFwdWarps = 4;   // warps per block
constexpr int kFwdMTiles = 2;  // m-tiles of 16 query rows per warp (Br = 128)

template <int D, int Bc>
__global__ void __launch_bounds__(kFwdWarps * 32, 8 / kFwdWarps)
    flash_fwd_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                     const uint16_t* __restrict__ v, const int32_t* __restrict__ cu, int Hq,
                     int Hkv, float scale_log2, uint16_t* __restrict__ out, float* __restrict__ lse,
                     int n_qtiles) {
  constexpr int NW = kFwdWarps, MT = kFwdMTiles;
  constexpr int Br = NW * 16 * MT, S = D + 8, kThreads = NW * 32, KS = D / 16;
  constexpr int NT = Bc / 8;  // n-tiles of 8 keys
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* sQ = smem;
  uint16_t* sK = sQ + Br * S;  // two buffers of Bc rows
  uint16_t* sV = sK + 2 * Bc * S;

  const BlockPos pos = block_pos();
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
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          ldsm_x4(qa[mt], sQ + (wr + mt * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * S + ks * 16 +
                              (lane >> 4) * 8);
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

template <int D, int Br, int Bc>
size_t fwd_smem() {
  return size_t(Br + 4 * Bc) * (D + 8) * 2;
}

template <int D, int Bc>
void launch_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int32_t* cu,
                int64_t B, int64_t max_seqlen, int64_t Hq, int64_t Hkv, float scale, uint16_t* out,
                float* lse) {
  constexpr int Br = kFwdWarps * 16 * kFwdMTiles;
  static const bool attr = [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<D, Bc>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(fwd_smem<D, Br, Bc>())));
    return true;
  }();
  (void)attr;
  const int n_qtiles = int((max_seqlen + Br - 1) / Br);
  const dim3 grid = dim3(unsigned(n_qtiles), unsigned(B), unsigned(Hq));
  flash_fwd_kernel<D, Bc><<<grid, kFwdWarps * 32, fwd_smem<D, Br, Bc>(), stream()>>>(
      q, k, v, cu, int(Hq), int(Hkv), scale * kLog2e, out, lse, n_qtiles);
  GYRE_CUDA_LAUNCHED("flash_attention_bf16_fwd");
}

}  // namespace

bool flash_bf16_supported(int64_t D) { return D == 64 || D == 128; }

void flash_attention_bf16_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                              float* lse) {
  if (T == 0 || B == 0 || max_seqlen == 0) return;
  if (D == 64)
    launch_fwd<64, 128>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
  else
    launch_fwd<128, 64>(q, k, v, cu_seqlens, B, max_seqlen, Hq, Hkv, scale, out, lse);
}

}  // namespace gyre::cuda
