// Pieces shared by the bf16 paged KV attention kernels: paged_bf16_attention.cu (the tile kernel
// for decode and prefill, the split plan and the public entry points) and paged_bf16_combine.cu
// (the split-KV combine). The public interface is paged_bf16.h; nothing here is part of it.
//
// Split-KV (flash-decoding): when (sequences x kv heads x row tiles) cannot fill the GPU, the keys
// [0, max_kv_len) are cut into `splits` chunks of `chunk` keys (a multiple of the 64-key tile), one
// CTA per chunk. A chunk's CTA writes per row the unnormalised partial o_s = sum_j 2^(x_j - m_s)
// v_j, its max m_s (log2 units) and sum l_s = sum_j 2^(x_j - m_s); the combine kernel then computes
//   M = max_s m_s,  L = sum_s l_s 2^(m_s - M),  out = (sum_s o_s 2^(m_s - M)) / L,
// which is exactly softmax over the union of the chunks. Split s holds keys of a row at position
// pos iff s * chunk <= pos, so the combine reads splits 0 .. pos / chunk only (each of those saw
// at least key s * chunk, so l_s > 0); chunks past a row's position are never read. The split plan
// depends only on host-known sizes (B, heads, max_q_len, max_kv_len) and the SM count.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda::paged_bf16_detail {

constexpr int kMaxSplits = 512;  // most key chunks of one call (the combine keeps their weights)

__device__ __forceinline__ float4 f4_axpy(float a, const float4& x, const float4& y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}
__device__ __forceinline__ float4 f4_scale(const float4& x, float a) {
  return make_float4(x.x * a, x.y * a, x.z * a, x.w * a);
}

// out [T * Hq rows, D] = the combine of the split partials part_o [splits, T * Hq, D] and
// part_ml [splits, T * Hq] (max in log2 units, sum) over the splits that hold keys of each row;
// launched on cuda::stream(). D is 64 or 128 (D / 4 float4 columns divide the CTA).
void launch_split_combine(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                          const int32_t* kv_lens, int B, int T, int Hq, int D, int chunk,
                          int splits, float* out);

}  // namespace gyre::cuda::paged_bf16_detail
