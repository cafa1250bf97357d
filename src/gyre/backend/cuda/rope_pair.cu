// RoPE on q and k in one launch (rope_pair.h). Work items [0, T·Hq·D/2) rotate q and the next
// T·Hkv·D/2 rotate k; each item is exactly one iteration of rows.cu's rope_kernel (forward
// rotation), written as the same expression so the compiler forms the same multiply-adds (checked
// in the PTX of both kernels with nvcc 13: a[0] = mul, mul, sub; a[half] = mul, fma with the same
// operand pairs; tests/gpu/backend/fused_linear_cuda_test.cc compares the results bitwise).
#include "gyre/backend/cuda/rope_pair.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

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
    // rope_kernel's body with inverse = false.
    const int64_t p = i % half, th = i / half, t = th / H;
    const int64_t row = int64_t(positions[t]) * half + p;
    const float c = cos[row], s = sin[row];
    float* a = x + th * D + p;
    const float ai = a[0], bi = a[half];
    // HF: x cos + rotate_half(x) sin, rotate_half(x) = cat(-x2, x1).
    a[0] = ai * c - bi * s;
    a[half] = bi * c + ai * s;
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
