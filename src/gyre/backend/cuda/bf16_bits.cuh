// f32 -> bf16 bits, in the two roundings the CUDA kernels use.
// - to_bf16_bits: as the bf16 paged KV cache stores them (paged_bf16_write.cu and the fused RoPE +
//   KV write of rope_kv_write.cu share it, so both write the same bits): round to nearest even,
//   NaN stays a quiet NaN of the same sign — core/dtype.h's f32_to_bf16 bit for bit.
// - bf16_rn_bits / bf16_rn_pair / bf16_rn_pack4: __float2bfloat16_rn, the rounding of
//   cuda::f32_to_bf16 and of every kernel whose bf16 output must equal "compute in f32, then
//   f32_to_bf16" (round to nearest even; a NaN becomes the canonical NaN). The packed forms put the
//   first value in the low half (little-endian: the lower column), for 4- and 8-byte stores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda {

__device__ __forceinline__ uint32_t to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (u >> 16) | 0x0040u;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return u >> 16;
}

__device__ __forceinline__ uint32_t bf16_rn_bits(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ uint32_t bf16_rn_pair(float lo, float hi) {
  return bf16_rn_bits(lo) | (bf16_rn_bits(hi) << 16);
}
__device__ __forceinline__ uint2 bf16_rn_pack4(float a, float b, float c, float d) {
  return make_uint2(bf16_rn_pair(a, b), bf16_rn_pair(c, d));
}

}  // namespace gyre::cuda
