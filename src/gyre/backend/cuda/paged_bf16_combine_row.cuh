// The split combine of one output row (formula and invariants in paged_bf16_common.cuh), the CTA
// body of paged_bf16_combine.cu's kernel and of the batch-1 decode stack's combine stage
// (decode_stack.cu), so both add in one order. kCombineThreads threads run it; n is the row's
// valid split count (n == 1: split 0's CTA wrote the row, nothing to do). `ld` reads a partial
// (the kernel: a plain load; the stack: through L2). The CTA's shared arrays are reused by a
// second call only after a __syncthreads.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gyre/backend/cuda/device_util.cuh"  // warp_max, warp_sum
#include "gyre/backend/cuda/paged_bf16_common.cuh"

namespace gyre::cuda::paged_bf16_detail {

constexpr int kCombineThreads = 256;

// Plain loads of the partials (paged_bf16_combine.cu's kernel).
struct PlainLoad {
  template <typename T>
  __device__ __forceinline__ T operator()(const T* p) const {
    return *p;
  }
};

// The weights 2^(m_s - M) go to shared memory once; thread t sums column t % D4 over the splits
// t / D4, t / D4 + kCombineThreads / D4, ... (many loads in flight), then the split groups are
// added. An earlier warp-per-row combine walking the splits serially: batch-1 decode at 4k-32k
// keys took 19-43 us with it and 14-32 us with this one (H200).
template <typename Load>
__device__ __forceinline__ void combine_row_cta(const float4* part_o, const float2* part_ml,
                                                int64_t rows, int64_t row, int D4, int n,
                                                float4* out, Load ld) {
  __shared__ float wts[kMaxSplits];
  __shared__ float red[kCombineThreads / 32];
  __shared__ float4 cols[kCombineThreads];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (n == 1) return;  // split 0's CTA wrote this row's output itself
  float M = -INFINITY;
  for (int s = tid; s < n; s += kCombineThreads) M = fmaxf(M, ld(&part_ml[s * rows + row]).x);
  M = warp_max(M);
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = red[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) M = fmaxf(M, red[w]);  // finite: split 0
  __syncthreads();                                                      // red is reused below
  float sum = 0.0f;
  for (int s = tid; s < n; s += kCombineThreads) {
    const float2 ml = ld(&part_ml[s * rows + row]);
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
    for (int s = grp; s < n; s += groups)
      o = f4_axpy(wts[s], ld(&part_o[(s * rows + row) * D4 + c]), o);
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

}  // namespace gyre::cuda::paged_bf16_detail
