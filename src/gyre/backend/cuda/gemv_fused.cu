// Fused decode GEMVs (gemv_fused.h): the q/k/v or gate/up linears of a decoder layer in one
// launch, gate/up with the SiLU·mul epilogue, and o/down with the residual add in the epilogue.
//
// Why: a batch-1 decode step of a small model is ~530 kernels of a few microseconds each (issue
// 7); the weights stream at the same speed whether one launch or three reads them, so merging
// launches removes latency without adding bytes.
//
// Bitwise equality with the unfused GEMV path: every column's sum is gemv::dot_rows (the plain
// kernel's code), the bias is added the same way (gemv::with_bias), and the epilogues are the
// unfused kernels' expressions — silu_mul_fwd's `g / (1.0f + expf(-g)) * u` and add's `a + b` —
// in the same f32 operations, with no multiply-add the compiler could contract differently.
#include <cstdint>
#include <type_traits>

#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using gemv::kWarpsPerBlock;
constexpr int kThreads = kWarpsPerBlock * 32;

unsigned blocks_for(int64_t columns) {
  return unsigned((columns + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// Columns [0, n_0) belong to member 0, the next n_1 to member 1, ...; blocks may straddle members.
template <int M>
__global__ void __launch_bounds__(kThreads)
    gemv_group_kernel(const float* __restrict__ x, GemvGroup g, int64_t K) {
  const int lane = int(threadIdx.x) & 31;
  int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  // Select the member with compile-time indices only (no dynamic indexing of the parameter
  // struct, which would copy it to local memory).
  const uint16_t* w = nullptr;
  const float* b = nullptr;
  float* y = nullptr;
  int64_t N = 0;
  bool found = false;
#pragma unroll
  for (int i = 0; i < kGemvGroupMax; ++i) {
    if (!found && i < g.count) {
      if (n < g.n[i]) {
        w = g.w[i], b = g.b[i], y = g.y[i], N = g.n[i];
        found = true;
      } else {
        n -= g.n[i];
      }
    }
  }
  if (!found) return;  // past the last member's columns (whole warp: the shuffles stay uniform)
  const int64_t K8 = K / 8;
  const uint4* const wr[1] = {reinterpret_cast<const uint4*>(w) + n * K8};
  float acc[1][M];
  gemv::dot_rows<M, 1>(x, wr, K8, lane, acc);
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) y[m * N + n] = gemv::with_bias(acc[0][m], b, n);
}

template <int M>
__global__ void __launch_bounds__(kThreads)
    gemv_silu_mul_kernel(const float* __restrict__ x, const uint4* __restrict__ wg,
                         const float* __restrict__ bg, const uint4* __restrict__ wu,
                         const float* __restrict__ bu, int64_t N, int64_t K,
                         float* __restrict__ out) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t K8 = K / 8;
  const uint4* const wr[2] = {wg + n * K8, wu + n * K8};
  float acc[2][M];
  gemv::dot_rows<M, 2>(x, wr, K8, lane, acc);
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float g = gemv::with_bias(acc[0][m], bg, n);
      const float u = gemv::with_bias(acc[1][m], bu, n);
      const float silu = g / (1.0f + expf(-g));  // silu_mul_fwd_kernel's formula (elementwise.cu)
      out[m * N + n] = silu * u;
    }
}

// r and y may be the same buffer: not __restrict__.
template <int M>
__global__ void __launch_bounds__(kThreads)
    gemv_residual_kernel(const float* __restrict__ x, const uint4* __restrict__ w,
                         const float* __restrict__ b, const float* r, int64_t N, int64_t K,
                         float* y) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t K8 = K / 8;
  const uint4* const wr[1] = {w + n * K8};
  float acc[1][M];
  gemv::dot_rows<M, 1>(x, wr, K8, lane, acc);
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float lin = gemv::with_bias(acc[0][m], b, n);  // what linear_gemv_bf16 stores
      y[m * N + n] = lin + r[m * N + n];                   // add_kernel: out = a + b
    }
}

// Calls f(std::integral_constant<int, M>) for M in [1, 8] (M checked by the ops layer).
template <typename F>
void with_rows(int64_t M, F&& f) {
  switch (M) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

}  // namespace

void linear_gemv_bf16_group(const float* x, const GemvGroup& g, int64_t M, int64_t K) {
  int64_t columns = 0;
  for (int i = 0; i < g.count; ++i) columns += g.n[i];
  if (columns == 0) return;
  with_rows(M, [&](auto m) {
    gemv_group_kernel<decltype(m)::value><<<blocks_for(columns), kThreads, 0, stream()>>>(x, g, K);
  });
  GYRE_CUDA_LAUNCHED("gemv_bf16_group");
}

void linear_gemv_bf16_silu_mul(const float* x, const uint16_t* wg, const float* bg,
                               const uint16_t* wu, const float* bu, int64_t M, int64_t N, int64_t K,
                               float* out) {
  if (N == 0) return;
  with_rows(M, [&](auto m) {
    gemv_silu_mul_kernel<decltype(m)::value><<<blocks_for(N), kThreads, 0, stream()>>>(
        x, reinterpret_cast<const uint4*>(wg), bg, reinterpret_cast<const uint4*>(wu), bu, N, K,
        out);
  });
  GYRE_CUDA_LAUNCHED("gemv_bf16_silu_mul");
}

void linear_gemv_bf16_residual(const float* x, const uint16_t* w, const float* b, const float* r,
                               int64_t M, int64_t N, int64_t K, float* y) {
  if (N == 0) return;
  with_rows(M, [&](auto m) {
    gemv_residual_kernel<decltype(m)::value><<<blocks_for(N), kThreads, 0, stream()>>>(
        x, reinterpret_cast<const uint4*>(w), b, r, N, K, y);
  });
  GYRE_CUDA_LAUNCHED("gemv_bf16_residual");
}

}  // namespace gyre::cuda
