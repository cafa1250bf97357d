// Fused decode GEMVs (gemv_fused.h): the q/k/v or gate/up linears of a decoder layer in one
// launch, gate/up with the SiLU·mul epilogue, and o/down with the residual add in the epilogue.
//
// Why: a batch-1 decode step of a small model is ~530 kernels of a few microseconds each (issue
// 7); the weights stream at the same speed whether one launch or three reads them, so merging
// launches removes latency without adding bytes.
//
// Bitwise equality with the unfused GEMV path: every column's sum is gemv::column_sums (the plain
// kernel's code, with the same split S = gemv::split_for(K) warps per column: K alone decides S),
// the bias is added the same way (gemv::with_bias), and the epilogues are the unfused kernels'
// expressions — silu_mul's `g / (1.0f + expf(-g)) * u` (silu.cuh) and add's `a + b` — in the same
// f32 operations, with no multiply-add the compiler could contract differently. The gate/up
// epilogue first rounds both column values to bf16 (round to nearest even): the unfused path is
// ops::linear into bf16 gate/up tensors (the GEMV's f32 value, then f32_to_bf16), then silu_mul on
// them (silu_bf16.cu: bf16 -> f32 exactly, then the same expression).
//
// RMSNorm prologue (kNorm, the *_rms entry points): rms_norm's output is the GEMV's only input, so
// instead of a separate rms_norm launch each block recomputes the M row rstds (rms_row.cuh: the
// rms_norm kernel's code, at its block size rms::kThreads) and dot_rows_impl normalises x while
// loading it. Those blocks have 8 warps instead of 4 (the reduction's order depends on the block
// size, so it stays rms::kThreads whatever S is: 8 / S columns per block); S warps still own one
// output column in the plain kernel's order, so the column arithmetic is unchanged. The prologue
// is dot_rows_impl's: it runs after each lane's first batch of weight loads is issued (those do
// not depend on rstd), so the loads' latency hides the reduction's, and before any warp leaves
// (block_sum synchronises the whole block: warps without a column take part with live = false);
// with S = 4 there are 4x more blocks than columns / 8, each recomputing the rstds (only K >= 4096
// rows, i.e. hidden sizes of 4096 and up, take that path). At M = 1 (kTileLoop) the grid is capped
// at the blocks resident at once and each block loops over several column tiles (for_tiles), so
// the reduction runs once per block rather than once per 8 / S columns.
#include <cstdint>
#include <type_traits>

#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/gemv_rms_prologue.cuh"
#include "gyre/backend/cuda/gemv_stream.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"

