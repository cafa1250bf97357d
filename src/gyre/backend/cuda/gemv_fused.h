// Fused small-M bf16 GEMV kernels for the decode step (gemv_fused.cu; ops in
// backend/fused_linear_ops.h). Each is linear_gemv_bf16 (kernels.h) with more work per launch:
// several weights over one input, the SwiGLU product of gate and up, or a residual in the epilogue.
// Every output column goes through gemv_bf16_common.cuh, the plain GEMV's arithmetic, and the
// epilogues repeat the unfused kernels' formulas, so results are bitwise those of the unfused
// GEMV path (linear_gemv_bf16 followed by f32_to_bf16 of gate and up and silu_mul_fwd_bf16in; add).
//
// Preconditions (the caller's, as for linear_gemv_bf16): 1 <= M <= kGemvMaxRows and
// linear_gemv_bf16_supported(x, w, M, N, K) for every weight w; bias pointers may be null; outputs
// must not overlap x or the weights. The *_rms variants add an RMSNorm prologue (RmsPrologue).
#pragma once
#include <cstdint>

namespace gyre::cuda {

// Up to kGemvGroupMax linears sharing the input x [M, K]: y_i [M, n_i] = x · w_i^T + b_i. Passed
// to the kernel by value (a small pointer table), so no weight is copied or concatenated.
constexpr int kGemvGroupMax = 4;
struct GemvGroup {
  int count = 0;
  const uint16_t* w[kGemvGroupMax] = {};  // bf16 [n_i, K]
  const float* b[kGemvGroupMax] = {};     // f32 [n_i] or null
  float* y[kGemvGroupMax] = {};           // f32 [M, n_i]
  int64_t n[kGemvGroupMax] = {};
};
// One launch over the concatenated output columns of the group's linears (count >= 1).
void linear_gemv_bf16_group(const float* x, const GemvGroup& g, int64_t M, int64_t K);

// out [M, N] = silu(g) * u with g = bf16(x · wg^T + bg), u = bf16(x · wu^T + bu) (each f32 column
// value rounded to nearest even: the autocast MLP's bf16 gate/up), wg and wu bf16 [N, K]; one warp
// computes the matching gate and up columns. silu as silu_mul_fwd: g / (1 + expf(-g)).
void linear_gemv_bf16_silu_mul(const float* x, const uint16_t* wg, const float* bg,
                               const uint16_t* wu, const float* bu, int64_t M, int64_t N, int64_t K,
                               float* out);

// y [M, N] = (x · w^T + b) + r, r f32 [M, N]; y may be r (each element is read before it is
// written, by the same thread).
void linear_gemv_bf16_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                               int64_t M, int64_t N, int64_t K, float* y);

// RMSNorm folded into the GEMV's input (ops::rms_norm_linear_group / rms_norm_linear_silu_mul):
// every block recomputes rstd[m] of each row of x [M, K] with rms_row.cuh's arithmetic (the
// rms_norm kernel's own) and feeds the columns w[k] * (x[m, k] * rstd[m]) — bitwise rms_norm_fwd's
// y — instead of x, so rms_norm followed by the GEMV becomes one launch with the same bits.
struct RmsPrologue {
  const float* w = nullptr;  // norm weight f32 [K], 16-byte aligned (rms_prologue_supported)
  double eps = 0;            // as rms_norm_fwd's eps (the op's float eps widened)
  float* xn = nullptr;       // optional f32 [M, K]: rms_norm's y, written by block 0 (or null)
  float* rstd = nullptr;     // optional f32 [M]: rms_norm's rstd, written by block 0 (or null)
};
// Whether the prologue can read the norm weight (16-byte vectors, like x's rows).
bool rms_prologue_supported(const float* norm_w);

// linear_gemv_bf16_group with x replaced by rms_norm(x, n.w, n.eps). n.xn and n.rstd must not
// overlap x, the weights or the outputs.
void linear_gemv_bf16_group_rms(const float* x, const RmsPrologue& n, const GemvGroup& g, int64_t M,
                                int64_t K);

// linear_gemv_bf16_silu_mul with x replaced by rms_norm(x, n.w, n.eps); same overlap rule.
void linear_gemv_bf16_silu_mul_rms(const float* x, const RmsPrologue& n, const uint16_t* wg,
                                   const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                                   int64_t N, int64_t K, float* out);

// Warps per output column (split-K) of every decode GEMV kernel for rows of K elements, plain and
// fused alike (gemv_bf16_common.cuh's split_for): for benchmarks and notes, the kernels pick it
// themselves.
int gemv_split_for(int64_t K);

}  // namespace gyre::cuda
