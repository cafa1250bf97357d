// The per-column arithmetic of the small-M bf16 GEMV (decode linears), shared by gemv_bf16.cu (one
// linear) and gemv_fused.cu (grouped linears, gate/up with SiLU·mul, residual epilogue) so that a
// fused launch computes every output column bitwise as the plain GEMV does.
//
// S warps (split_for(K)) own C weight rows (C output columns of possibly different weights): they
// stream each row with 16-byte loads (8 bf16), round the matching x values to bf16 in registers
// (round to nearest even, autocast's f32_to_bf16) and keep M f32 sums per row. The fixed order of
// one row's f32 operations: lane l of the column's warp p (p < S) adds the products of the 16-byte
// vectors p·32 + l, p·32 + l + 32·S, p·32 + l + 2·32·S, ... in that order with fmaf; a butterfly
// over the warp (xor 16, 8, 4, 2, 1) adds its 32 lane sums; then warp 0 of the column adds the S
// warp sums in warp order, ((w0 + w1) + w2) + w3, read from shared memory (combine_parts). With
// S = 1 this is the one-warp-per-column order of session 7.
//
// Invariants that make fused == unfused bitwise:
//  - the order above depends only on K (through S) and on nothing else: not on C or the other
//    rows (C = 2, gate and up at once, gives bitwise the sums of two C = 1 calls), not on the block
//    size, not on M (each m's sums are independent);
//  - S = split_for(K) is a function of K alone, so every kernel variant (plain, group, silu_mul,
//    residual, *_rms with its 256-thread blocks) picks the same S for the same K. Making S depend
//    on N, M, C or the block size would give two kernels two summation orders for one column;
//  - what a kernel may change is WHEN (and through which cache) the weight bytes are loaded, never
//    an f32 operation (every kernel loads them past L1: ldg_no_l1); the *_rms
//    kernels issue each lane's first batch of weight loads before the rstd reduction
//    (dot_rows_impl's prologue), and the sums are the same bits.
// Every lane of the column's warp 0 ends with the same totals (each butterfly step adds the same
// two values in swapped order, f32 addition is commutative, and all lanes read the same partials).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/backend/cuda/rms_row.cuh"

namespace gyre::cuda::gemv {

constexpr int kWarpsPerBlock = 4;

// Split-K: warps per output column for rows of K elements, 4 from K = 4096 (so each lane of the 4
// warps still has >= 4 16-byte loads), else 1. Why: at batch 1 down_proj (N = 896, K = 4864 on
// Qwen2.5-0.5B) had one warp per column, 896 warps for 8.7 MB — too few bytes in flight per SM,
// and each lane's 19 loads took three dependent batches of kAhead (~11 us, 0.8 TB/s). Four warps
// per column give 3584 warps whose lanes load their <= 5 vectors in one batch. Short rows
// (K = 896 or 1536: q/k/v, o, gate/up) keep S = 1: their few vectors per lane are all in flight
// already, and splitting would leave lanes idle. MUST depend on K only (see the file comment).
constexpr int64_t kSplitMinK = 4096;
__host__ __device__ constexpr int split_for(int64_t K) { return K >= kSplitMinK ? 4 : 1; }

// Calls f(std::integral_constant<int, S>) with S = split_for(K) as a compile-time constant (the
// launchers' dispatch; every kernel is instantiated for S = 1 and 4).
template <typename F>
void with_split(int64_t K, F&& f) {
  static_assert(split_for(kSplitMinK) == 4 && split_for(kSplitMinK - 8) == 1, "update with_split");
  if (split_for(K) == 4) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 1>{});
}

