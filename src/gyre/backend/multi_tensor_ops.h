// Multi-tensor ops (issue 7, the apex / torch._foreach idea): the optimizer's per-parameter work
// on a whole list of tensors at once. On CUDA one launch covers every tensor (and the sum of
// squares makes one device-to-host transfer instead of one per tensor); on the CPU they loop over
// the per-tensor kernels. Implementation: multi_tensor_ops.cc (checks) over backend/cuda/
// multi_tensor.cu.
//
// Invariants: every tensor of one call is defined, f32 and on one device; lists that go together
// have equal lengths and tensor i of each has the same shape. Violations throw Error before any
// tensor changes, naming the list, the index and what is wrong. Empty lists are no-ops (sums 0).
// Results are bitwise those of the per-tensor ops (ops::sum_squares, scale_, adamw_step,
// Tensor::copy_from) applied to each tensor in order, on the CPU and on CUDA.
#pragma once
#include <span>
#include <vector>

#include "gyre/backend/ops.h"

namespace gyre::ops {

// Σ over tensors of Σ a² (f64): the per-tensor sums added in list order, so bitwise
// Σ_i ops::sum_squares(*a[i]) accumulated from 0.
double sum_squares_many(std::span<const Tensor* const> a);
// The per-tensor sums, out[i] bitwise ops::sum_squares(*a[i]) (one transfer on CUDA).
std::vector<double> sum_squares_each(std::span<const Tensor* const> a);
// a[i] *= s for every i.
void scale_many(std::span<Tensor* const> a, float s);
// ops::adamw_step(*params[i], *grads[i], *ms[i], *vs[i], p) for every i. `bf16_out`: empty, or
// one pointer per parameter (null: none) to params[i]->numel() bf16 values on the parameters'
// device, which receive the updated parameter rounded to bf16 in the same pass — on CUDA the
// same launch, +2 bytes of writes per parameter (the colocated trainer writes the rollout
// engine's bf16 weight copies this way). The f32 results are the same with or without it.
// Rounding (here and in f32_to_bf16_many): to nearest even, on CUDA bitwise cuda::f32_to_bf16 (what
// ops::Bf16WeightCache makes of a weight), on the CPU core/dtype.h's f32_to_bf16; the two differ
// only in the payload of NaNs.
void adamw_step_many(std::span<Tensor* const> params, std::span<const Tensor* const> grads,
                     std::span<Tensor* const> ms, std::span<Tensor* const> vs, const AdamWParams& p,
                     std::span<uint16_t* const> bf16_out = {});
// dst[i][0, n) = bf16(src[i]) for every i (src f32 on one device; dst[i] holds src[i]->numel()
// bf16 values on it; null only for empty tensors): one launch on CUDA.
void f32_to_bf16_many(std::span<const Tensor* const> src, std::span<uint16_t* const> dst);
// dst[i] = src[i] for every i (f32, same shapes, not overlapping). `bf16_out`: empty, or one
// pointer per tensor (null: none) to src[i]->numel() bf16 values on the tensors' device, which
// receive bf16(src[i]) — rounded as above, so bitwise what f32_to_bf16_many / the
// Bf16WeightCache make of dst[i]'s new value — in the same pass: on CUDA one launch reads src once
// and writes both (dist::DataParallelOptimizer's final unflatten writes the rollout engine's bf16
// weight copies this way). The f32 results are the same with or without it.
void copy_many(std::span<const Tensor* const> src, std::span<Tensor* const> dst,
               std::span<uint16_t* const> bf16_out = {});

}  // namespace gyre::ops
