// Multi-tensor ops (issue 7, the apex / torch._foreach idea): the optimizer's per-parameter work
// on a whole list of tensors at once. On CUDA one launch covers every tensor (and the sum of
// squares makes one device-to-host transfer instead of one per tensor); on the CPU they loop over
// the per-tensor kernels. Implementation: multi_tensor_ops.cc (checks) over backend/cuda/
// multi_tensor.cu.
//
// Invariants: every tensor of one call is defined, f32 and on one device; lists that go together
// have equal lengths and tensor i of each has the same shape. Violations throw Error before any
// tensor changes, naming the list, the index and what is wrong. Empty lists are no-ops (sums 0).
// Results are bitwise those of the per-tensor ops (ops::sum_squares, scale_, adamw_step) applied
// to each tensor in order, on the CPU and on CUDA.
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
// ops::adamw_step(*params[i], *grads[i], *ms[i], *vs[i], p) for every i.
void adamw_step_many(std::span<Tensor* const> params, std::span<const Tensor* const> grads,
                     std::span<Tensor* const> ms, std::span<Tensor* const> vs,
                     const AdamWParams& p);

}  // namespace gyre::ops
