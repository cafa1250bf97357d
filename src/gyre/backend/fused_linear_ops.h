// Fused linears for the decode step and the scoring forward (issue 7: fewer kernels per layer).
// Each op is defined as a composition of existing ops and computes exactly that composition:
//   linear_group        y[i] = linear(x, w[i], b[i])          for every i (q/k/v; gate/up)
//   linear_silu_mul     out  = silu_mul(linear(x, wg, bg), linear(x, wu, bu)), the two linears
//                       writing gate/up of swiglu_gate_up_dtype(x) (bf16 under autocast on CUDA)
//   linear_add_residual y    = add(linear(x, w, b), residual)
//   rms_norm_linear_group    linear_group(rms_norm(x, norm_w, eps), w, b, y)
//   rms_norm_linear_silu_mul linear_silu_mul(rms_norm(x, norm_w, eps), ...)
//   rms_norm_swiglu_mlp_residual
//                       out  = linear_add_residual(rms_norm_linear_silu_mul(x, ...), w_down, ...)
// On the CPU, and on CUDA wherever the fused kernels do not apply, they run those ops one by one
// (so results are bitwise the unfused ones). On CUDA under ops::Bf16Autocast with an installed
// ops::Bf16WeightCache and 1..8 rows where linear's bf16 GEMV applies to every weight (the
// engine's decode), they launch one kernel (backend/cuda/gemv_fused.h) whose columns are the
// GEMV's own arithmetic and whose epilogues are silu_mul's and add's formulas (silu_mul's on gate
// and up rounded to bf16 in registers, the rounding ops::linear applies to a bf16 y): bitwise
// equal to the unfused ops on that path too. The rms_norm_* ops fold the RMSNorm into that same
// launch: each block recomputes the rows' rstd with rms_norm's own CUDA code
// (backend/cuda/rms_row.cuh, same block size and summation order) and normalises x while loading
// it, so the result is bitwise rms_norm followed by the fused linear (which needs the norm weight
// 16-byte aligned too; otherwise they run rms_norm, then the fused linear). Past those rows
// (batch-256 decode, prefill chunks, the scoring forward), under autocast — where ops::linear would
// round its input to bf16 and run the cuBLASLt GEMM on the weight's bf16 copy: the installed
// cache's or, without one, the f32 weight rounded into scratch, which these ops then round the same
// way, one weight at a time — they run the same GEMMs with the per-linear work shared
// (backend/cuda/fused_gemm.h): linear_group and linear_silu_mul round x to bf16 once for all their
// GEMMs (linear_silu_mul's two writing bf16 gate/up through the function ops::linear uses for a
// bf16 y), the rms_norm_* ops compute the norm and its bf16 rounding in one kernel (rms_norm's own
// row arithmetic, writing xn_out / rstd_out only when asked), and linear_add_residual without a
// bias adds the residual as the GEMM's C operand (beta = 1 on the plan and algorithm of the
// bias-free GEMM: acc + residual rounded once, as the add; with a bias it runs linear, then add).
// Same bf16 operands, same GEMM calls with the same M, N, K: bitwise the unfused ops again.
// rms_norm_swiglu_mlp_residual (the whole SwiGLU MLP with its residual) takes that path only when
// both of its halves would and the down projection has no bias; there the SwiGLU kernel writes the
// bf16 rounding of its f32 value (what linear_add_residual's cast of it would produce), so the
// down GEMM's operand — and with it the result — is the composition's; elsewhere it runs the two
// ops in order.
// Forward ops: they have no backward of their own, but rms_norm_linear_group and
// rms_norm_swiglu_mlp_residual can hand a saving forward (the trainer's) what the unfused ops'
// backward reads — the linears' input operand, rms_norm's rstd, the SwiGLU's gate/up — so the
// trainer's forward takes the same fused path as the scoring forward. On the shared-input GEMM
// path the input operand is kept as the GEMMs' own bf16 rounding of the normed rows (half the
// bytes of the f32 rows, and exactly what linear_backward's autocast path would round them to, so
// the gradients are the same bits). Declared here rather than in ops.h; implementation:
// fused_linear_ops.cc.
//
// Errors (before any tensor changes): an empty group, lists of different lengths, a null or
// undefined tensor, a weight that is not 2-D or whose K differs from x's last dim, a bias or
// residual of the wrong shape, tensors of different dtypes or devices — each an Error naming the
// argument (and its index in a list). Outputs may be undefined (allocated like ops::linear does).
#pragma once
#include <span>

#include "gyre/backend/ops.h"

