// Small-M autocast linear (decode): y[M, N] = bf16(x)[M, K] · w_bf16[N, K]^T + b for M <= 8.
//
// Why: at batch 1-8 a decode step's linears are weight-bandwidth problems (every weight byte is
// read once per step), but the general path runs an f32->bf16 kernel for x and then a cuBLASLt
// GEMM whose tiles cannot fill the GPU at M = 1 (17 us per linear call on the 0.5B shape, against
// ~2 us to stream its weights; notes/device_measurements.md, session 5). Here one warp owns one
// output column n: it streams w[n, :] with 16-byte loads (8 bf16), rounds the matching x values to
// bf16 in registers (round to nearest even, exactly what autocast's f32_to_bf16 kernel does) and
// keeps M f32 dot products, reduced across the warp at the end.
//
// Numerics: each product of two bf16 values is exact in f32, so the result differs from the GEMM
// path only in the order of the f32 additions (~1e-7 relative), the same bound the autocast tests
// apply to cuBLAS (1e-5 against the CPU f32 op on rounded operands).
#include <cuda_bf16.h>

#include <cstdint>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

template <int M>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_bf16_kernel(const float* __restrict__ x, const uint4* __restrict__ w,
                     const float* __restrict__ b, int64_t N, int64_t K, float* __restrict__ y) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t K8 = K / 8;  // 16-byte weight vectors per row
  const uint4* wr = w + n * K8;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  for (int64_t k8 = lane; k8 < K8; k8 += 32) {
    const uint4 wv = __ldg(wr + k8);  // read once: the weights do not fit in cache
    const float wf[8] = {bf16_lo(wv.x), bf16_hi(wv.x), bf16_lo(wv.y), bf16_hi(wv.y),
                         bf16_lo(wv.z), bf16_hi(wv.z), bf16_lo(wv.w), bf16_hi(wv.w)};
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float4* xr = reinterpret_cast<const float4*>(x + m * K) + k8 * 2;
      const float4 a = xr[0], c = xr[1];
      float s = acc[m];
      s = fmaf(round_bf16(a.x), wf[0], s);
      s = fmaf(round_bf16(a.y), wf[1], s);
      s = fmaf(round_bf16(a.z), wf[2], s);
      s = fmaf(round_bf16(a.w), wf[3], s);
      s = fmaf(round_bf16(c.x), wf[4], s);
      s = fmaf(round_bf16(c.y), wf[5], s);
      s = fmaf(round_bf16(c.z), wf[6], s);
      s = fmaf(round_bf16(c.w), wf[7], s);
      acc[m] = s;
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float s = acc[m];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) y[m * N + n] = b ? s + b[n] : s;
  }
}

template <int M>
void launch(const float* x, const uint16_t* w, const float* b, int64_t N, int64_t K, float* y) {
  const unsigned blocks = unsigned((N + kWarpsPerBlock - 1) / kWarpsPerBlock);
  gemv_bf16_kernel<M><<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(
      x, reinterpret_cast<const uint4*>(w), b, N, K, y);
  GYRE_CUDA_LAUNCHED("gemv_bf16");
}

}  // namespace

bool linear_gemv_bf16_supported(const float* x, const uint16_t* w, int64_t M, int64_t N,
                                int64_t K) {
  // 16-byte vectors of w rows and x rows: K a multiple of 8 and both bases 16-byte aligned.
  return M >= 1 && M <= kGemvMaxRows && N >= 1 && K >= 8 && K % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
         N / kWarpsPerBlock < (int64_t(1) << 31);
}

void linear_gemv_bf16(const float* x, const uint16_t* w, const float* b, int64_t M, int64_t N,
                      int64_t K, float* y) {
  switch (M) {
    case 1: return launch<1>(x, w, b, N, K, y);
    case 2: return launch<2>(x, w, b, N, K, y);
    case 3: return launch<3>(x, w, b, N, K, y);
    case 4: return launch<4>(x, w, b, N, K, y);
    case 5: return launch<5>(x, w, b, N, K, y);
    case 6: return launch<6>(x, w, b, N, K, y);
    case 7: return launch<7>(x, w, b, N, K, y);
    default: return launch<8>(x, w, b, N, K, y);
  }
}

}  // namespace gyre::cuda
