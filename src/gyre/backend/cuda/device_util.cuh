// Small device helpers shared by several CUDA translation units of the backend.
//
// Everything here is `__device__ __forceinline__` (inline linkage), so each .cu that includes it
// gets its own copy without ODR clashes; nothing here allocates or launches. The block reductions
// synchronise the block (__syncthreads), so every thread of the block must call them.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// The sequence holding packed row i: the largest b in [0, B) with cu[b] <= i.
// Contract: cu is a device array of B + 1 non-decreasing offsets with cu[0] = 0 (cu_seqlens of a
// packed batch), B >= 1 and 0 <= i < cu[B]. Empty sequences (cu[b] == cu[b + 1]) are skipped: the
// result is the last of equal offsets, whose range [cu[b], cu[b + 1]) holds i. O(log B) loads, no
// divergence beyond the loop trip count.
__device__ __forceinline__ int seq_of_row(const int32_t* cu, int64_t B, int64_t i) {
  int lo = 0, hi = int(B) - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Warp reductions by an xor butterfly: every lane of the (full) warp gets the result, and the
// order of the additions is the same on every lane and every run.
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block max of a float; every thread gets the result. Blocks of whole warps, at most 1024 threads.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float m = part[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) m = fmaxf(m, part[w]);
  __syncthreads();
  return m;
}

// Block sum of a double in a fixed order (lanes, then warps in order): every thread gets the same,
// run-to-run reproducible result. Same block shape contract as block_max.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double t = 0;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) t += part[w];
  __syncthreads();
  return t;
}

}  // namespace gyre::cuda
