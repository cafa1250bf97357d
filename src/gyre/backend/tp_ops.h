// Tensor-parallel helper ops (model/tensor_parallel.h): the vocab-parallel embedding lookup and
// the reassembly of all-gathered column blocks, as device work with no host copy, so a sharded
// decode forward can be captured in a CUDA graph. Implementation: tp_ops.cc (checks) over
// backend/cuda/tp_rows.cu, or plain loops on the CPU.
//
// Invariants: f32 only; every tensor on one device; results are exact copies (no arithmetic but
// the +0.0f that turns a -0.0 embedding value into +0.0, as the scatter-add the embedding shard
// replaced did), so CPU and CUDA agree bitwise.
#pragma once
#include <cstdint>

#include "gyre/core/tensor.h"

namespace gyre::ops {

// Vocab-parallel embedding: out[t] = table[ids[t] - begin] + 0.0f when begin <= ids[t] <
// begin + V_local (V_local = table.size(0)), else zeros. Every id is valid (those of other
// shards embed to 0), so nothing is checked on the host. ids i32 [T], table [V_local, H], out
// [T, H] (allocated when undefined).
void embedding_shard(const Tensor& ids, const Tensor& table, int64_t begin, Tensor& out);

// blocks [n, R, c] (rank-ordered all-gather output) -> out [R, n*c] with out[i, r*c + j] =
// blocks[r, i, j]: the column blocks of a column-split tensor side by side. out is allocated when
// undefined.
void interleave_blocks(const Tensor& blocks, Tensor& out);

}  // namespace gyre::ops
