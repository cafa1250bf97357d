// SwiGLU with a bf16 output (kernels.h's silu_mul_fwd_bf16): the activation of the fused MLP past
// the decode GEMV's rows (fused_gemm.h's swiglu_mlp_residual_gemm_bf16), where silu_mul followed
// by the down projection's f32 -> bf16 cast of its input becomes one launch.
//
// Bitwise contract: the f32 value is elementwise.cu's silu_mul_fwd_kernel's — the same statements
// (silu.cuh's silu(g), then * up) on the same loaded values, and nothing after the product that
// the compiler could contract with it: the product goes straight into the conversion. The
// conversion is f32_to_bf16's (__float2bfloat16_rn: round to nearest even, NaN kept a NaN), so out
// holds exactly the bits f32_to_bf16 makes of silu_mul_fwd's output. The launch shape (grid-stride,
// as elementwise.cu) does not enter any element's arithmetic.
#include <cuda_bf16.h>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/silu.cuh"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void silu_mul_bf16_kernel(const float* gate, const float* up, uint16_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    const float v = silu(g) * up[i];  // silu_mul_fwd_kernel's expression (silu.cuh)
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));  // f32_to_bf16_kernel's
  }
}

}  // namespace

void silu_mul_fwd_bf16(const float* gate, const float* up, uint16_t* out, int64_t n) {
  if (n == 0) return;
  silu_mul_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(gate, up, out, n);
  GYRE_CUDA_LAUNCHED("silu_mul_fwd_bf16");
}

}  // namespace gyre::cuda
