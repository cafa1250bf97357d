// The fused one-pass log-prob row kernel (logprob_rows_fused.h: what it computes and its numerical
// contract). Replaces logprob_chunk_stats + logprob_chunk_finish + logprob_chunk_bwd_bf16 over
// whole-vocabulary rows: those read the f32 logits twice from HBM (stats, then backward; ~10 GB
// each per 1.5B training step), this reads them once and keeps each row on chip in between.
//
// Schedule: one thread-block cluster of K CTAs per row, K the smallest of 1, 2, 4, 8 whose slice
// of S = ceil(V / K) (rounded up to a multiple of 4) floats fits kMaxSliceFloats; CTA rank k owns
// the contiguous columns [k·S, min(V, (k + 1)·S)). Per CTA:
//   1. load: thread 0 issues the slice as kPieces cp.async.bulk copies (global -> shared, one
//      mbarrier each; 16-byte aligned rows: V % 4 == 0 and z 16-byte aligned), else every thread
//      copies elements with plain loads (a tail padded with -inf to whole groups of four);
//   2. max pass: each thread takes the float4 groups tid, tid + kThreads, ... of each piece as
//      soon as that piece has landed; block max -> the slice max m_k (of z = x·mul);
//   3. sum pass (shared memory only): s_k = Σ exp(z - m_k), w_k = Σ exp(z - m_k)(z - m_k), each
//      group's four terms summed in f32 (exp_term, as the stats kernel) and added to f64
//      per-thread partials, then block_sum's fixed order; the target's z if it is in the slice;
//   4. exchange: cluster barrier; warp 0 reads the K partials (m, s, w, z_t) from distributed
//      shared memory and folds them in rank order 0..K-1 at the row max M (s += a·s_k,
//      w += a·(w_k + (m_k - M)·s_k), a = exp(m_k - M), f64; an empty slice, s_k = 0, adds nothing)
//      — every CTA folds the same values in the same order, so all hold the same bits; rank 0
//      writes logp / entropy / lse (the finish kernel's formulas);
//   5. dz: every CTA writes its slice's bf16 dz from shared memory (dz_value with the f32 lse and
//      entropy just written, round to nearest even; 8-byte stores of four columns when aligned),
//      then waits at a second cluster barrier (arrived at right after step 4's reads) so that no
//      CTA leaves while another may still read its partial.
//
// In place (dz over z, ldz = 2V): row r's bf16 dz covers the first 2V bytes of its f32 row, i.e.
// the f32 values of columns [0, V/2) — other CTAs' slices. Invariant: no CTA of a cluster stores
// dz before every CTA of that cluster has read its whole slice from global memory. Each thread
// waits on every piece's mbarrier (or the CTA's __syncthreads after the plain loads) before the
// exchange's cluster barrier (release / acquire), and every store comes after it; rows of other
// clusters are disjoint bytes. (K = 1: the block barrier inside step 2's block_max orders them.)
//
// Grid: one cluster per row (n·K CTAs), not persistent. At V = 151,936, K = 8, S = 18,992 floats
// = 75,968 bytes of shared memory per CTA; with 512 threads and <= 64 registers two CTAs fit an
// SM (2 x ~75 KB of 228 KB). The hardware scheduler overlaps one CTA's load (step 1) with the
// other's compute and stores (steps 2-5). A persistent kernel would need a double-buffered slice
// for the same overlap (2 x 76 KB: one CTA an SM), more code for no more bytes in flight.
// Memory-level parallelism: each CTA has its whole slice (76 KB) in flight at once from its first
// instruction; Little's law asks ~4.8 TB/s x ~1 us loaded latency / 132 SMs ≈ 36 KB in flight per
// SM, so one CTA in its load phase alone keeps the SM's share of HBM busy, and the two CTAs an SM
// cover each other's compute phases. Target: 6V bytes a row (f32 in, bf16 out) at ~3.6 TB/s:
// 2048 x 151,936 in ≈ 0.5 ms of traffic, ≲ 0.85 ms with the ~40 instructions an element (two
// exps) partly exposed — vs 3.05 + 3.97 ms per step for the stats + backward kernels today.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <utility>

#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/logprob_row_math.cuh"
#include "gyre/backend/cuda/logprob_rows_fused.h"
#include "gyre/backend/cuda/mbarrier.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

namespace cg = cooperative_groups;
using namespace logprob_detail;

