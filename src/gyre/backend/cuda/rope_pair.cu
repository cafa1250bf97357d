// RoPE on q and k in one launch (rope_pair.h). Work items [0, T·Hq·D/2) rotate q and the next
// T·Hkv·D/2 rotate k; each item is exactly one iteration of rows.cu's rope_kernel (forward
// rotation) through the same helpers (rope_rotate.cuh), so the two agree bitwise
// (tests/gpu/backend/fused_linear_cuda_test.cc compares the results).
#include "gyre/backend/cuda/rope_pair.h"
#include "gyre/backend/cuda/rope_rotate.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using namespace rope_detail;

constexpr int kThreads = 256;

__global__ void rope_qk_kernel(float* q, int64_t Hq, float* k, int64_t Hkv, int64_t tokens,
                               int64_t D, const int32_t* positions, const float* cos,
                               const float* sin) {
  const int64_t half = D / 2, nq = tokens * Hq * half, total = nq + tokens * Hkv * half;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total;
       j += int64_t(gridDim.x) * blockDim.x) {
    const bool is_q = j < nq;
    const int64_t i = is_q ? j : j - nq, H = is_q ? Hq : Hkv;
    float* x = is_q ? q : k;
    // rope_kernel's body with inverse = false (the shared helpers of rope_rotate.cuh).
    const RopeItem r = rope_item(i, H, half, positions);
    rope_rotate_pair(x + r.th * D + r.p, half, cos[r.table_row], sin[r.table_row]);
  }
}

}  // namespace

void rope_qk(float* q, int64_t Hq, float* k, int64_t Hkv, int64_t tokens, int64_t D,
             const int32_t* positions, const float* cos, const float* sin) {
  const int64_t total = tokens * (Hq + Hkv) * (D / 2);
  if (total == 0) return;
  rope_qk_kernel<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(q, Hq, k, Hkv, tokens, D,
                                                                       positions, cos, sin);
  GYRE_CUDA_LAUNCHED("rope_qk");
}

}  // namespace gyre::cuda
