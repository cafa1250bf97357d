// RoPE on q and k in one launch (issue 7: fewer kernels per decode step). Declared here rather
// than in ops.h; implementation: fused_rope_ops.cc over backend/cuda/rope_pair.cu.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// rope_(q, positions, cos, sin) then rope_(k, positions, cos, sin) (the forward rotation), bitwise:
// q [T, Hq, D] and k [T, Hkv, D] share T, D, the positions and the tables. CUDA runs one kernel
// whose elements are rope_'s arithmetic; the CPU runs the two rope_ calls. Errors (before either
// tensor changes) name the argument: undefined tensors, q/k of different T, D or dtype, plus
// everything rope_ rejects (odd D, tables not [P, D/2], positions outside the table).
void rope_qk_(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& cos, const Tensor& sin);

}  // namespace gyre::ops