constexpr int kThreads = 512;  // 16 warps; two CTAs an SM at <= 64 registers a thread
// The shared-memory budget of one slice: 108 KiB, so that two CTAs (plus ~1 KB of static shared
// memory and the 1 KB the hardware reserves per CTA) fit the H100 / H200's 228 KB an SM. K = 8
// then holds rows up to 221,184 logits.
constexpr int64_t kMaxSliceFloats = 27648;
constexpr int kMaxCluster = 8;  // the portable cluster size limit
// Bulk copies (each with its own mbarrier) a slice is split into, so that the max pass starts on
// the first quarter while the rest is in flight.
constexpr int kPieces = 4;

std::atomic<bool> g_fused_enabled{true};

// Floats in each CTA's slice for cluster size K (the last slice may be shorter): a multiple of 4,
// so every slice starts 16-byte aligned in a 16-byte aligned row.
int64_t slice_floats(int64_t V, int K) { return ((V + K - 1) / K + 3) / 4 * 4; }

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// A CTA's partial statistics of its slice: m = max z (-inf for an empty or all -inf slice),
// s = Σ exp(z - m), w = Σ exp(z - m)(z - m) (0 and 0 then), and the target's z if has_t.
struct Partial {
  double s, w;
  float m, zt;
  int has_t;
};

