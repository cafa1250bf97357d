// Split-KV combine of the bf16 paged attention (formula and invariants in paged_bf16_common.cuh):
// one CTA per output row merges the chunk partials written by paged_bf16_attention.cu's kernel;
// launched as that kernel's programmatic dependent (sm_90), it waits for it before reading them.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/paged_bf16_common.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda::paged_bf16_detail {

namespace {

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// Splits holding keys of output row `row` (token i = row / Hq): 0 .. pos / chunk, with the
// sequence's chunk (split_chunk of its kv_len).
__device__ __forceinline__ int valid_splits(const int32_t* cu_q, const int32_t* kv_lens, int B,
                                            int Hq, int64_t row, int splits) {
  const int i = int(row / Hq);
  const int b = seq_of_row(cu_q, B, i);
  const int pos = kv_lens[b] - (cu_q[b + 1] - cu_q[b]) + (i - cu_q[b]);
  return min(splits, pos / split_chunk(kv_lens[b], splits) + 1);
}

constexpr int kCombineThreads = 256;

// One CTA per (token, head) row (formula in paged_bf16_common.cuh). The weights 2^(m_s - M) go to
// shared memory once; thread t sums column t % D4 over the splits t / D4, t / D4 +
// kCombineThreads / D4, ... (many loads in flight), then the split groups are added. An earlier
// warp-per-row combine walking the splits serially: batch-1 decode at 4k-32k keys took 19-43 us
// with it and 14-32 us with this one (H200).
__global__ void __launch_bounds__(kCombineThreads)
    split_combine_cta_kernel(const float4* part_o, const float2* part_ml, const int32_t* cu_q,
                             const int32_t* kv_lens, int B, int T, int Hq, int D4, int splits,
                             float4* out) {
  __shared__ float wts[kMaxSplits];
  __shared__ float red[kCombineThreads / 32];
  __shared__ float4 cols[kCombineThreads];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t rows = int64_t(T) * Hq, row = blockIdx.x;
  // The index arrays are not written by the attention kernel: read them before the wait.
  const int n = valid_splits(cu_q, kv_lens, B, Hq, row, splits);
  pdl_trigger();       // the next decode kernel (o_proj's GEMV) may launch and load its weights
  pdl_wait();          // every CTA waits (paged_bf16_common.cuh, pdl.cuh), then reads the partials
  if (n == 1) return;  // split 0's CTA wrote this row's output itself
  float M = -INFINITY;
  for (int s = tid; s < n; s += kCombineThreads) M = fmaxf(M, part_ml[s * rows + row].x);
  M = warp_max(M);
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = red[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) M = fmaxf(M, red[w]);  // finite: split 0
  __syncthreads();                                                      // red is reused below
  float sum = 0.0f;
  for (int s = tid; s < n; s += kCombineThreads) {
    const float2 ml = part_ml[s * rows + row];
    const float w = exp2f(ml.x - M);
    wts[s] = w;
    sum = fmaf(ml.y, w, sum);
  }
  sum = warp_sum(sum);
  if (lane == 0) red[warp] = sum;
  __syncthreads();  // also publishes wts
  sum = 0.0f;
  for (int w = 0; w < kCombineThreads / 32; ++w) sum += red[w];
  const int groups = kCombineThreads / D4, c = tid % D4, grp = tid / D4;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (grp < groups) {
#pragma unroll 4
    for (int s = grp; s < n; s += groups) o = f4_axpy(wts[s], part_o[(s * rows + row) * D4 + c], o);
  }
  cols[tid] = o;
  __syncthreads();
  if (tid < D4) {
    for (int g = 1; g < groups; ++g) {
      const float4 a = cols[g * D4 + tid];
      o = make_float4(o.x + a.x, o.y + a.y, o.z + a.z, o.w + a.w);
    }
    out[row * D4 + tid] = f4_scale(o, 1.0f / sum);
  }
}

}  // namespace

void launch_split_combine(const float* part_o, const float2* part_ml, const int32_t* cu_q,
                          const int32_t* kv_lens, int B, int T, int Hq, int D, int splits,
                          float* out) {
  const int64_t rows = int64_t(T) * Hq;
  // A programmatic dependent of the attention kernel where the device has it (pdl.cuh; the
  // kernel's pdl_wait makes it safe); ordinary stream order otherwise.
  launch_pdl("paged_attention_bf16_combine", split_combine_cta_kernel, dim3(unsigned(rows)),
             dim3(kCombineThreads), 0, reinterpret_cast<const float4*>(part_o), part_ml, cu_q,
             kv_lens, B, T, Hq, D / 4, splits, reinterpret_cast<float4*>(out));
}

}  // namespace gyre::cuda::paged_bf16_detail