namespace gyre::cuda {

namespace {

// Threads per block: the plain GEMV's 4 warps, or rms_norm's block size with the prologue.
template <bool kNorm>
constexpr int kThreadsOf = kNorm ? rms::kThreads : gemv::kWarpsPerBlock * 32;
constexpr int kThreads = kThreadsOf<false>;
static_assert(rms::kThreads % 32 == 0 && rms::kThreads <= 1024, "whole warps, one block");

// Warps per block, and output columns per block with S warps per column.
template <bool kNorm>
constexpr int kWarpsOf = kThreadsOf<kNorm> / 32;
template <bool kNorm, int S>
constexpr int kColumnsOf = kWarpsOf<kNorm> / S;

// Blocks for `columns` output columns.
template <bool kNorm, int S>
unsigned blocks_for(int64_t columns) {
  return unsigned((columns + kColumnsOf<kNorm, S> - 1) / kColumnsOf<kNorm, S>);
}

// This warp's column in column tile `tile` (the tile's columns in order; S adjacent warps per
// column). Without kNorm a block computes one tile, tile blockIdx.x.
template <bool kNorm, int S>
__device__ __forceinline__ int64_t warp_column(int64_t tile) {
  return tile * kColumnsOf<kNorm, S> + gemv::column_slot<S>();
}
template <bool kNorm, int S>
__device__ __forceinline__ int64_t warp_column() {
  return warp_column<kNorm, S>(blockIdx.x);
}

// The *_rms kernels' column tiles: with kTileLoop a block loops over tiles blockIdx.x, blockIdx.x +
// gridDim.x, ... < tiles (the grid is sized to the resident blocks, grid_of), so the rstd
// reduction runs ONCE per block instead of once per tile: the first tile's prologue is RmsRstd
// (after that tile's first batch of weight loads, as before), the later tiles' copies the rstds
// kept in registers (their loads are issued the same way, nothing else to hide). Every f32
// operation of a column is the same (the same reduction at the same block size, the same
// dot_rows_impl), so the results are bitwise those of one tile per block; block 0's side outputs
// (RmsRstd: xn, rstd) are written once, in its first tile. Without kTileLoop the grid is one block
// per tile and body(blockIdx.x, ...) runs once, as before.
// body(tile, prologue, wait_free, release) computes the block's columns of `tile`; the flags are
// combine_parts' (a slot's column is live in a tile iff tile · columns-per-block + slot < columns,
// monotonic in the tile, so release at one tile == wait_free at the block's next).
//
// Only for M <= kTileLoopMaxRows: the loop keeps the rstds and the tile bookkeeping live across
// the tiles, which costs registers (M = 1: silu_mul_rms 102 -> 112, group_rms 74 -> 75, no
// spills; at M >= 2 ptxas spilled in some variants and silu_mul_rms<8> went to 144 registers,
// 1 block/SM), so larger M keep one tile per block and the per-block reduction.
constexpr int kTileLoopMaxRows = 1;
template <bool kNorm, int M>
constexpr bool kTileLoop = (kNorm && M <= kTileLoopMaxRows);

template <int M, bool kNorm, int S, typename Body>
__device__ __forceinline__ void for_tiles(const float* x, const RmsPrologue& nrm, int64_t K,
                                          int64_t columns, Body&& body) {
  if constexpr (!kTileLoop<kNorm, M>) {
    body(int64_t(blockIdx.x), RmsRstd<M, kNorm>{x, nrm, K}, false, false);
  } else {
    constexpr int64_t kCols = kColumnsOf<kNorm, S>;
    const int64_t tiles = (columns + kCols - 1) / kCols;
    const int slot = gemv::column_slot<S>();
    float rs[M];  // the block's row rstds, from the first tile's prologue
    // The first tile (every block has one: grid <= tiles) with the block-wide reduction.
    int64_t tile = blockIdx.x;
    body(
        tile,
        [&](float(&r)[M]) {
          RmsRstd<M, true>{x, nrm, K}(r);
#pragma unroll
          for (int m = 0; m < M; ++m) rs[m] = r[m];
        },
        false, (tile + gridDim.x) * kCols + slot < columns);
    // The later tiles: no barrier but the columns' own (combine_parts).
    for (tile += gridDim.x; tile < tiles; tile += gridDim.x)
      body(
          tile,
          [&](float(&r)[M]) {
#pragma unroll
            for (int m = 0; m < M; ++m) r[m] = rs[m];
          },
          true, (tile + gridDim.x) * kCols + slot < columns);
  }
}

// Columns [0, n_0) belong to member 0, the next n_1 to member 1, ...; blocks may straddle members.
template <int M, bool kNorm, int S>
__global__ void __launch_bounds__(kThreadsOf<kNorm>)
    gemv_group_kernel(const float* __restrict__ x, RmsPrologue nrm, GemvGroup g, int64_t K) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  const int lane = int(threadIdx.x) & 31;
  int64_t columns = 0;
#pragma unroll
  for (int i = 0; i < kGemvGroupMax; ++i)
    if (i < g.count) columns += g.n[i];
  for_tiles<M, kNorm, S>(
      x, nrm, K, columns, [&](int64_t tile, auto&& prologue, bool wait_free, bool release) {
        int64_t n = warp_column<kNorm, S>(tile);
        // Select the member with compile-time indices only (no dynamic indexing of the parameter
        // struct, which would copy it to local memory).
        const uint16_t* w = nullptr;
        const float* b = nullptr;
        float* y = nullptr;
        int64_t N = 0;
        bool found = false;
#pragma unroll
        for (int i = 0; i < kGemvGroupMax; ++i) {
          if (!found && i < g.count) {
            if (n < g.n[i]) {
              w = g.w[i], b = g.b[i], y = g.y[i], N = g.n[i];
              found = true;
            } else {
              n -= g.n[i];
            }
          }
        }
        // Past the last member's columns (whole warps, and all S of the column): no column. With
        // kNorm the warp still joins the block's rstd reduction, as column_sums' live = false.
        if (!kNorm && !found) return;
        const int64_t K8 = K / 8;
        const uint4* const wr[1] = {found ? reinterpret_cast<const uint4*>(w) + n * K8 : nullptr};
        float acc[1][M];
        if (!gemv::column_sums<M, 1, kNorm, S, kWarpsOf<kNorm>>(x, nrm.w, wr, K8, found, lane, acc,
                                                                prologue, wait_free, release))
          return;
        if (lane == 0)
#pragma unroll
          for (int m = 0; m < M; ++m) y[m * N + n] = gemv::with_bias(acc[0][m], b, n);
      });
}

template <int M, bool kNorm, int S>
__global__ void __launch_bounds__(kThreadsOf<kNorm>)
    gemv_silu_mul_kernel(const float* __restrict__ x, RmsPrologue nrm, const uint4* __restrict__ wg,
                         const float* __restrict__ bg, const uint4* __restrict__ wu,
                         const float* __restrict__ bu, int64_t N, int64_t K,
                         float* __restrict__ out) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  const int lane = int(threadIdx.x) & 31;
  for_tiles<M, kNorm, S>(
      x, nrm, K, N, [&](int64_t tile, auto&& prologue, bool wait_free, bool release) {
        const int64_t n = warp_column<kNorm, S>(tile);
        // A column past N (all S warps of it together): with kNorm it still joins the block's rstd
        // reduction, as column_sums' live = false.
        const bool live = n < N;
        if (!kNorm && !live) return;
        const int64_t K8 = K / 8;
        const uint4* const wr[2] = {live ? wg + n * K8 : wg, live ? wu + n * K8 : wu};
        float acc[2][M];
        if (!gemv::column_sums<M, 2, kNorm, S, kWarpsOf<kNorm>>(x, nrm.w, wr, K8, live, lane, acc,
                                                                prologue, wait_free, release))
          return;
        if (lane == 0)
#pragma unroll
          for (int m = 0; m < M; ++m) {
            // The autocast MLP's gate and up are bf16 (docs/cuda.md): the column value the plain
            // GEMV stores, rounded as f32_to_bf16 rounds it (round_bf16: round to nearest even,
            // back to f32 exactly), is the value ops::silu_mul reads from ops::linear's bf16 y.
            const float g = gemv::round_bf16(gemv::with_bias(acc[0][m], bg, n));
            const float u = gemv::round_bf16(gemv::with_bias(acc[1][m], bu, n));
            out[m * N + n] = silu_mul_value(g, u);  // silu_mul's expression (silu.cuh)
          }
      });
}