// Global -> shared bulk copy of `bytes` (a multiple of 16; both addresses 16-byte aligned),
// completing on `bar`'s transaction count.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// kVec: bulk loads and 8-byte dz stores (V % 4 == 0, z 16-byte and dz 8-byte aligned, ldz % 4 ==
// 0); otherwise element loads and 2-byte stores. S: slice_floats(V, K).
template <int K, bool kVec>
__global__ void __launch_bounds__(kThreads, 2)
    rows_fused_kernel(const float* z, const int32_t* __restrict__ targets, int64_t V, int64_t S,
                      float mul, const float* __restrict__ dlogp,
                      const float* __restrict__ dentropy, float* __restrict__ logp,
                      float* __restrict__ entropy, float* __restrict__ lse, uint16_t* dz,
                      int64_t ldz) {
  extern __shared__ __align__(128) float slice[];  // S floats: this CTA's columns of the row
  __shared__ __align__(8) uint64_t bars[kPieces];
  __shared__ Partial part;      // this CTA's partial, read by every CTA of the cluster
  __shared__ Partial parts[K];  // the cluster's partials by rank, copied in by threads 0..K-1
  __shared__ BwdRow row_consts;
  const int tid = int(threadIdx.x);
  int rank = 0;
  if constexpr (K > 1) rank = int(cg::this_cluster().block_rank());
  // Clusters are K consecutive blocks along x: block b is rank b % K of row b / K.
  const int64_t row = int64_t(blockIdx.x) / K;
  const int64_t c0 = int64_t(rank) * S;
  const int64_t len = V - c0 < S ? (V - c0 > 0 ? V - c0 : 0) : S;  // columns of this slice
  const int64_t G = (len + 3) / 4;                                 // float4 groups (kVec: len/4)
  const int64_t per_piece = (G + kPieces - 1) / kPieces;
  const float* zr = z + row * V + c0;
  const float4* sl4 = reinterpret_cast<const float4*>(slice);

  // 1. Load the slice.
  if constexpr (kVec) {
    if (tid == 0) {
      for (int p = 0; p < kPieces; ++p) mbar_init(smem_addr(&bars[p]), 1);
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
      for (int p = 0; p < kPieces; ++p) {
        const int64_t g0 = p * per_piece, g1 = g0 + per_piece < G ? g0 + per_piece : G;
        if (g1 <= g0) break;
        const uint32_t bytes = uint32_t(g1 - g0) * 16;
        mbar_expect_tx(smem_addr(&bars[p]), bytes);
        bulk_copy(slice + 4 * g0, zr + 4 * g0, bytes, &bars[p]);
      }
    }
    __syncthreads();  // the barriers are initialised before anyone waits on them
  } else {
    for (int64_t j = tid; j < 4 * G; j += kThreads) slice[j] = j < len ? zr[j] : -INFINITY;
    __syncthreads();
  }

  // 2. Max pass, piece by piece as they land. Every thread waits on every non-empty piece (the
  // in-place invariant above relies on it, whatever groups the thread itself takes).
  float mx = -INFINITY;
  for (int p = 0; p < kPieces; ++p) {
    const int64_t g0 = p * per_piece, g1 = g0 + per_piece < G ? g0 + per_piece : G;
    if (g1 <= g0) break;
    if constexpr (kVec) mbar_wait(smem_addr(&bars[p]), 0);
    for (int64_t g = g0 + tid; g < g1; g += kThreads) mx = fmaxf(mx, max4(sl4[g]));
  }
  // The issuing thread orders its (completed) async-proxy reads of z before its arrival at the
  // barriers that precede any dz store (the in-place invariant; a no-op for the separate buffer).
  if constexpr (kVec)
    if (tid == 0) asm volatile("fence.proxy.async.global;" ::: "memory");
  // mul > 0: max z = (max x)·mul, rounded as exp_term rounds each z, so the max element's d is 0.
  const float mz = __fmul_rn(block_max(mx), mul);

  // 3. Sum pass relative to the slice max (no rebasing: the max is known).
  double s = 0, w = 0;
  if (mz == -INFINITY) {
    // Nothing but -inf and NaN (fmaxf skips NaN) or an empty slice: no mass, and no -inf - -inf.
    // A NaN must still reach s (the row's result is NaN, as with the stats kernel and the CPU).
    bool nan_seen = false;
    for (int64_t g = tid; g < G; g += kThreads) {
      const float4 v = sl4[g];
      nan_seen |= isnan((v.x + v.y) + (v.z + v.w));
    }
    if (nan_seen) s = NAN;
  } else {
    for (int64_t g = tid; g < G; g += kThreads) {
      const float4 v = sl4[g];
      float w0, w1, w2, w3;
      const float e0 = exp_term(v.x, mul, mz, &w0), e1 = exp_term(v.y, mul, mz, &w1),
                  e2 = exp_term(v.z, mul, mz, &w2), e3 = exp_term(v.w, mul, mz, &w3);
      s += double(__fadd_rn(__fadd_rn(e0, e1), __fadd_rn(e2, e3)));
      w += double(__fadd_rn(__fadd_rn(w0, w1), __fadd_rn(w2, w3)));
    }
  }
  const double sb = block_sum(s), wb = block_sum(w);
  const int32_t tg = targets[row];
  if (tid == 0) {
    const int64_t j = int64_t(tg) - c0;
    Partial q;
    q.m = mz, q.s = sb, q.w = wb;
    q.has_t = tg >= 0 && j >= 0 && j < len;
    q.zt = q.has_t ? __fmul_rn(slice[j], mul) : 0.0f;
    part = q;
  }

  // 4. Exchange. The cluster barrier publishes every CTA's partial (release / acquire) and is the
  // in-place invariant's barrier: after it, every CTA of the row has read its slice.
  [[maybe_unused]] cg::cluster_group::arrival_token left;
  if constexpr (K > 1) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    if (tid < K) parts[tid] = *cluster.map_shared_rank(&part, tid);
    left = cluster.barrier_arrive();  // done with the other CTAs' shared memory (waited in 5)
  } else {
    if (tid == 0) parts[0] = part;
  }
  __syncthreads();
  if (tid < 32) {
    const unsigned full = 0xffffffffu;
    const Partial q = tid < K ? parts[tid] : Partial{0.0, 0.0, -INFINITY, 0.0f, 0};
    float M = q.m;  // the row max (max is exact: any order gives the same bits)
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(full, M, o));
    // Lane k rebases rank k's partial to M; an empty one (s = 0) adds nothing (and M = -inf for an
    // all -inf row must not meet -inf - -inf); a NaN one stays NaN.
    double ts = 0, tw = 0;
    if (tid < K && q.s != 0) {
      const double dm = double(q.m) - double(M);
      const double a = exp(dm);
      ts = a * q.s, tw = a * (q.w + dm * q.s);
    }
    // The fixed merge order: ranks 0, 1, ..., K - 1 (every lane, so every CTA, the same sums).
    double s_row = 0, w_row = 0;
    float zt = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      s_row += __shfl_sync(full, ts, k);
      w_row += __shfl_sync(full, tw, k);
      const float ztk = __shfl_sync(full, q.zt, k);
      if (__shfl_sync(full, q.has_t, k)) zt = ztk;
    }
    if (tid == 0) {
      // logprob_chunk_finish's formulas: log p_target = (z_t - m) - log s; H = log s - w / s;
      // lse = m + log s.
      const double log_s = log(s_row);
      const float L = float(double(M) + log_s), H = float(log_s - w_row / s_row);
      if (rank == 0) {
        logp[row] = tg < 0 ? 0.0f : float(double(__fsub_rn(zt, M)) - log_s);
        if (entropy) entropy[row] = H;
        if (lse) lse[row] = L;
      }
      // The backward's constants exactly as logprob_chunk_bwd reads them from the f32 outputs.
      BwdRow r;
      r.mul = mul;
      r.L = L;
      r.tg = tg < 0 ? -1 : int64_t(tg) - c0;  // slice-local; outside [0, len) matches nothing
      r.g_lp = tg < 0 ? 0.0f : dlogp[row];
      r.g_h = dentropy ? dentropy[row] : 0.0f;
      r.h = r.g_h != 0.0f ? H : 0.0f;
      row_consts = r;
    }
  }
  __syncthreads();
  const BwdRow r = row_consts;

  // 5. dz of the slice, from shared memory.
  uint16_t* dzr = dz + row * ldz + c0;
  if constexpr (kVec) {
    for (int64_t g = tid; g < G; g += kThreads) {
      const float4 v = sl4[g];
      const int64_t j = 4 * g;
      store_dz4(dzr + j, dz_value(v.x, j, r), dz_value(v.y, j + 1, r), dz_value(v.z, j + 2, r),
                dz_value(v.w, j + 3, r));
    }
  } else {
    for (int64_t j = tid; j < len; j += kThreads) store_dz(dzr + j, dz_value(slice[j], j, r));
  }
  if constexpr (K > 1) cg::this_cluster().barrier_wait(std::move(left));
}

