// Small-M autocast linear (decode): y[M, N] = bf16(x)[M, K] · w_bf16[N, K]^T + b for M <= 8.
//
// Why: at batch 1-8 a decode step's linears are weight-bandwidth problems (every weight byte is
// read once per step), but the general path runs an f32->bf16 kernel for x and then a cuBLASLt
// GEMM whose tiles cannot fill the GPU at M = 1 (17 us per linear call on the 0.5B shape, against
// ~2 us to stream its weights; notes/device_measurements.md, session 5). Here S = split_for(K)
// warps (1, or 4 for long rows: split-K) own one output column n: they stream w[n, :] with 16-byte
// loads (8 bf16), round the matching x values to bf16 in registers (round to nearest even, exactly
// what autocast's f32_to_bf16 kernel does) and keep M f32 dot products, reduced across each warp
// and then over the S warps in a fixed order (gemv_bf16_common.cuh, which the fused decode kernels
// of gemv_fused.cu share, so their columns are bitwise these).
//
// Numerics: each product of two bf16 values is exact in f32, so the result differs from the GEMM
// path only in the order of the f32 additions (~1e-7 relative), the same bound the autocast tests
// apply to cuBLAS (1e-5 against the CPU f32 op on rounded operands).
#include <cstdint>

#include "gyre/backend/cuda/gemv_bf16_common.cuh"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using gemv::kWarpsPerBlock;

// A block of kWarpsPerBlock warps computes kWarpsPerBlock / S columns.
template <int M, int S>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_bf16_kernel(const float* __restrict__ x, const uint4* __restrict__ w,
                     const float* __restrict__ b, int64_t N, int64_t K, float* __restrict__ y) {
  pdl_trigger();  // the next decode kernel may launch and load its weights (pdl.cuh)
  const int lane = int(threadIdx.x) & 31;
  const int64_t n = int64_t(blockIdx.x) * (kWarpsPerBlock / S) + gemv::column_slot<S>();
  if (n >= N) return;        // all S warps of the column together
  const int64_t K8 = K / 8;  // 16-byte weight vectors per row
  const uint4* const wr[1] = {w + n * K8};
  float acc[1][M];
  if (!gemv::dot_rows<M, 1, S, kWarpsPerBlock>(x, wr, K8, lane, acc)) return;
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) y[m * N + n] = gemv::with_bias(acc[0][m], b, n);
}

template <int M>
void launch(const float* x, const uint16_t* w, const float* b, int64_t N, int64_t K, float* y) {
  gemv::with_split(K, [&](auto s) {
    constexpr int S = decltype(s)::value;
    constexpr int columns = kWarpsPerBlock / S;  // per block
    const unsigned blocks = unsigned((N + columns - 1) / columns);
    launch_pdl("gemv_bf16", gemv_bf16_kernel<M, S>, blocks, kWarpsPerBlock * 32, 0, x,
               reinterpret_cast<const uint4*>(w), b, N, K, y);
  });
}

}  // namespace

bool linear_gemv_bf16_supported(const float* x, const uint16_t* w, int64_t M, int64_t N,
                                int64_t K) {
  // 16-byte vectors of w rows and x rows: K a multiple of 8 and both bases 16-byte aligned.
  return M >= 1 && M <= kGemvMaxRows && N >= 1 && K >= 8 && K % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
         N < (int64_t(1) << 31);  // blocks <= N whatever split_for(K) is: a valid grid size
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
