// ops::swiglu_gate_up_backward: the dense SwiGLU MLP's backward from dact (the gradient of
// act = silu(gate) * up, i.e. down_proj's dx) to its input x and the bias-free gate/up weights,
// defined as the composition
//   silu_mul_backward(dact, gate, up, dgate, dup);
//   linear_backward(dgate, x, w_gate, dx, dw_gate, /*db=*/none);
//   linear_backward(dup, x, w_up, dx, dw_up, /*db=*/none, /*accumulate_dx=*/true);
// with dgate / dup bf16 where gate / up are bf16 on CUDA under ops::Bf16Autocast (each f32 value
// rounded once: the GEMMs' operand), else in the float dtype (f32, or f64 on the CPU).
//
// On CUDA with bf16 gate/up under autocast the SwiGLU backward writes dgate | dup straight into
// one packed bf16 [M, ld] buffer (backend/cuda/pack_bf16.h's gate/up layout: dup at column
// off = round_up(I, 128)) and ONE dX GEMM runs over both (the bf16 weights stacked), where the
// composition runs two and the second re-reads and re-writes the f32 dx; the dW GEMMs read the
// buffer's column slices. The bf16 dgate / dup are the composition's bits (the same kernel body);
// dW_gate / dW_up are the same GEMMs on the same operands with leading dimension ld instead of I
// (bitwise where cuBLASLt picks the same algorithm: tests/gpu/backend/swiglu_backward_cuda_test.cc
// checks); dx is the same sum of products accumulated in one f32 GEMM over 2I terms instead of two
// GEMMs added (rounding order only: |Δ| <= (2I + 5)·2^-23·Σ|dgate||w_gate| + |dup||w_up|,
// linear_group_ops.h / linear_group_cuda_test.cc). Everywhere else (the CPU, f32 gate/up, autocast
// off, empty products) it runs exactly the composition: bitwise.
//
// Arguments: dact, gate, up [.., I] of one shape with M rows; x [.., H] with M rows (f32, or bf16
// on CUDA under autocast: the fused forward's saved xn2); w_gate, w_up [I, H]; dx [M rows, H]
// written (undefined: not computed); dw_gate, dw_up [I, H] accumulated into (undefined: not
// computed). dact may be bf16 only with bf16 gate/up on CUDA under autocast (down_proj's dx
// rounded by its GEMM). Errors (Error(invalid_argument), before any tensor changes): an undefined
// input, tensors on two devices, only one of gate/up bf16, bf16 gate/up off CUDA, a bf16 dact or x
// outside that setting, a bf16 dx, mixed float dtypes, shapes that do not fit. dx, dw_gate and
// dw_up must not overlap the inputs or each other.
#pragma once

#include "gyre/backend/ops.h"

namespace gyre::ops {

void swiglu_gate_up_backward(const Tensor& dact, const Tensor& gate, const Tensor& up,
                             const Tensor& x, const Tensor& w_gate, const Tensor& w_up, Tensor& dx,
                             Tensor& dw_gate, Tensor& dw_up);

}  // namespace gyre::ops