// Calls f(std::integral_constant<int, M>) with the rows M in [1, 8] as a compile-time constant
// (the GEMV kernels are instantiated per M; M is checked by the caller: kGemvMaxRows).
template <typename F>
void with_rows(int64_t M, F&& f) {
  switch (M) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// The warp's place in its block: warps slot·S .. slot·S + S - 1 compute the block's column `slot`,
// and `part` (0..S-1) is this warp's index among them (its share of the K vectors, and its
// position in the fixed order of combine_parts).
template <int S>
__device__ __forceinline__ int column_slot() {
  return int(threadIdx.x >> 5) / S;
}
template <int S>
__device__ __forceinline__ int column_part() {
  return int(threadIdx.x >> 5) % S;
}

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// The plain GEMV's prologue (no RMSNorm): rstd is not read without kNorm. It is where the kernel
// waits for its predecessor under programmatic dependent launch (pdl.cuh): after the first batch of
// weight loads, before the first read of x.
struct NoPrologue {
  template <int M>
  __device__ __forceinline__ void operator()(float (&rstd)[M]) const {
    pdl_wait();
#pragma unroll
    for (int m = 0; m < M; ++m) rstd[m] = 0.0f;
  }
};

// A weight vector read without allocating it in L1 (ld.global.nc.L1::no_allocate): each weight
// byte is read once, while x (f32, twice the weights' bytes per lane) is read by every warp of the
// SM. Streaming the weights through L1 evicted x, so the warps re-read it from L2. Measured on an
// H200 (bench_rollout_gpu, bf16, decode fusion on):
//  - session 33, the fused M = 1 decode kernels: the Qwen2.5-1.5B batch-1 decode step 1.774 ->
//    1.647 ms a token (x of down_proj is 35 KB); 0.5B 0.848 ms with or without it;
//  - session 34, also the plain gemv_bf16 (lm_head) and the fused kernels at M = 2..8: batch 1
//    1.5B 1.610 -> 1.574 ms, 0.5B 0.842 -> 0.797; batch 8 (128 new tokens) 1,352 -> 1,438 output
//    tokens/s at 1.5B, 3,004 -> 3,102 at 0.5B. At batch 1 lm_head's own time changed little
//    (107.3 -> 104.5 us at 1.5B, CUPTI timeline); the rest of the gain showed up in the next
//    step's layer kernels (attention, q/k/v), not explained.
// A cache hint only: the loaded bits, and so every sum, are the same.
__device__ __forceinline__ uint4 ldg_no_l1(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Issues one batch of a lane's weight loads: wv[u][c] = wr[c][base + kStride · u] for the u with
// base + kStride · u < K8 (the others keep what they held; the consumer never reads them), past
// L1 (ldg_no_l1).
template <int kAhead, int C, int64_t kStride>
__device__ __forceinline__ void load_batch(uint4 (&wv)[kAhead][C], const uint4* const (&wr)[C],
                                           int64_t base, int64_t K8) {
#pragma unroll
  for (int u = 0; u < kAhead; ++u)
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (base + kStride * u < K8) wv[u][c] = ldg_no_l1(wr[c] + base + kStride * u);
}

// Warp `part` of S's share of acc[c][m] = Σ_k bf16(xin(m, k)) · w_c[k] over K = 8 · K8 (x rows of
// K floats, 16-byte aligned; wr[c] the bf16 weight row as 16-byte vectors): the vectors part·32 +
// lane + i·32·S, reduced across the warp. xin(m, k) is x[m, k], or with kNorm the RMSNorm of it,
// rms::normed(x[m, k], rstd[m], nw[k]) (nw 16-byte aligned): the value rms_norm would have stored,
// computed in registers in the same f32 operations, so the GEMV of the normed row is bitwise the
// GEMV of rms_norm's output (the fused decode prologue).
//
// prologue(rstd) fills the M row rstds: with kNorm the RMSNorm's block-wide reduction
// (gemv_fused.cu's RmsRstd), without it nothing that costs (NoPrologue). It runs AFTER the lane's
// first batch of weight loads is issued and BEFORE any product: the weight bytes do not depend on
// rstd or x, only the FMAs do, so the HBM latency of the first kAhead · C loads overlaps the
// reduction (the row's read + block_sum) instead of following it (issue 7: the *_rms kernels paid
// the two back to back). Every prologue starts with pdl_wait (pdl.cuh): under programmatic
// dependent launch the first batch is loaded while the previous kernel still runs, and nothing the
// previous kernels wrote (x, the residual) is read before the prologue. INVARIANT: only WHEN the
// weight bytes are loaded moved, into registers (an L2 prefetch there was slower); every f32
// operation (the per-lane k order, the butterfly, combine_parts' warp order, the reduction in the
// prologue and its block size) is the one of the file comment, so the sums stay bitwise those of
// the unfused rms_norm + GEMV. The prologue may be block-wide (row_rstd synchronises the block), so
// every thread of the block must get here: a warp whose column is past the end passes live = false
// (it starts past K8: no loads, no products, acc 0) instead of returning early, and nothing before
// the prologue leaves the function.
template <int M, int C, bool kNorm, int S, int kAheadOf = 0, typename Prologue>
__device__ __forceinline__ void dot_rows_impl(const float* __restrict__ x,
                                              const float* __restrict__ nw,
                                              const uint4* const (&wr)[C], int64_t K8, bool live,
                                              int part, int lane, float (&acc)[C][M],
                                              Prologue&& prologue) {
  const int64_t K = K8 * 8;
  constexpr int64_t kStride = 32 * S;  // between one lane's consecutive vectors
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[c][m] = 0.0f;
  // The weight vectors of kAhead iterations are loaded before any of them is used, so each lane
  // keeps up to kAhead · C 16-byte loads in flight (one at a time left a 0.5B decode's o_proj at
  // 7.5 us where its 1.6 MB need 0.5 us: latency-bound). The products are still added in the
  // lane's order k8 = first, first + kStride, ..., so the sums are bitwise those of the
  // one-at-a-time loop. Eight ahead while one or two rows of products are live; fewer as M·C
  // grows so the accumulators and the loaded vectors still fit in registers.
  // kAheadOf > 0 overrides the depth (deep_batch_for: a lane's whole share in one batch).
  constexpr int kAhead = kAheadOf > 0 ? kAheadOf : (M * C <= 2 ? 8 : (M * C <= 4 ? 4 : 2));
  constexpr int64_t kBatch = kStride * kAhead;  // between one lane's consecutive batches
  uint4 wv[kAhead][C];
  int64_t base = live ? int64_t(part) * 32 + lane : K8;
  const int64_t first = base;
  // The first batch is issued before the prologue (the wait for the previous kernel, and with
  // kNorm the rstd reduction); the loop's first iteration uses it.
  load_batch<kAhead, C, kStride>(wv, wr, base, K8);
  float rstd[M];
  prologue(rstd);
  for (; base < K8; base += kBatch) {
    if (base != first) load_batch<kAhead, C, kStride>(wv, wr, base, K8);
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t k8 = base + kStride * u;
      if (k8 >= K8) break;
      float wf[C][8];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const uint4 w = wv[u][c];
        wf[c][0] = bf16_lo(w.x), wf[c][1] = bf16_hi(w.x), wf[c][2] = bf16_lo(w.y);
        wf[c][3] = bf16_hi(w.y), wf[c][4] = bf16_lo(w.z), wf[c][5] = bf16_hi(w.z);
        wf[c][6] = bf16_lo(w.w), wf[c][7] = bf16_hi(w.w);
      }
      float4 na{}, nb{};  // the norm weights of these 8 columns, shared by the M rows
      if constexpr (kNorm) {
        const float4* nr = reinterpret_cast<const float4*>(nw) + k8 * 2;
        na = nr[0], nb = nr[1];
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4* xr = reinterpret_cast<const float4*>(x + m * K) + k8 * 2;
        float4 a = xr[0], b = xr[1];
        if constexpr (kNorm) {
          const float r = rstd[m];
          a = make_float4(rms::normed(a.x, r, na.x), rms::normed(a.y, r, na.y),
                          rms::normed(a.z, r, na.z), rms::normed(a.w, r, na.w));
          b = make_float4(rms::normed(b.x, r, nb.x), rms::normed(b.y, r, nb.y),
                          rms::normed(b.z, r, nb.z), rms::normed(b.w, r, nb.w));
        }
        const float xv[8] = {round_bf16(a.x), round_bf16(a.y), round_bf16(a.z), round_bf16(a.w),
                             round_bf16(b.x), round_bf16(b.y), round_bf16(b.z), round_bf16(b.w)};
#pragma unroll
        for (int c = 0; c < C; ++c) {
          float s = acc[c][m];
#pragma unroll
          for (int j = 0; j < 8; ++j) s = fmaf(xv[j], wf[c][j], s);
          acc[c][m] = s;
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s = acc[c][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      acc[c][m] = s;
    }
}

// Adds the S warp sums of each column of a block of W warps in the fixed order ((w0 + w1) + w2) +
// ..., through shared memory: warps 1..S-1 of a column store their sums and arrive at the column's
// named barrier (id 1 + slot; 0 is __syncthreads', which block_sum uses), warp 0 waits there and
// adds them after its own. Returns whether this warp holds the column's totals (part 0) and must
// write the epilogue; the others are done. The S warps of a column must all call it or all have
// returned (they share the column index, so every caller's "column out of range" exit is the same
// for all of them); other columns' warps may have exited, as a named barrier counts only its own
// S·32 threads.
//
// Reuse across a block's column tiles (the *_rms kernels' grid-stride loop: one slot computes one
// column per tile): warp 0 may still be reading the slot's entries of tile t while warps 1..S-1
// have finished tile t + 1's sums, and a second bar.arrive on the same barrier before warp 0's
// bar.sync would complete it without warp 0. So the entries are handed back through a second
// named barrier per slot (id 1 + W/S + slot): warp 0 arrives there after reading (release: the
// slot's column is live in the block's next tile too), and warps 1..S-1 wait there before
// writing (wait_free: not the slot's first tile). The two flags must match across tiles (release
// at tile t exactly when wait_free at the next tile), which the callers get from liveness being
// monotonic in the tile. A single tile (every other kernel) passes neither: each entry is then
// written once per launch and no barrier follows it. Only WHEN the partials move changes, not the
// order in which warp 0 adds them.
template <int M, int C, int S, int W>
__device__ __forceinline__ bool combine_parts(float (&acc)[C][M], int lane, bool wait_free = false,
                                              bool release = false) {
  static_assert(W % S == 0 && (S == 1 || 2 * (W / S) <= 15),
                "whole columns per block, two named barriers each (forward and hand-back)");
  if constexpr (S == 1) {
    return true;
  } else {
    __shared__ float parts[W][C][M];
    const int warp = int(threadIdx.x >> 5), slot = warp / S, threads = S * 32;
    const int back = 1 + W / S + slot;  // the hand-back barrier of this slot
    if (warp % S != 0) {
      if (wait_free) {
        __syncwarp();
        // Warp 0 has read this slot's previous entries (its bar.arrive orders those reads first).
        asm volatile("bar.sync %0, %1;" ::"r"(back), "r"(threads) : "memory");
      }
      if (lane == 0)
#pragma unroll
        for (int c = 0; c < C; ++c)
#pragma unroll
          for (int m = 0; m < M; ++m) parts[warp][c][m] = acc[c][m];
      __syncwarp();  // the whole warp at the barrier instruction (bar is .aligned)
      // bar.arrive orders this thread's shared stores before the waiting bar.sync (PTX ISA).
      asm volatile("bar.arrive %0, %1;" ::"r"(1 + slot), "r"(threads) : "memory");
      return false;
    }
    asm volatile("bar.sync %0, %1;" ::"r"(1 + slot), "r"(threads) : "memory");
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float s = acc[c][m];
#pragma unroll
        for (int p = 1; p < S; ++p) s += parts[warp + p][c][m];  // warp order: fixed
        acc[c][m] = s;
      }
    if (release) {
      __syncwarp();
      asm volatile("bar.arrive %0, %1;" ::"r"(back), "r"(threads) : "memory");
    }
    return true;
  }
}

// The column's totals for a block of W warps: dot_rows_impl for this warp's share (prologue as
// there), then combine_parts. Returns whether this warp holds them (write the epilogue from its
// lane 0): false for the warps of a column that is not live (all S of them are, or none).
// wait_free / release: combine_parts' reuse flags, for a block that loops over column tiles.
template <int M, int C, bool kNorm, int S, int W, int kAheadOf = 0, typename Prologue>
__device__ __forceinline__ bool column_sums(const float* __restrict__ x,
                                            const float* __restrict__ nw,
                                            const uint4* const (&wr)[C], int64_t K8, bool live,
                                            int lane, float (&acc)[C][M], Prologue&& prologue,
                                            bool wait_free = false, bool release = false) {
  dot_rows_impl<M, C, kNorm, S, kAheadOf>(x, nw, wr, K8, live, column_part<S>(), lane, acc,
                                          prologue);
  return live && combine_parts<M, C, S, W>(acc, lane, wait_free, release);
}

// The plain GEMV's sums: acc[c][m] = Σ_k bf16(x[m, k]) · w_c[k]. kAheadOf: dot_rows_impl's.
template <int M, int C, int S, int W, int kAheadOf = 0>
__device__ __forceinline__ bool dot_rows(const float* __restrict__ x, const uint4* const (&wr)[C],
                                         int64_t K8, int lane, float (&acc)[C][M]) {
  return column_sums<M, C, false, S, W, kAheadOf>(x, nullptr, wr, K8, true, lane, acc,
                                                  NoPrologue{});
}

// A batch one deeper than the default 8 where that puts a lane's whole share of a single-row,
// single-weight column (S warps of 32 lanes over K8 vectors) in ONE batch: 8 < ceil(K8 / (32 S))
// <= 9 (Qwen2.5-1.5B's down projection at batch 1: K = 8960, S = 4, 8.75 vectors a lane, whose
// second batch of one vector cost a full DRAM round trip). Only there: the deeper batch holds 4
// more registers a lane for every launch, which lowers occupancy — deeper still (12) or
// everywhere at S = 4 was slower (H200, session 37: Qwen2.5-0.5B's down, 4.75 vectors a lane,
// lost 0.7% a token with depth 9). Returns kDeepBatch (dot_rows' kAheadOf) there, 0 elsewhere.
constexpr int kDeepBatch = 9;
__host__ __device__ constexpr int deep_batch_for(int64_t K8, int S) {
  const int64_t per_lane = (K8 + 32 * S - 1) / (32 * S);
  return per_lane > kDeepBatch - 1 && per_lane <= kDeepBatch ? kDeepBatch : 0;
}

// Column n's value with its bias, exactly as the plain GEMV writes it.
__device__ __forceinline__ float with_bias(float s, const float* __restrict__ b, int64_t n) {
  return b ? s + b[n] : s;
}

}  // namespace gyre::cuda::gemv