// r and y may be the same buffer: not __restrict__. kAheadOf: gemv::deep_batch_for's depth, or 0.
template <int M, int S, int kAheadOf = 0>
__global__ void __launch_bounds__(kThreads)
    gemv_residual_kernel(const float* __restrict__ x, const uint4* __restrict__ w,
                         const float* __restrict__ b, const float* r, int64_t N, int64_t K,
                         float* y) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  const int lane = int(threadIdx.x) & 31;
  const int64_t n = warp_column<false, S>();
  if (n >= N) return;  // all S warps of the column together
  const int64_t K8 = K / 8;
  const uint4* const wr[1] = {w + n * K8};
  float acc[1][M];
  if (!gemv::dot_rows<M, 1, S, kWarpsOf<false>, kAheadOf>(x, wr, K8, lane, acc)) return;
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float lin = gemv::with_bias(acc[0][m], b, n);  // what linear_gemv_bf16 stores
      y[m * N + n] = lin + r[m * N + n];                   // add_kernel: out = a + b
    }
}

// Blocks of kKernel (a *_rms kernel, rms::kThreads threads) resident on the device at once: its
// occupancy per SM times the SM count, queried once per kernel and cached (the device's, as
// sm_count()).
template <auto kKernel>
int64_t resident_blocks() {
  static const int64_t n = [] {
    int per_sm = 0;
    GYRE_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, rms::kThreads, 0));
    return int64_t(per_sm > 0 ? per_sm : 1) * sm_count();
  }();
  return n;
}

// The grid of kKernel for `tiles` column tiles: one block per tile without the tile loop; with it
// (kTileLoop: kNorm and small M) at most the resident blocks, each looping over its tiles
// (for_tiles), so each block computes the rstds once however many tiles there are (silu_mul_rms of
// Qwen2.5-0.5B at M = 1: 608 tiles, 2 blocks/SM, 264 blocks on an H200 instead of ~2.3 waves each
// paying the reduction). Never more blocks than tiles: every block must have a first tile (the
// block-wide reduction).
template <bool kLoop, auto kKernel>
unsigned grid_of(int64_t tiles) {
  if constexpr (kLoop) {
    const int64_t r = resident_blocks<kKernel>();
    return unsigned(tiles < r ? tiles : r);
  } else {
    return unsigned(tiles);
  }
}

