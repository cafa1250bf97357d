// SiLU as the CUDA kernels compute it (HF ACT2FN["silu"] = x * sigmoid(x), written g / (1 + e^-g)),
// shared by elementwise.cu's silu_mul forward and gemv_fused.cu's gate/up epilogue: the fused
// decode MLP is bitwise the unfused one only while both use this one expression.
#pragma once

namespace gyre::cuda {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

}  // namespace gyre::cuda