template <int K, bool kVec>
void launch(const float* z, const int32_t* targets, int64_t n, int64_t V, float mul,
            const float* dlogp, const float* dentropy, float* logp, float* entropy, float* lse,
            uint16_t* dz, int64_t ldz) {
  constexpr auto kernel = rows_fused_kernel<K, kVec>;
  static std::once_flag once;
  std::call_once(once, [] {
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(kMaxSliceFloats * 4)));
    // Two 76 KB CTAs an SM need the largest shared-memory carveout.
    GYRE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
  });
  const int64_t S = slice_floats(V, K);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(n * K));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(S) * 4;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(K);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = K > 1 ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, z, targets, V, S, mul, dlogp, dentropy,
                                             logp, entropy, lse, dz, ldz);
  if (err != cudaSuccess) throw_cuda_error(err, "logprob_rows_fused", __FILE__, __LINE__);
  GYRE_CUDA_LAUNCHED("logprob_rows_fused");
}

template <int K>
void launch_any(bool vec, const float* z, const int32_t* targets, int64_t n, int64_t V, float mul,
                const float* dlogp, const float* dentropy, float* logp, float* entropy, float* lse,
                uint16_t* dz, int64_t ldz) {
  if (vec)
    launch<K, true>(z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz, ldz);
  else
    launch<K, false>(z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz, ldz);
}

}  // namespace

int logprob_rows_fused_cluster(int64_t V) {
  if (V <= 0) return 0;
  for (int K = 1; K <= kMaxCluster; K *= 2)
    if (slice_floats(V, K) <= kMaxSliceFloats) return K;
  return 0;
}

bool logprob_rows_fused_supported(int64_t V) {
  return g_fused_enabled.load(std::memory_order_relaxed) && logprob_rows_fused_cluster(V) > 0;
}

bool set_logprob_rows_fused_enabled(bool enabled) { return g_fused_enabled.exchange(enabled); }

void logprob_rows_fused(const float* z, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, const float* dlogp, const float* dentropy, float* logp,
                        float* entropy, float* lse, uint16_t* dz, int64_t ldz) {
  const int K = logprob_rows_fused_cluster(V);
  GYRE_CHECK(K > 0 && ldz >= V && n >= 0,
             "cuda::logprob_rows_fused: needs rows of at most {} logits, ldz >= V and n >= 0; got "
             "V {} ldz {} n {}",
             kMaxCluster * kMaxSliceFloats, V, ldz, n);
  GYRE_CHECK(n * K <= int64_t(0x7fffffff), "cuda::logprob_rows_fused: {} rows is too many", n);
  if (n == 0) return;
  const float mul = 1.0f / temperature;
  const bool vec = V % 4 == 0 && ldz % 4 == 0 && aligned(z, 16) && aligned(dz, 8);
  switch (K) {
    case 1:
      return launch_any<1>(vec, z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz,
                           ldz);
    case 2:
      return launch_any<2>(vec, z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz,
                           ldz);
    case 4:
      return launch_any<4>(vec, z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz,
                           ldz);
    default:
      return launch_any<8>(vec, z, targets, n, V, mul, dlogp, dentropy, logp, entropy, lse, dz,
                           ldz);
  }
}

}  // namespace gyre::cuda
