// The column tiles of the fused decode GEMVs with an RMSNorm prologue (gemv_fused.cu, gemv_mlp.cu):
// block shapes, which column a warp computes, the prologue that recomputes the row rstds, and the
// tile loop that runs it once per block. Moved here from gemv_fused.cu so that gemv_mlp.cu's
// gate/up phase is the *_rms silu_mul kernel's code, not a copy (gemv_fused.cu's header comment has
// the bitwise contract).
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/rms_row.cuh"
#include "gyre/backend/cuda/silu.cuh"

namespace gyre::cuda::gemv {

// Threads per block: the plain GEMV's 4 warps, or rms_norm's block size with the prologue.
template <bool kNorm>
constexpr int kThreadsOf = kNorm ? rms::kThreads : gemv::kWarpsPerBlock * 32;
static_assert(rms::kThreads % 32 == 0 && rms::kThreads <= 1024, "whole warps, one block");

// Warps per block, and output columns per block with S warps per column.
template <bool kNorm>
constexpr int kWarpsOf = kThreadsOf<kNorm> / 32;
template <bool kNorm, int S>
constexpr int kColumnsOf = kWarpsOf<kNorm> / S;

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

// The RMSNorm prologue, gemv::column_sums' `prologue` argument: rs[m] = rstd of row m of x
// (rms_row.cuh; block-wide: every thread of the block calls it), and block 0 also stores
// rms_norm's outputs where the caller asked for them. Without kNorm: nothing (rs is unused by
// dot_rows_impl<..., false>).
template <int M, bool kNorm>
struct RmsRstd {
  const float* x;
  const RmsPrologue& nrm;
  int64_t K;

  __device__ __forceinline__ void operator()(float (&rs)[M]) const {
    pdl_wait();  // x and the residual come from the previous kernels (pdl.cuh, NoPrologue)
#pragma unroll
    for (int m = 0; m < M; ++m) rs[m] = 0.0f;
    if constexpr (kNorm) {
      // Unrolled (M is a template constant), so rs stays in registers.
#pragma unroll
      for (int m = 0; m < M; ++m) rs[m] = rms::row_rstd(x + m * K, K, nrm.eps);
      if (blockIdx.x == 0) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (nrm.rstd && threadIdx.x == 0) nrm.rstd[m] = rs[m];
          if (nrm.xn)
            for (int64_t c = threadIdx.x; c < K; c += rms::kThreads)
              nrm.xn[m * K + c] = rms::normed(x[m * K + c], rs[m], nrm.w[c]);
        }
      }
    }
  }
};

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

// The gate/up columns with the SiLU·mul epilogue over all of the block's tiles (the silu_mul
// kernels' body; gemv_mlp.cu's first phase): store(m · N + n, silu(g) · u) for each column n of
// row m, from the column's warp-0 lane 0. on_tile(k), if given, runs on every thread at the start
// of the block's k-th tile (k = 0, 1, ...), before that tile's loads (gemv_mlp.cu issues its
// down_proj copies there).
struct NoTileHook {
  __device__ __forceinline__ void operator()(int64_t) const {}
};
template <int M, bool kNorm, int S, typename Store, typename OnTile = NoTileHook>
__device__ __forceinline__ void silu_mul_tiles(const float* __restrict__ x, const RmsPrologue& nrm,
                                               const uint4* __restrict__ wg,
                                               const float* __restrict__ bg,
                                               const uint4* __restrict__ wu,
                                               const float* __restrict__ bu, int64_t N, int64_t K,
                                               Store&& store, OnTile on_tile = {}) {
  const int lane = int(threadIdx.x) & 31;
  for_tiles<M, kNorm, S>(
      x, nrm, K, N, [&](int64_t tile, auto&& prologue, bool wait_free, bool release) {
        on_tile((tile - int64_t(blockIdx.x)) / int64_t(gridDim.x));
        const int64_t n = warp_column<kNorm, S>(tile);
        // A column past N (all S warps of it together): with kNorm it still joins the block's rstd
        // reduction, as column_sums' live = false.
        const bool live = n < N;
        if (!kNorm && !live) return;
        const int64_t K8 = K / 8;
        const uint4* const wr[2] = {live ? wg + n * K8 : wg, live ? wu + n * K8 : wu};
        float acc[2][M];
        if (!column_sums<M, 2, kNorm, S, kWarpsOf<kNorm>>(x, nrm.w, wr, K8, live, lane, acc,
                                                          prologue, wait_free, release))
          return;
        if (lane == 0)
#pragma unroll
          for (int m = 0; m < M; ++m) {
            // The autocast MLP's gate and up are bf16 (docs/cuda.md): the column value the plain
            // GEMV stores, rounded as f32_to_bf16 rounds it (round_bf16: round to nearest even,
            // back to f32 exactly), is the value ops::silu_mul reads from ops::linear's bf16 y.
            const float g = round_bf16(with_bias(acc[0][m], bg, n));
            const float u = round_bf16(with_bias(acc[1][m], bu, n));
            store(m * N + n, silu_mul_value(g, u));  // silu_mul's expression (silu.cuh)
          }
      });
}

}  // namespace gyre::cuda::gemv
