// The fused linears past the decode GEMV's rows (ops in backend/fused_linear_ops.h; batch-256
// decode, chunked prefill, the scoring forward): the same cuBLASLt GEMMs ops::linear runs under
// autocast (linear_fwd_autocast[_bf16_weight]: the weight's bf16 copy — cached, or rounded into
// pool scratch — and x rounded to bf16 into pool scratch, then linear_gemm_bf16), with the
// per-linear work shared — x is rounded to bf16 once for a whole group (with the RMSNorm in front
// computed by the kernel that rounds it), and the residual add is the GEMM's epilogue. For the
// whole SwiGLU MLP the cast of silu_mul's output for the down projection is folded into the SwiGLU
// kernel too.
//
// Bitwise contract: every GEMM is linear_gemm_bf16 (or, for the residual, linear_gemm_bf16_add on
// the same plan; for the SwiGLU's gate and up, which are bf16 under autocast, linear_gemm_bf16_out)
// on the same bf16 operands with the same M, N, K as the unfused op's, so the same cuBLASLt
// algorithm and accumulation; the epilogues are silu_mul's (on the bf16 gate/up) and add's on the
// same values. Results are the unfused ops' bit for bit.
//
// Preconditions (the caller's): M, N, K > 0; weights as GemmWeight; bias pointers may be null;
// outputs must not overlap x, the weights or each other.
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_fused.h"  // RmsPrologue

namespace gyre::cuda {

// rms_bf16.cu: yb [R, H] = the bf16 rounding (round to nearest even, f32_to_bf16's) of
// rms_norm_fwd(x, w, eps)'s y, and where non-null rms_norm_fwd's own f32 y [R, H] and rstd [R]
// — one launch with rms_norm_fwd's row arithmetic (rms_row.cuh at its block size, or replayed by
// one warp per row from 2048 rows: rms_bf16.cu), so its bits are those of rms_norm_fwd then
// f32_to_bf16. No alignment requirement.
void rms_norm_fwd_bf16(const float* x, const float* w, int64_t R, int64_t H, double eps,
                       uint16_t* yb, float* y, float* rstd);

// A weight [n, K] of the GEMMs below: its bf16 copy (an ops::Bf16WeightCache entry) or, with no
// cache installed, the f32 weight itself, rounded to bf16 (f32_to_bf16) into pool scratch right
// before its GEMM and released after it — the copy linear_fwd_autocast makes without a cache (the
// same rounding of the same values), so the GEMM's operand is the same either way.
struct GemmWeight {
  const uint16_t* bf16 = nullptr;
  const float* f32 = nullptr;  // read only when bf16 is null
};

// One member of a group of linears sharing an input: y [M, n] = x · w^T + b.
struct GemmMember {
  GemmWeight w;
  const float* b = nullptr;  // f32 [n] or null
  float* y = nullptr;        // f32 [M, n]
  int64_t n = 0;
};

// linear_fwd_autocast_bf16_weight(x, bf16(m.w), m.b, M, m.n, K, m.y) for each of the `count`
// members, with x rounded to bf16 once for all of them. With `norm` non-null x is replaced by
// rms_norm(x, norm->w, norm->eps) (rms_norm_fwd_bf16; norm->xn and norm->rstd, when non-null,
// receive rms_norm's outputs; norm->w need not be aligned here). xb_out (bf16 [M, K], optional)
// receives the GEMMs' bf16 operand, which is otherwise pool scratch — a saving forward keeps it
// for the backward's dW GEMMs (the bits linear_backward's rounding of the f32 rows would make).
void linear_group_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmMember* members,
                            int64_t count, int64_t M, int64_t K, uint16_t* xb_out = nullptr);

// out [M, N] = silu_mul(gate, up) with gate, up = x · wg^T + bg, x · wu^T + bu rounded to bf16
// (the autocast MLP's pre-activations): two linear_gemm_bf16_out over one bf16 x into bf16 pool
// scratch, then silu_mul_fwd_bf16in — bitwise ops::linear into bf16 gate/up, then ops::silu_mul.
// norm as above.
void linear_silu_mul_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmWeight& wg,
                               const float* bg, const GemmWeight& wu, const float* bu, int64_t M,
                               int64_t N, int64_t K, float* out);

// y [M, N] = x · w^T + r (no bias), r f32 [M, N]; y may be r itself (not partly overlap it). The
// residual is the GEMM's C operand (linear_gemm_bf16_add) where that is bitwise the GEMM then add;
// otherwise the GEMM, then add.
void linear_residual_gemm_bf16(const float* x, const GemmWeight& w, const float* r, int64_t M,
                               int64_t N, int64_t K, float* y);

// linear_residual_gemm_bf16 over an x that is bf16 already (xb [M, K]: the attention's bf16
// output): the same residual GEMM on it — the operand linear_residual_gemm_bf16 would round an f32
// x holding these values to.
void linear_residual_gemm_bf16in(const uint16_t* xb, const GemmWeight& w, const float* r, int64_t M,
                                 int64_t N, int64_t K, float* y);

// y [M, N] = silu_mul(gate, up) · wd^T + r (no down bias; gate, up as above), y may be r itself:
// linear_silu_mul_gemm_bf16 into an f32 act [M, I], then linear_residual_gemm_bf16(act, wd, r, ...)
// — with the cast of act folded into the SwiGLU kernel (silu_mul_fwd_bf16: the bf16 rounding of
// silu_mul_fwd_bf16in's f32 value, the bits f32_to_bf16 makes of it), so the down GEMM gets the
// same operand and the f32 act is never written. wg, wu [I, K], wd [N, I]; norm as above.
// The operands a saving forward keeps (each optional, bf16): xb [M, K] the gate/up GEMMs' input
// (the norm's output rounded), gate and up [M, I], act [M, I] the down GEMM's operand — otherwise
// pool scratch.
struct SwigluKeep {
  uint16_t* xb = nullptr;
  uint16_t* gate = nullptr;
  uint16_t* up = nullptr;
  uint16_t* act = nullptr;
};
void swiglu_mlp_residual_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmWeight& wg,
                                   const float* bg, const GemmWeight& wu, const float* bu,
                                   const GemmWeight& wd, const float* r, int64_t M, int64_t K,
                                   int64_t I, int64_t N, float* y, const SwigluKeep& keep = {});

}  // namespace gyre::cuda
