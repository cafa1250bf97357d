// SwiGLU's per-element arithmetic as the CUDA kernels compute it (HF ACT2FN["silu"] = x *
// sigmoid(x), written g / (1 + e^-g)), shared by elementwise.cu's f32 silu_mul forward/backward,
// silu_bf16.cu's bf16-input variants (the bf16 gate/up of an autocast MLP) and gemv_fused.cu's
// gate/up epilogue. The fused MLP ops are bitwise the unfused ones, and the bf16-input kernels
// bitwise the f32 ones on the converted values, only while every kernel evaluates these same
// inline expressions on the same f32 values (the same statements compile to the same
// instructions, contractions included: nothing outside these functions is added to their
// products).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace gyre::cuda {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// silu_mul's forward value: silu(g) * u.
__device__ __forceinline__ float silu_mul_value(float g, float u) { return silu(g) * u; }

// silu_mul's backward: d silu / dg = sig (1 + g (1 - sig)).
__device__ __forceinline__ void silu_mul_grad(float d, float g, float u, float& dg, float& du) {
  const float sig = 1.0f / (1.0f + expf(-g));
  dg = d * u * sig * (1.0f + g * (1.0f - sig));
  du = d * (g * sig);
}

// A bf16 value as f32 (exact: bf16 is the upper half of an f32), bf16_to_f32's conversion.
__device__ __forceinline__ float bf16_value(uint16_t v) {
  return __bfloat162float(__ushort_as_bfloat16(v));
}

}  // namespace gyre::cuda
