// Split-KV combine of the bf16 paged attention (formula and invariants in paged_bf16_common.cuh):
// one CTA per output row merges the chunk partials written by paged_bf16_attention.cu's kernel
// (warp 0 alone where the row has at most 32 of them: paged_bf16_combine_row.cuh);
// launched as that kernel's programmatic dependent (sm_90), it waits for it before reading them.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/paged_bf16_combine_row.cuh"
#include "gyre/backend/cuda/paged_bf16_common.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/env.h"

namespace gyre::cuda::paged_bf16_detail {

namespace {

// Splits holding keys of output row `row` (token i = row / Hq): 0 .. pos / chunk, with the
// sequence's chunk (split_chunk of its kv_len).
__device__ __forceinline__ int valid_splits(const int32_t* cu_q, const int32_t* kv_lens, int B,
                                            int Hq, int64_t row, int splits, int min_chunk) {
  const int i = int(row / Hq);
  const int b = seq_of_row(cu_q, B, i);
  const int pos = kv_lens[b] - (cu_q[b + 1] - cu_q[b]) + (i - cu_q[b]);
  return min(splits, pos / split_chunk(kv_lens[b], splits, min_chunk) + 1);
}

// One CTA per (token, head) row: combine_row_cta (paged_bf16_combine_row.cuh). kD4 > 0: a row of
// at most 32 valid splits is merged by warp 0 alone with combine_row_warp_small — the same bits in
// one L2 round trip and no block barrier (batch-1 decode over contexts up to 2,048 keys); longer
// rows keep the CTA's many loads in flight.
template <int kD4>
__global__ void __launch_bounds__(kCombineThreads)
    split_combine_cta_kernel(const float4* part_o, const float2* part_ml, const int32_t* cu_q,
                             const int32_t* kv_lens, int B, int T, int Hq, int D4, int splits,
                             int min_chunk, float4* out) {
  const int64_t rows = int64_t(T) * Hq, row = blockIdx.x;
  // The index arrays are not written by the attention kernel: read them before the wait.
  const int n = valid_splits(cu_q, kv_lens, B, Hq, row, splits, min_chunk);
  pdl_trigger();  // the next decode kernel (o_proj's GEMV) may launch and load its weights
  pdl_wait();     // every CTA waits (paged_bf16_common.cuh, pdl.cuh), then reads the partials
  if constexpr (kD4 > 0) {
    if (n <= 32) {  // uniform in the CTA (one row)
      if (threadIdx.x < 32)
        combine_row_warp_small<kD4>(part_o, part_ml, rows, row, n, out + row * kD4, PlainLoad{});
      return;
    }
  }
  combine_row_cta(part_o, part_ml, rows, row, D4, n, out, PlainLoad{});
}

}  // namespace

int min_chunk_keys() {
  // Parsed strictly (core/env.h): a value that is not an integer in range is an error naming it.
  static const int keys = [] {
    const int64_t v = env_int("GYRE_PAGED_MIN_CHUNK", kDefaultMinChunk, 1, int64_t(1) << 30);
    return int((v + kPlanTileKeys - 1) / kPlanTileKeys * kPlanTileKeys);
  }();
  return keys;
}

void launch_split_combine_cta(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                              const int32_t* kv_lens, int B, int T, int Hq, int D, int splits,
                              int min_chunk, float* out) {
  launch_pdl("paged_attention_bf16_combine_cta", split_combine_cta_kernel<0>,
             dim3(unsigned(int64_t(T) * Hq)), dim3(kCombineThreads), 0,
             reinterpret_cast<const float4*>(part_o), part_ml, cu_q, kv_lens, B, T, Hq, D / 4,
             splits, min_chunk, reinterpret_cast<float4*>(out));
}

void launch_split_combine(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                          const int32_t* kv_lens, int B, int T, int Hq, int D, int splits,
                          int min_chunk, float* out) {
  const int64_t rows = int64_t(T) * Hq;
  // Rows of at most 32 splits take warp 0's path (bitwise the CTA's: the GPU test compares the
  // two).
  const auto kernel = D == 128 ? split_combine_cta_kernel<32> : split_combine_cta_kernel<16>;
  // A programmatic dependent of the attention kernel where the device has it (pdl.cuh; the
  // kernel's pdl_wait makes it safe); ordinary stream order otherwise.
  launch_pdl("paged_attention_bf16_combine", kernel, dim3(unsigned(rows)), dim3(kCombineThreads), 0,
             reinterpret_cast<const float4*>(part_o), part_ml, cu_q, kv_lens, B, T, Hq, D / 4,
             splits, min_chunk, reinterpret_cast<float4*>(out));
}

}  // namespace gyre::cuda::paged_bf16_detail
