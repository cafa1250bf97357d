// The split combine of one output row (formula and invariants in paged_bf16_common.cuh), the CTA
// body of paged_bf16_combine.cu's kernel and of the batch-1 decode stack's combine stage
// (decode_stack.cu), so both add in one order. kCombineThreads threads run it; n is the row's
// valid split count (n == 1: split 0's CTA wrote the row, nothing to do). `ld` reads a partial
// (the kernel: a plain load; the stack: through L2). The CTA's shared arrays are reused by a
// second call only after a __syncthreads. combine_row_warp_small computes the same row, bit for
// bit, with one warp (the kernel's rows of at most 32 splits).
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

// combine_row_cta's row computed by ONE warp, bit for bit, for rows of at most 32 valid splits (a
// batch-1 decode over up to 32 chunks of keys: 2,048 keys at the default 64-key chunk). The CTA's
// float operations depend on its 256-thread mapping, so the warp replays that mapping rather than
// choosing its own order — with the latency of one L2 round trip and no block barrier: every load
// is issued before any use (lane s's (m, l), and the output vectors of the first splits), and the
// CTA's empty threads, warps and split groups are not replayed one by one (each adds only zeros).
// The CTA's operations:
//  - M: lane s < n holds fmaxf(-inf, m_s) (the CTA's thread s), the others -inf; warp_max; the
//    CTA's other warps hold -inf, which fmaxf leaves out;
//  - sum: lane s's fmaf(l_s, w_s, 0), warp_sum (warp 0's red[0]); the CTA then adds red[0 .. 7]
//    to 0 in order, its seven other warps' sums being +0: ((0 + red[0]) + 0) + ... == 0 + red[0]
//    (y + 0 == y for every y but -0, and 0 + red[0] is never -0);
//  - o: the CTA's split group g (G = 256 / D4 groups; splits g, g + G, ...) chains
//    f4_axpy(w_s, o_s, .) from 0 for column c; thread c adds groups 1 .. G - 1 to its group 0 in
//    order, empty groups included (+0 vectors). Here the 32 / D4 lanes of column c (lane
//    h * D4 + c) each chain 8 of the groups (h * 8 .. h * 8 + 7: 256 / 32 = 8 groups a lane);
//    lane c adds its groups 1 .. 7 to its group 0, and at D4 = 16 lane 16 + c takes that total
//    and adds its groups 8 .. 15 to it one by one: the CTA's sequence of adds.
// D4 = D / 4: 32 (D = 128) or 16 (D = 64). Every lane of the warp calls it, with n <= 32.
template <int D4, typename Load>
__device__ __forceinline__ bool combine_row_warp_small(const float4* part_o, const float2* part_ml,
                                                       int64_t rows, int64_t row, int n,
                                                       float4* dst, Load ld) {
  static_assert(D4 == 32 || D4 == 16, "D = 128 or 64");
  constexpr int G = kCombineThreads / D4;  // the CTA's split groups
  constexpr int kLaneGroups = 8;           // groups a lane chains: G / (32 / D4)
  static_assert(G == kLaneGroups * (32 / D4), "256 threads = 32 lanes x 8 groups");
  constexpr int kRounds = (32 + G - 1) / G;  // splits s = r * G + g, r < kRounds, cover n <= 32
  const int lane = int(threadIdx.x & 31), c = lane % D4, h = lane / D4;
  if (n == 1) return false;
  const bool has = lane < n;
  const float2 ml = has ? ld(&part_ml[lane * rows + row]) : make_float2(-INFINITY, 0.0f);
  const float4* const col = part_o + row * D4 + c;  // split s's vector: col[s * stride]
  const int64_t stride = rows * D4;
  float4 v[kLaneGroups];  // round 0's output vectors, loaded with ml
#pragma unroll
  for (int j = 0; j < kLaneGroups; ++j) {
    const int s = h * kLaneGroups + j;
    if (s < n) v[j] = ld(&col[s * stride]);
  }
  const float M = warp_max(fmaxf(-INFINITY, ml.x));
  const float wgt = has ? exp2f(ml.x - M) : 0.0f;
  const float sum = 0.0f + warp_sum(has ? fmaf(ml.y, wgt, 0.0f) : 0.0f);
  float4 og[kLaneGroups];
#pragma unroll
  for (int j = 0; j < kLaneGroups; ++j) og[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
    if (r * G >= n) break;  // warp-uniform
#pragma unroll
    for (int j = 0; j < kLaneGroups; ++j) {
      const int s = r * G + h * kLaneGroups + j;
      const float ws = __shfl_sync(0xffffffffu, wgt, s & 31);  // every lane takes part
      if (s < n) og[j] = f4_axpy(ws, r == 0 ? v[j] : ld(&col[s * stride]), og[j]);
    }
  }
  // Lane h * D4 + c adds its groups to the running sum of the groups before them (lane c starts
  // from its group 0; with D4 = 16, lane 16 + c continues from lane c's total).
  float4 o = og[0];
#pragma unroll
  for (int j = 1; j < kLaneGroups; ++j)
    o = make_float4(o.x + og[j].x, o.y + og[j].y, o.z + og[j].z, o.w + og[j].w);
  if constexpr (D4 == 16) {
    // Lane c's total (groups 0 .. 7) to lane 16 + c, which adds groups 8 .. 15 to it in order.
    const float4 t =
        make_float4(__shfl_sync(0xffffffffu, o.x, c), __shfl_sync(0xffffffffu, o.y, c),
                    __shfl_sync(0xffffffffu, o.z, c), __shfl_sync(0xffffffffu, o.w, c));
    if (h == 1) {
      o = t;
#pragma unroll
      for (int j = 0; j < kLaneGroups; ++j)
        o = make_float4(o.x + og[j].x, o.y + og[j].y, o.z + og[j].z, o.w + og[j].w);
    }
  }
  if (h == 32 / D4 - 1) dst[c] = f4_scale(o, 1.0f / sum);
  return true;
}

}  // namespace gyre::cuda::paged_bf16_detail
