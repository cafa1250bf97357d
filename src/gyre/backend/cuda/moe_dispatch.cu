// MoE dispatch kernels (moe_dispatch.h): the stable counting sort of routing slots by expert and
// the weighted sum of expert outputs back to tokens, with its backward.
//
// Invariants: no floating-point atomics anywhere. The permutation is a pure function of the
// indices: chunk histograms use shared-memory integer atomics (their counts do not depend on the
// order of the adds), the scan is serial per expert over chunks, and a slot's rank inside its chunk
// counts the earlier slots of the same expert, so within an expert positions follow slot order —
// bitwise the CPU counting sort. The unpermute sums a token's k rows in ascending j, one thread per
// output element, like the CPU loop; the routing-weight gradient is an f64 block sum in a fixed
// order (device_util.cuh). Nothing here synchronises the host.
#include <algorithm>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/moe_dispatch.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

constexpr int kChunk = 256;    // slots per block of the permutation kernels, one per thread
constexpr int kThreads = 256;  // row kernels
constexpr int kScanThreads = 1024;

// counts[b·E + e] = slots of chunk b routed to expert e.
__global__ void permute_count_kernel(const int32_t* idx, int64_t N, int64_t E, int32_t* counts) {
  extern __shared__ int32_t hist[];
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int64_t s = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  if (s < N) atomicAdd(&hist[idx[s]], 1);
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[blockIdx.x * E + e] = hist[e];
}

// One block. counts[b·E + e] becomes the first position of chunk b's slots of expert e:
// offsets[e] + (slots of e in chunks before b); offsets[E + 1] is the exclusive scan of the totals.
__global__ void permute_scan_kernel(int32_t* counts, int64_t chunks, int64_t E, int32_t* offsets) {
  extern __shared__ int32_t start[];  // [E]: total, then first position, of each expert
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t run = 0;
    for (int64_t b = 0; b < chunks; ++b) {
      const int32_t c = counts[b * E + e];
      counts[b * E + e] = run;
      run += c;
    }
    start[e] = run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t acc = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int32_t c = start[e];
      start[e] = acc;
      offsets[e] = acc;
      acc += c;
    }
    offsets[E] = acc;
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
    for (int64_t b = 0; b < chunks; ++b) counts[b * E + e] += start[e];
}

// Slot s of chunk b goes to base[b·E + e] + (earlier slots of its chunk with the same expert).
__global__ void permute_scatter_kernel(const int32_t* idx, int64_t N, int64_t k, int64_t E,
                                       const int32_t* base, int32_t* perm, int32_t* pos,
                                       int32_t* rows) {
  __shared__ int32_t expert_of[kChunk];
  const int64_t s = blockIdx.x * int64_t(kChunk) + threadIdx.x;
  const int32_t e = s < N ? idx[s] : -1;
  expert_of[threadIdx.x] = e;
  __syncthreads();
  if (s >= N) return;
  int32_t rank = 0;
  for (int i = 0; i < int(threadIdx.x); ++i) rank += expert_of[i] == e;  // broadcast reads
  const int64_t p = base[blockIdx.x * E + e] + rank;
  perm[p] = int32_t(s);
  pos[s] = int32_t(p);
  rows[p] = int32_t(s / k);
}

__global__ void unpermute_kernel(const float* y, const int32_t* pos, const float* w, int64_t tokens,
                                 int64_t k, int64_t H, float* out) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x)
    for (int64_t c = threadIdx.x; c < H; c += blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const float v = y[int64_t(pos[t * k + j]) * H + c];
        acc = w ? acc + w[t * k + j] * v : acc + v;
      }
      out[t * H + c] = acc;
    }
}

// One block per position (grid-stride; the loop count is uniform over the block, so block_sum's
// barriers are reached by every thread).
__global__ void unpermute_bwd_kernel(const float* dout, const float* y, const int32_t* perm,
                                     const float* w, int64_t N, int64_t k, int64_t H, float* dy,
                                     float* dw) {
  for (int64_t p = blockIdx.x; p < N; p += gridDim.x) {
    const int64_t s = perm[p];
    const float* d = dout + (s / k) * H;
    const float scale = dy ? w[s] : 0.0f;
    double acc = 0;
    for (int64_t c = threadIdx.x; c < H; c += blockDim.x) {
      const float g = d[c];
      if (dy) dy[p * H + c] = scale * g;
      if (dw) acc += double(g) * double(y[p * H + c]);
    }
    if (dw) {
      acc = block_sum(acc);
      if (threadIdx.x == 0) dw[s] = float(acc);
    }
  }
}

unsigned row_grid(int64_t rows) {
  return unsigned(std::min<int64_t>(std::max<int64_t>(rows, 1), 65535));
}

}  // namespace

void moe_permute(const int32_t* indices, int64_t N, int64_t k, int64_t E, int32_t* perm,
                 int32_t* pos, int32_t* rows, int32_t* offsets) {
  cudaStream_t s = stream();
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const size_t hist_bytes = size_t(E) * sizeof(int32_t);
  DeviceBuffer counts(size_t(std::max<int64_t>(chunks, 1) * E) * sizeof(int32_t));
  if (chunks > 0) {
    permute_count_kernel<<<unsigned(chunks), kChunk, hist_bytes, s>>>(indices, N, E,
                                                                      counts.as<int32_t>());
    GYRE_CUDA_LAUNCHED("moe_permute_count");
  }
  // Also runs for N = 0: it writes the (zero) offsets.
  permute_scan_kernel<<<1, kScanThreads, hist_bytes, s>>>(counts.as<int32_t>(), chunks, E, offsets);
  GYRE_CUDA_LAUNCHED("moe_permute_scan");
  if (chunks > 0) {
    permute_scatter_kernel<<<unsigned(chunks), kChunk, 0, s>>>(
        indices, N, k, E, counts.as<int32_t>(), perm, pos, rows);
    GYRE_CUDA_LAUNCHED("moe_permute_scatter");
  }
}

void moe_unpermute(const float* y, const int32_t* pos, const float* w, int64_t tokens, int64_t k,
                   int64_t H, float* out) {
  if (tokens * H == 0) return;
  unpermute_kernel<<<row_grid(tokens), kThreads, 0, stream()>>>(y, pos, w, tokens, k, H, out);
  GYRE_CUDA_LAUNCHED("moe_unpermute");
}

void moe_unpermute_bwd(const float* dout, const float* y, const int32_t* perm, const float* w,
                       int64_t tokens, int64_t k, int64_t H, float* dy, float* dw) {
  const int64_t N = tokens * k;
  if (N == 0 || (!dy && !dw)) return;
  unpermute_bwd_kernel<<<row_grid(N), kThreads, 0, stream()>>>(dout, y, perm, w, N, k, H, dy, dw);
  GYRE_CUDA_LAUNCHED("moe_unpermute_bwd");
}

}  // namespace gyre::cuda
