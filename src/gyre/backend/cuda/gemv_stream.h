// Streamed batch-1 decode GEMVs (gemv_stream.cu): the M = 1 gate/up (SiLU·mul, RMSNorm prologue),
// residual (o_proj, down_proj) and grouped (q/k/v, RMSNorm prologue) linears of gemv_fused.h with
// the weights copied into a shared-memory ring by the TMA (cp.async.bulk) instead of loaded into
// registers.
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
// S = split_for(K), the same per-lane order, butterfly and warp order), only read from shared
// memory; x is staged once per block as the bf16 values the FMAs consume (round_bf16 of x or of
// its RMSNorm: bf16 holds them exactly); the epilogues are gemv_fused.cu's. So the outputs are
// bitwise those of linear_gemv_bf16_silu_mul[_rms] / linear_gemv_bf16_residual at M = 1.
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_fused.h"

namespace gyre::cuda {

// Which M = 1 fused GEMVs take the streamed kernels: a bit mask of the kinds below, every kind by
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

// The streamed launches. Each returns false, launching nothing, where the kernel does not apply
// (M != 1, its kind switched off, or no ring fits in shared memory);
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