namespace gyre::ops {

// The rows up to which the fused ops run the decode GEMV kernels (cuda::kGemvMaxRows); past them,
// the shared-input cuBLASLt GEMMs.
inline constexpr int64_t kFusedGemvMaxRows = 8;

// The dtype of the dense SwiGLU MLP's gate/up pre-activations over an input like x: bf16 where
// x is an f32 CUDA tensor under ops::Bf16Autocast (PyTorch autocast's bf16 linear output: half
// the bytes of the gate/up writes, of silu_mul's reads and of the saved activations), else x's
// dtype (the CPU reference and the f32 path are unchanged). The decoder layer allocates gate/up
// with it and the SwiGLU ops below compute with it, so the fused and the unfused MLP agree bit for
// bit. (MoE experts keep f32: moe_block.cc allocates its own.)
DType swiglu_gate_up_dtype(const Tensor& x);

// y[i] = x·w[i]ᵀ + b[i] for every i; b[i] may point to an undefined tensor (no bias). The lists
// have one entry per linear, at least one.
void linear_group(const Tensor& x, std::span<const Tensor* const> w,
                  std::span<const Tensor* const> b, std::span<Tensor* const> y);

// out = silu(x·w_gateᵀ + b_gate) * (x·w_upᵀ + b_up): the SwiGLU MLP's input half. w_gate and
// w_up are [N, K]; biases may be undefined.
void linear_silu_mul(const Tensor& x, const Tensor& w_gate, const Tensor& b_gate,
                     const Tensor& w_up, const Tensor& b_up, Tensor& out);

// y = (x·wᵀ + b) + residual, residual shaped like y. y may be the residual tensor itself (not x).
// x may be bf16 on CUDA under autocast (the attention's bf16 output feeding o_proj): the result is
// then the op's on the f32 tensor holding the same values, bit for bit — past 8 rows without a
// bias the residual GEMM reads x as its bf16 operand directly; elsewhere x is converted first.
// A bf16 x on the CPU or outside autocast is an Error.
void linear_add_residual(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& residual,
                         Tensor& y);

// linear_group(rms_norm(x, norm_w, eps), w, b, y): the decode layer's input norm and q/k/v. norm_w
// is [K] (x's last dim), eps finite and >= 0, as for ops::rms_norm. xn_out and rstd_out, when not
// null, receive rms_norm's outputs (the normed rows and the per-row rstd, allocated if undefined;
// they must not share memory with x, norm_w or the outputs); null: they are not materialised.
// xn_operand_out, when not null, is assigned (whatever it held before) the linears' input as a
// backward needs it: on the shared-input GEMM path (CUDA, autocast, more than 8 rows) a new bf16
// tensor holding the GEMMs' operand — the normed rows rounded once; elsewhere rms_norm's f32 y
// (the same tensor as *xn_out when that is requested too).
void rms_norm_linear_group(const Tensor& x, const Tensor& norm_w, float eps,
                           std::span<const Tensor* const> w, std::span<const Tensor* const> b,
                           std::span<Tensor* const> y, Tensor* xn_out = nullptr,
                           Tensor* rstd_out = nullptr, Tensor* xn_operand_out = nullptr);

// linear_silu_mul(rms_norm(x, norm_w, eps), w_gate, b_gate, w_up, b_up, out): the decode layer's
// post-attention norm and gate/up. norm_w, eps, xn_out, rstd_out as for rms_norm_linear_group.
void rms_norm_linear_silu_mul(const Tensor& x, const Tensor& norm_w, float eps,
                              const Tensor& w_gate, const Tensor& b_gate, const Tensor& w_up,
                              const Tensor& b_up, Tensor& out, Tensor* xn_out = nullptr,
                              Tensor* rstd_out = nullptr);

// The SwiGLU MLP with its residual, exactly
//   Tensor act;
//   rms_norm_linear_silu_mul(x, norm_w, eps, w_gate, b_gate, w_up, b_up, act);
//   linear_add_residual(act, w_down, b_down, residual, out);
// x [.., K], norm_w [K], w_gate and w_up [I, K], w_down [N, I], biases [I] / [N] or undefined;
// residual shaped like x with last dim N (typically x itself: out = x + mlp(rms_norm(x))). out is
// allocated (x's dtype, device and shape with last dim N) when undefined; it may be the residual
// tensor itself (even when that is x), otherwise it must share no memory with x or the residual.
// The residual may share memory with x (it is only read). Every argument is checked before any
// tensor changes, with the errors of the other ops (naming w_down, b_down, residual, out).
// The intermediate act [.., I] is not an output: on the fused path (CUDA, autocast, more than 8
// rows, no b_down) it exists only as bf16 scratch, unless `saved` keeps it (below).
//
// saved, when not null, has every field assigned (whatever it held before) with what the SwiGLU
// MLP's backward reads: xn the gate/up linears' input (on the fused path the GEMMs' bf16 operand,
// else rms_norm's f32 y — see rms_norm_linear_group's xn_operand_out), rstd rms_norm's [rows],
// gate and up the pre-activations in swiglu_gate_up_dtype(x), and act — on the fused path only,
// undefined elsewhere — the down GEMM's bf16 operand silu_mul(gate, up) (the bits ops::silu_mul
// writes into a bf16 out from these gate/up: a backward need not recompute it; PyTorch's autograd
// saves down_proj's input likewise). Values are those of the call without it, bit for bit.
struct SwigluMlpSaved {
  Tensor xn, rstd, gate, up, act;
};
void rms_norm_swiglu_mlp_residual(const Tensor& x, const Tensor& norm_w, float eps,
                                  const Tensor& w_gate, const Tensor& b_gate, const Tensor& w_up,
                                  const Tensor& b_up, const Tensor& w_down, const Tensor& b_down,
                                  const Tensor& residual, Tensor& out,
                                  SwigluMlpSaved* saved = nullptr);

}  // namespace gyre::ops
