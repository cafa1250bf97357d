// Tensor-parallel row kernels (tp_rows.h): grid-stride copies, one element per thread step.
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/tp_rows.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_shard_kernel(const int32_t* ids, int64_t T, const float* table,
                                       int64_t V_local, int64_t H, int64_t begin, float* out) {
  const int64_t total = T * H;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / H, h = i - t * H;
    const int64_t local = int64_t(ids[t]) - begin;
    // + 0.0f: -0.0 becomes +0.0 like the 0 + row scatter-add this replaced (bitwise the same).
    out[i] = local >= 0 && local < V_local ? table[local * H + h] + 0.0f : 0.0f;
  }
}

__global__ void interleave_blocks_kernel(const float* blocks, int64_t n, int64_t R, int64_t c,
                                         float* out) {
  const int64_t C = n * c, total = R * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / C, col = i - row * C, r = col / c, j = col - r * c;
    out[i] = blocks[(r * R + row) * c + j];
  }
}

}  // namespace

void embedding_shard(const int32_t* ids, int64_t T, const float* table, int64_t V_local, int64_t H,
                     int64_t begin, float* out) {
  if (T * H == 0) return;
  embedding_shard_kernel<<<grid_for(T * H, kThreads), kThreads, 0, stream()>>>(
      ids, T, table, V_local, H, begin, out);
  GYRE_CUDA_LAUNCHED("embedding_shard");
}

void interleave_blocks(const float* blocks, int64_t n, int64_t R, int64_t c, float* out) {
  if (n * R * c == 0) return;
  interleave_blocks_kernel<<<grid_for(n * R * c, kThreads), kThreads, 0, stream()>>>(blocks, n, R,
                                                                                     c, out);
  GYRE_CUDA_LAUNCHED("interleave_blocks");
}

}  // namespace gyre::cuda