// The group launch with or without the prologue (nrm.w null without).
template <bool kNorm>
void launch_group(const float* x, const RmsPrologue& nrm, const GemvGroup& g, int64_t M,
                  int64_t K) {
  int64_t columns = 0;
  for (int i = 0; i < g.count; ++i) columns += g.n[i];
  if (columns == 0) return;
  // The weights streamed through shared memory where switched on (gemv_stream.h).
  if (gemv_stream_group(x, kNorm ? &nrm : nullptr, g, M, K)) return;
  gemv::with_rows(M, [&](auto m) {
    gemv::with_split(K, [&](auto s) {
      constexpr int S = decltype(s)::value;
      constexpr auto kernel = gemv_group_kernel<decltype(m)::value, kNorm, S>;
      constexpr bool kLoop = kTileLoop<kNorm, decltype(m)::value>;
      launch_pdl(kNorm ? "gemv_bf16_group_rms" : "gemv_bf16_group", kernel,
                 grid_of<kLoop, kernel>(blocks_for<kNorm, S>(columns)), kThreadsOf<kNorm>, 0, x,
                 nrm, g, K);
    });
  });
}

template <bool kNorm>
void launch_silu_mul(const float* x, const RmsPrologue& nrm, const uint16_t* wg, const float* bg,
                     const uint16_t* wu, const float* bu, int64_t M, int64_t N, int64_t K,
                     float* out) {
  if (N == 0) return;
  // The weights streamed through shared memory where switched on (gemv_stream.h).
  if (gemv_stream_silu_mul(x, kNorm ? &nrm : nullptr, wg, bg, wu, bu, M, N, K, out)) return;
  gemv::with_rows(M, [&](auto m) {
    gemv::with_split(K, [&](auto s) {
      constexpr int S = decltype(s)::value;
      constexpr auto kernel = gemv_silu_mul_kernel<decltype(m)::value, kNorm, S>;
      constexpr bool kLoop = kTileLoop<kNorm, decltype(m)::value>;
      launch_pdl(kNorm ? "gemv_bf16_silu_mul_rms" : "gemv_bf16_silu_mul", kernel,
                 grid_of<kLoop, kernel>(blocks_for<kNorm, S>(N)), kThreadsOf<kNorm>, 0, x, nrm,
                 reinterpret_cast<const uint4*>(wg), bg, reinterpret_cast<const uint4*>(wu), bu, N,
                 K, out);
    });
  });
}

}  // namespace

void linear_gemv_bf16_group(const float* x, const GemvGroup& g, int64_t M, int64_t K) {
  launch_group<false>(x, RmsPrologue{}, g, M, K);
}

void linear_gemv_bf16_silu_mul(const float* x, const uint16_t* wg, const float* bg,
                               const uint16_t* wu, const float* bu, int64_t M, int64_t N, int64_t K,
                               float* out) {
  launch_silu_mul<false>(x, RmsPrologue{}, wg, bg, wu, bu, M, N, K, out);
}

bool rms_prologue_supported(const float* norm_w) {
  return norm_w != nullptr && reinterpret_cast<uintptr_t>(norm_w) % 16 == 0;
}

void linear_gemv_bf16_group_rms(const float* x, const RmsPrologue& n, const GemvGroup& g, int64_t M,
                                int64_t K) {
  launch_group<true>(x, n, g, M, K);
}

void linear_gemv_bf16_silu_mul_rms(const float* x, const RmsPrologue& n, const uint16_t* wg,
                                   const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                                   int64_t N, int64_t K, float* out) {
  launch_silu_mul<true>(x, n, wg, bg, wu, bu, M, N, K, out);
}

int gemv_split_for(int64_t K) { return gemv::split_for(K); }

void linear_gemv_bf16_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                               int64_t M, int64_t N, int64_t K, float* y) {
  if (N == 0) return;
  if (gemv_stream_residual(x, w, b, r, M, N, K, y)) return;  // streamed where on (gemv_stream.h)
  gemv::with_rows(M, [&](auto m) {
    gemv::with_split(K, [&](auto s) {
      constexpr int S = decltype(s)::value;
      constexpr int kM = decltype(m)::value;
      // The batch-1 down projection of some shapes loads each lane's share in one batch
      // (gemv::deep_batch_for); only when loads issue changes, not the sums.
      const auto kernel = kM == 1 && S == 4 && gemv::deep_batch_for(K / 8, S) > 0
                              ? gemv_residual_kernel<kM, S, gemv::kDeepBatch>
                              : gemv_residual_kernel<kM, S>;
      launch_pdl("gemv_bf16_residual", kernel, blocks_for<false, S>(N), kThreads, 0, x,
                 reinterpret_cast<const uint4*>(w), b, r, N, K, y);
    });
  });
}

}  // namespace gyre::cuda
