// CUDA kernels of backend/tp_ops.h (tensor-parallel embedding shard, column-block interleave), on
// the calling thread's stream; capturable (no host work).
#pragma once
#include <cstdint>

namespace gyre::cuda {

void embedding_shard(const int32_t* ids, int64_t T, const float* table, int64_t V_local, int64_t H,
                     int64_t begin, float* out);
void interleave_blocks(const float* blocks, int64_t n, int64_t R, int64_t c, float* out);

}  // namespace gyre::cuda
