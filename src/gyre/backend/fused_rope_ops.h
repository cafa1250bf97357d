// RoPE fused with its neighbours in the decode step (issue 7: fewer kernels per decode step):
// q and k in one launch, and q, k plus the paged KV-cache write in one launch. Declared here
// rather than in ops.h; implementation: fused_rope_ops.cc over backend/cuda/rope_pair.cu and
// backend/cuda/rope_kv_write.cu.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// rope_(q, positions, cos, sin) then rope_(k, positions, cos, sin) (the forward rotation), bitwise:
// q [T, Hq, D] and k [T, Hkv, D] share T, D, the positions and the tables. CUDA runs one kernel
// whose elements are rope_'s arithmetic; the CPU runs the two rope_ calls. Errors (before either
// tensor changes) name the argument: undefined tensors, q/k of different T, D or dtype, plus
// everything rope_ rejects (odd D, tables not [P, D/2], positions outside the table).
void rope_qk_(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& cos, const Tensor& sin);

// The decode step's RoPE and KV-cache write: q <- rope(q) in place and the caches' slots
// slot_mapping[t] <- rope(k[t]), v[t] — bitwise rope_qk_(q, k, ...) then paged_kv_write(k, v,
// slot_mapping, k_cache, v_cache), except that k itself is left unrotated (it is only read). With a
// bf16 cache on CUDA one kernel does it all; otherwise the two ops run on a copy of k. Errors
// (before anything changes) are those of rope_qk_ and paged_kv_write, prefixed with this op's name.
void rope_qk_paged_kv_write_(Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                             const Tensor& cos, const Tensor& sin, const Tensor& slot_mapping,
                             Tensor& k_cache, Tensor& v_cache);

}  // namespace gyre::ops
