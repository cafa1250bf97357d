// RMSNorm's backward fused with its neighbours in the decoder layer's backward (issue 7: the
// training backward's memory traffic): the norm's input gradient, the residual add that follows it
// and the bf16 rounding the o_proj / down_proj backward makes of the sum, in one pass. Declared
// here rather than in ops.h; implementation: fused_norm_ops.cc over backend/cuda/rms_bwd_fused.h.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// Exactly rms_norm_backward(dy, x, w, rstd, dx, dw) followed by add_(dx, residual_grad): dx = the
// RMSNorm input gradient + residual_grad (dx may be residual_grad itself, in place; otherwise it
// must not overlap the inputs), dw += the weight gradient (dw may be undefined: not computed, as
// rms_norm_backward). dx is allocated like x if undefined; residual_grad has dx's shape.
// dx_bf16, when not null (CUDA only), also receives the bf16 rounding of dx (round to nearest
// even, exactly cuda::f32_to_bf16's bits), allocated if undefined — the o_proj backward's dy
// operand.
// Bitwise: dx, dw and dx_bf16 are memcmp-equal to the composition (rms_norm_backward, add_, then
// copy to bf16) on either device. CUDA: from 8192 rows with dw, one kernel over the rows (the dw
// partials in the same pass) plus a small finish kernel for dw; below that, or without dw, a
// row kernel (dx, the add, dx_bf16) then rows.cu's dw kernels (backend/cuda/rms_bwd_fused.h); the
// CPU (f32 or f64) runs the composition.
// Errors (before anything is written) name the argument: undefined inputs, tensors on two devices,
// mixed or non-float dtypes, shapes that do not match x [.., H] / w [H] / rstd [R], dx or dx_bf16
// overlapping an input (other than dx being residual_grad), a dx_bf16 that is not bf16 of dx's
// shape, and dx_bf16 on the CPU (Error(unsupported): only the CUDA backend writes a bf16 dx).
void rms_norm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& residual_grad, Tensor& dx, Tensor& dw,
                           Tensor* dx_bf16 = nullptr);

}  // namespace gyre::ops
