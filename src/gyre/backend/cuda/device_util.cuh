// Small device helpers shared by several CUDA translation units of the backend.
//
// Everything here is `__device__ __forceinline__` (inline linkage), so each .cu that includes it
// gets its own copy without ODR clashes; nothing here allocates, synchronises or launches.
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

}  // namespace gyre::cuda
