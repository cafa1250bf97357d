// ops::linear_group_backward: the backward of several linears over one input x (the decoder
// layer's q/k/v projections), defined as the composition
//   linear_backward(dy_0, x, w_0, dx, dw_0, db_0, accumulate_dx);
//   linear_backward(dy_i, x, w_i, dx, dw_i, db_i, /*accumulate_dx=*/true);   for i = 1, 2, ...
// On the CPU, and on CUDA without ops::Bf16Autocast, it runs exactly that composition (bitwise).
// On CUDA under autocast it rounds every member's f32 dy to bf16 into one packed buffer (one
// launch, backend/cuda/pack_bf16.h) and runs ONE dX GEMM over all members (the packed dy times the
// members' bf16 weights stacked: the installed ops::Bf16WeightCache's copies, or the f32 weights
// rounded), where the composition runs one per member and re-reads and re-writes the f32 dx each
// time. The bf16 operands are the composition's (same rounding of the same values); dx differs from
// it only by f32 accumulation order (one sum over Σ N_i terms instead of one per member added with
// beta = 1). dW_i (the GEMM on the packed dy's column slice) and db_i (the f32 column sums of dy_i)
// are the composition's products — bitwise where cuBLASLt picks the same algorithm for the slice's
// leading dimension (tests/gpu/backend/linear_group_cuda_test.cc checks).
//
// Errors (before any tensor changes): an empty member list; a null or undefined dy / w; shapes that
// do not fit x (w_i not [N_i, K], dy_i not M rows of N_i, dw_i / db_i / dx the wrong shape), named
// by member index (members[1].dw); tensors on different devices; dtypes other than one float dtype
// (a bf16 dy is not taken: the op rounds dy itself); a bf16 x anywhere but CUDA under autocast.
// dx, dw_i and db_i must not overlap dy_i, x or w_i.
#pragma once
#include <span>

#include "gyre/backend/ops.h"

namespace gyre::ops {

struct LinearGroupMember {
  const Tensor* dy;  // f32 [M, N_i] (any leading shape with M rows): the member's output gradient
  const Tensor* w;   // f32 [N_i, K]
  Tensor* dw;        // f32 [N_i, K], accumulated into (null or undefined: not computed)
  Tensor* db;        // f32 [N_i], accumulated into (null or undefined: no bias)
};

// dx [M, K] (f32; written, or added to with accumulate_dx; undefined: not computed) =
// Σ_i dy_i · w_i; dw_i += dy_i^T x; db_i += column sums of dy_i. x: [.., K] f32 (M = its leading
// rows), or bf16 on CUDA under Bf16Autocast (as linear_backward: the values the autocast path would
// round an f32 x to). f64 everywhere is the CPU reference's (the composition in f64).
void linear_group_backward(std::span<const LinearGroupMember> members, const Tensor& x, Tensor& dx,
                           bool accumulate_dx = false);

// ---- the same backward over a dy that comes packed in bf16 already (CUDA under autocast only)
//
// dy_packed: bf16 [M, ld] (any leading shape with M rows), each member's bf16 dy in its columns
// [col_i, col_i + N_i), zeros in every column no member owns (they meet zero weight rows in the
// one dX GEMM; uninitialised bits could be Inf/NaN). The producer writes it in this layout — the
// SwiGLU backward writes dgate | dup so (swiglu_backward_ops.h) — so no packing pass runs: ONE dX
// GEMM over all members and each dW GEMM on the member's column slice (leading dimension ld), the
// GEMMs of linear_group_backward's packed path (backend/cuda/pack_bf16.h). Results as there: dW_i
// the products linear_backward(dy_i, x, w_i, ...) computes from the bf16 dy_i, dx the same sum in
// one f32 accumulation over Σ N_i terms.
inline constexpr int64_t kPackedColumnAlign = 128;  // cuda::kPackAlign: 256-byte bf16 slices

struct LinearGroupPackedMember {
  const Tensor* w;  // f32 [N_i, K]
  Tensor* dw;       // f32 [N_i, K], accumulated into (null or undefined: not computed)
  Tensor* db;       // must be null or undefined: a bias gradient sums the f32 dy, which is gone
  int64_t col;      // the member's first column in dy_packed: a multiple of kPackedColumnAlign
};

// dx [M, K] (f32; written, or added to with accumulate_dx; undefined: not computed) =
// Σ_i dy_i · w_i; dw_i += dy_i^T x. x: f32 or bf16 [.., K], as linear_group_backward. Errors
// (before any tensor changes): not CUDA, or autocast off; dy_packed not bf16, or not M rows of a
// width ld that is a multiple of kPackedColumnAlign; a member's col unaligned, overlapping the
// previous member's columns (members go in increasing col) or past ld; a requested db; shapes and
// dtypes as linear_group_backward.
void linear_group_backward_packed(const Tensor& dy_packed,
                                  std::span<const LinearGroupPackedMember> members, const Tensor& x,
                                  Tensor& dx, bool accumulate_dx = false);

}  // namespace gyre::ops
