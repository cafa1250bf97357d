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

// Which M = 1 fused GEMVs take the streamed kernels: kGemvStreamAuto (the default), or a bit mask
// of the kinds below (GYRE_GEMV_STREAM: an integer 0..16, 16 = auto, parsed strictly);
// set_gemv_stream_mode overrides both (tests, benchmarks). Read when a kernel is launched (so when
// a decode graph is captured).
constexpr int kGemvStreamSiluMul = 1;        // gate/up + SiLU·mul (with or without the norm)
constexpr int kGemvStreamResidual = 2;       // residual linears with unsplit rows (o_proj)
constexpr int kGemvStreamResidualSplit = 4;  // residual linears with split-K rows (down_proj)
constexpr int kGemvStreamGroup = 8;          // grouped linears (q/k/v, with or without the norm)
constexpr int kGemvStreamAll = 15;
// Auto: every kind, for weights of at least kGemvStreamAutoMin rows (N) of at least
// kGemvStreamAutoMin elements (K). Measured on an H200 (session 38, bench_rollout_gpu batch 1):
// Qwen2.5-1.5B (N, K >= 1536 everywhere) 1.491 -> 1.351 ms a token with all three streamed; on
// Qwen2.5-0.5B (hidden 896) each kind alone and all together were slower (0.762 -> 0.785-0.817):
// its GEMVs are short, latency-bound, and the streamed kernel's set-up (barriers, x staged in
// shared memory) costs more there than the stream saves.
constexpr int kGemvStreamAuto = 16;
constexpr int64_t kGemvStreamAutoMin = 1024;
int gemv_stream_mode();
void set_gemv_stream_mode(int mode);  // kGemvStreamAuto, bits, or -1: back to the environment

// Shared-memory bytes of weights each block aims to keep in flight (GYRE_GEMV_STREAM_KB, default
// 64 KB): the ring gets 2..7 columns a slot within it, and within the shared memory that
// GYRE_GEMV_STREAM_BPS blocks an SM (default 2) leave each. For benchmarks; set_* overrides (0:
// back to the default).
int64_t gemv_stream_ring_bytes();
void set_gemv_stream_ring_bytes(int64_t bytes);

// The streamed launches. Each returns false, launching nothing, where the kernel does not apply
// (M != 1, its kind off or, in auto mode, the weight too small, or no ring fits in shared memory);
// the caller then launches the register kernel. Preconditions: gemv_fused.h's. nrm null: no norm
// prologue.
bool gemv_stream_silu_mul(const float* x, const RmsPrologue* nrm, const uint16_t* wg,
                          const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                          int64_t N, int64_t K, float* out);
bool gemv_stream_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                          int64_t M, int64_t N, int64_t K, float* y);
// The group's N = Σ n_i columns (auto: N and K >= kGemvStreamAutoMin).
bool gemv_stream_group(const float* x, const RmsPrologue* nrm, const GemvGroup& g, int64_t M,
                       int64_t K);

}  // namespace gyre::cuda
