// MoE token dispatch ops (implemented in backend/moe_ops.cc; CPU kernels backend/cpu/moe_dispatch,
// CUDA kernels backend/cuda/moe_dispatch): the standard permute -> expert GEMMs over contiguous
// segments -> unpermute structure of a sparse MoE block, without per-expert host bookkeeping.
//
// Terms: the router's indices i32 [T, k] make N = T·k assignments; assignment (t, j) is the flat
// slot s = t·k + j. moe_permute orders the slots by expert, stable in slot order within an expert
// (a counting sort): position p of the permuted order holds slot perm[p], and expert e owns the
// contiguous positions [offsets[e], offsets[e+1]). This is exactly the order in which the former
// host grouping (per expert, tokens ascending, slots ascending) listed the assignments.
//
// Invariants: every op is deterministic (no floating-point atomics; the permutation is a pure
// function of the indices) and the CUDA op computes what the CPU reference computes — the
// permutation exactly, the sums in the same order (within 1e-5 relative in f32). Index tensors are
// checked once per op unless an ops::KnownIndices entry (ops.h) already proves their range; bad
// data raises Error(invalid_argument) naming the value and its position.
#pragma once
#include <cstdint>

#include "gyre/core/tensor.h"

namespace gyre::ops {

// From indices i32 [T, k] with values in [0, num_experts): perm i32 [N] (slot of each position),
// pos i32 [T, k] (position of each slot: the inverse of perm), rows i32 [N] (token row perm[p] / k
// of each position, for gathering the tokens in permuted order) and offsets i32 [E+1] (offsets[0]
// = 0, offsets[E] = N; expert e's positions are [offsets[e], offsets[e+1])). Outputs are
// overwritten, allocated on the indices' device when undefined. T = 0 gives empty tensors and zero
// offsets. num_experts must be in [1, 8192] (the CUDA histogram lives in shared memory).
void moe_permute(const Tensor& indices, int64_t num_experts, Tensor& perm, Tensor& pos,
                 Tensor& rows, Tensor& offsets);

// out [T, H] = Σ_{j = 0..k-1} weights[t, j] · y[pos[t, j]], summed in ascending j from zero
// (overwrite). y [N, H] in permuted order, pos i32 [T, k] from moe_permute; weights [T, k], or
// undefined = all ones (the backward uses that to sum the permuted input gradients back to
// tokens).
void moe_unpermute(const Tensor& y, const Tensor& pos, const Tensor& weights, Tensor& out);

// Backward of moe_unpermute for position p holding slot s = perm[p] of token t = s / k:
//   dy[p] = weights[s] · dout[t]              ([N, H], overwrite; undefined = not computed)
//   dweights[s] = <dout[t], y[p]> (f64 sum)   ([T, k], overwrite; undefined = not computed)
// dout [T, H], y [N, H] (needed for dweights), perm i32 [N], weights [T, k] (gives T and k).
void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& perm,
                            const Tensor& weights, Tensor& dy, Tensor& dweights);

}  // namespace gyre::ops
