// f32 -> bf16 bits as the bf16 paged KV cache stores them (paged_bf16_write.cu and the fused
// RoPE + KV write of rope_kv_write.cu share it, so both write the same bits): round to nearest
// even, NaN stays a quiet NaN — core/dtype.h's f32_to_bf16 bit for bit.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda {

__device__ __forceinline__ uint32_t to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (u >> 16) | 0x0040u;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return u >> 16;
}

}  // namespace gyre::cuda
