// Streamed small-batch decode GEMVs (gemv_stream.cu): the M = 1..8 gate/up (SiLU·mul, RMSNorm
// prologue), residual (o_proj, down_proj) and grouped (q/k/v, RMSNorm prologue) linears of
// gemv_fused.h with the weights copied into a shared-memory ring by the TMA (cp.async.bulk)
// instead of loaded into registers.
//
// Why: a register-loading GEMV keeps a lane's weights in flight only between its column's issue
// and its FMAs, so each block alternates a DRAM round trip with arithmetic, and a grid that does
// not divide the columns evenly ends on a partial wave. On Qwen2.5-1.5B's batch-1 decode (H200,
// session 38 trace) gate/up streamed 55 MB a layer at ~3.0 TB/s and down_proj 27.5 MB at ~2.2,
// against ~4.4 for the one large lm_head GEMV. Here each block owns a contiguous, balanced range
// of columns, and each column slot (the S warps of a column) keeps its next `ring` columns' rows
// in flight while it computes the current one.
//
// Bitwise contract: every column's f32 operations are gemv_bf16_common.cuh's (the same split
// S = split_for(K), the same per-lane order, butterfly and warp order, each of the M rows' sums
// on its own), only read from shared memory; x's M rows are staged once per block as the bf16
// values the FMAs consume (round_bf16 of x or of its RMSNorm: bf16 holds them exactly); the
// epilogues are gemv_fused.cu's. So the outputs are bitwise those of
// linear_gemv_bf16_silu_mul[_rms] / linear_gemv_bf16_residual / linear_gemv_bf16_group[_rms].
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_fused.h"

namespace gyre::cuda {

// Which fused decode GEMVs take the streamed kernels: a bit mask of the kinds below, every kind by
// default (kGemvStreamDefault), GYRE_GEMV_STREAM (an integer 0..15, parsed strictly) when set;
// set_gemv_stream_mode overrides both (tests, benchmarks). Read when a kernel is launched (so when
// a decode graph is captured).
constexpr int kGemvStreamSiluMul = 1;        // gate/up + SiLU·mul (with or without the norm)
constexpr int kGemvStreamResidual = 2;       // residual linears with unsplit rows (o_proj)
constexpr int kGemvStreamResidualSplit = 4;  // residual linears with split-K rows (down_proj)
constexpr int kGemvStreamGroup = 8;          // grouped linears (q/k/v, with or without the norm)
constexpr int kGemvStreamAll = 15;
// All of them: measured on an H200 (session 38, bench_rollout_gpu batch 1, ms a token):
//   kinds streamed       none    gate/up+o+down   + q/k/v (all)   all but o_proj
//   Qwen2.5-1.5B         1.496   1.353            1.278           1.336
//   Qwen2.5-0.5B         0.761   0.795-0.812      0.737           -
// A chain that mixes the two kernel families loses: a register kernel's many small blocks and a
// streamed kernel's few large ones overlap badly under programmatic dependent launch (each alone
// was slower than none at 0.5B, and gate/up alone at 1.5B: 1.512).
constexpr int kGemvStreamDefault = kGemvStreamAll;
int gemv_stream_mode();
void set_gemv_stream_mode(int bits);  // -1: back to the default / environment

// Shared-memory bytes of weights each block aims to keep in flight (GYRE_GEMV_STREAM_KB, default
// 64 KB): the ring gets 2..7 columns a slot within it, and within the shared memory that
// GYRE_GEMV_STREAM_BPS blocks an SM (default 2) leave each. For benchmarks; set_* overrides (0:
// back to the default).
int64_t gemv_stream_ring_bytes();
void set_gemv_stream_ring_bytes(int64_t bytes);

// The most rows of x (batch size) the streamed kernels take: M = 1..gemv_stream_max_rows(), each
// row's sums in the register kernels' order (bitwise them at every M). GYRE_GEMV_STREAM_ROWS
// (1..8) when set, else kGemvStreamRowsDefault; set_* overrides both (0: back to the default).
constexpr int64_t kGemvStreamMaxRows = 8;
// Every M: measured on an H200 (session 39, bench_rollout_gpu, batch x (128 + 256), output
// tokens/s, the register kernels at M > 1 vs the streamed ones, two runs each):
//   Qwen2.5-1.5B  batch 2   988 -> 1,267 (+28%)   batch 8  1,461 -> 1,792 (+23%)
//   Qwen2.5-0.5B  batch 2 1,967 -> 2,139 (+9%)    batch 8  3,148 -> 3,378 (+7%)
constexpr int64_t kGemvStreamRowsDefault = kGemvStreamMaxRows;
int64_t gemv_stream_max_rows();
void set_gemv_stream_max_rows(int64_t rows);

// The streamed launches. Each returns false, launching nothing, where the kernel does not apply
// (M past gemv_stream_max_rows(), its kind switched off, or no ring fits in shared memory beside
// x's M staged bf16 rows);
// the caller then launches the register kernel. Preconditions: gemv_fused.h's. nrm null: no norm
// prologue.
bool gemv_stream_silu_mul(const float* x, const RmsPrologue* nrm, const uint16_t* wg,
                          const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                          int64_t N, int64_t K, float* out);
bool gemv_stream_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                          int64_t M, int64_t N, int64_t K, float* y);
// The group's N = Σ n_i columns.
bool gemv_stream_group(const float* x, const RmsPrologue* nrm, const GemvGroup& g, int64_t M,
                       int64_t K);

}  // namespace gyre::cuda
