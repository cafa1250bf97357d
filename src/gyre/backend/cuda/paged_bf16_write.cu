// bf16 paged KV cache write (paged_kv_write_bf16, declared and specified in paged_bf16.h): each
// thread converts f32 K/V values to bf16 bits and stores them at the token's cache slot; padding
// rows (negative slots) are skipped. The conversion is core/dtype.h's f32_to_bf16 bit for bit
// (bf16_bits.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

// Four values per thread: row % 4 == 0, k/v 16-byte and the caches 8-byte aligned.
__global__ void kv_write_vec4_kernel(const float4* k, const float4* v, const int32_t* slots,
                                     int64_t n4, int64_t row4, uint2* k_cache, uint2* v_cache) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n4;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row4, c = e - t * row4;
    const int64_t slot = slots[t];
    if (slot < 0) continue;  // padding row
    const float4 a = k[e], b = v[e];
    k_cache[slot * row4 + c] = make_uint2(to_bf16_bits(a.x) | to_bf16_bits(a.y) << 16,
                                          to_bf16_bits(a.z) | to_bf16_bits(a.w) << 16);
    v_cache[slot * row4 + c] = make_uint2(to_bf16_bits(b.x) | to_bf16_bits(b.y) << 16,
                                          to_bf16_bits(b.z) | to_bf16_bits(b.w) << 16);
  }
}

__global__ void kv_write_scalar_kernel(const float* k, const float* v, const int32_t* slots,
                                       int64_t n, int64_t row, uint16_t* k_cache,
                                       uint16_t* v_cache) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / row, c = e - t * row;
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    k_cache[slot * row + c] = uint16_t(to_bf16_bits(k[e]));
    v_cache[slot * row + c] = uint16_t(to_bf16_bits(v[e]));
  }
}

}  // namespace

void paged_kv_write_bf16(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                         int64_t Hkv, int64_t D, uint16_t* k_cache, uint16_t* v_cache) {
  const int64_t row = Hkv * D, total = T * row;
  if (total == 0) return;
  const auto aligned = [](const void* ptr, uintptr_t a) {
    return reinterpret_cast<uintptr_t>(ptr) % a == 0;
  };
  if (row % 4 == 0 && aligned(k, 16) && aligned(v, 16) && aligned(k_cache, 8) &&
      aligned(v_cache, 8)) {
    kv_write_vec4_kernel<<<grid_for(total / 4, 256), 256, 0, stream()>>>(
        reinterpret_cast<const float4*>(k), reinterpret_cast<const float4*>(v), slot_mapping,
        total / 4, row / 4, reinterpret_cast<uint2*>(k_cache), reinterpret_cast<uint2*>(v_cache));
  } else {
    kv_write_scalar_kernel<<<grid_for(total, 256), 256, 0, stream()>>>(k, v, slot_mapping, total,
                                                                       row, k_cache, v_cache);
  }
  GYRE_CUDA_LAUNCHED("paged_kv_write_bf16");
}

}  // namespace gyre::cuda
