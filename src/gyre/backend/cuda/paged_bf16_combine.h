// Host declarations of the split-KV combine launches (paged_bf16_combine.cu; the formula and the
// invariants are paged_bf16_common.cuh's), for host code that calls them directly: the attention
// (paged_bf16_attention.cu) and the GPU test comparing the combine with its CTA-only reference.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda::paged_bf16_detail {

// out [T * Hq rows, D] = the combine of part_o [splits, T * Hq, D] and part_ml [splits, T * Hq]
// over each row's valid splits; rows held by split 0 alone are left as they are. D is 64 or 128.
void launch_split_combine(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                          const int32_t* kv_lens, int B, int T, int Hq, int D, int splits,
                          int min_chunk, float* out);
// The same values, bit for bit, from the CTA path alone (combine_row_cta for every row: the order
// the one-warp replays reproduce; the GPU test's reference).
void launch_split_combine_cta(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                              const int32_t* kv_lens, int B, int T, int Hq, int D, int splits,
                              int min_chunk, float* out);

}  // namespace gyre::cuda::paged_bf16_detail
