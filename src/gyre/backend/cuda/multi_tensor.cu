// Multi-tensor kernels (multi_tensor.h): the apex / torch._foreach idea. Each tensor is cut into
// fixed-size chunks; one block per chunk of all tensors, and a block finds its tensor by binary
// search over the tensors' first chunk indices in a table uploaded once per call (one small
// host-to-device copy, stream-ordered, so the table's pooled buffer may be freed right after the
// launch: the allocator reuses a block on its stream only after earlier work there).
//
// Invariants: the sum-of-squares chunks are exactly the per-tensor kernel's slices (kSumGrain from
// the first element of each tensor) summed by the same block code, and each tensor's partials are
// added by one block exactly as sum_doubles_kernel does, so every per-tensor sum is bitwise the
// per-tensor op's. Element updates (scale, AdamW) are order independent per element and use the
// same expressions (elementwise_common.cuh). The table is not valid under CUDA-graph capture (its
// upload is pageable); the optimizer step is never captured.
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/elementwise_common.cuh"
#include "gyre/backend/cuda/multi_tensor.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements per block of scale / AdamW

struct Entry {
  float* a;  // scale: the tensor; AdamW: param; sum: the tensor (read only)
  const float* g;
  float* m;
  float* v;
  int64_t n;
  int64_t first;  // index of the tensor's first chunk; entries are sorted by it
};

// The tensor owning chunk b: the largest t with e[t].first <= b. Empty tensors own no chunk (their
// `first` equals the next tensor's), and the largest such t is never an empty one because
// b < e[t+1].first for the owner.
__device__ __forceinline__ int64_t owner(const Entry* e, int64_t count, int64_t b) {
  int64_t lo = 0, hi = count;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (e[mid].first <= b)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

__global__ void sumsq_partial_many_kernel(const Entry* e, int64_t count, double* part) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * ew::kSumGrain, i1 = min(t.n, i0 + ew::kSumGrain);
  const double s = ew::block_sumsq(t.a, i0, i1);
  if (threadIdx.x == 0) part[b] = s;
}

// One block per tensor: its partials part[first, first + chunks), as sum_doubles_kernel.
__global__ void sum_each_kernel(const Entry* e, int64_t total_chunks, int64_t count,
                                const double* part, double* sums) {
  const int64_t t = blockIdx.x;
  const int64_t first = e[t].first;
  const int64_t end = t + 1 < count ? e[t + 1].first : total_chunks;
  const double s = ew::block_sum_doubles(part + first, end - first);
  if (threadIdx.x == 0) sums[t] = s;
}

__global__ void scale_many_kernel(const Entry* e, int64_t count, float s) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * kChunk, i1 = min(t.n, i0 + kChunk);
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) t.a[i] *= s;
}

__global__ void adamw_many_kernel(const Entry* e, int64_t count, ew::AdamScalars c) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * kChunk, i1 = min(t.n, i0 + kChunk);
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
    ew::adamw_element(t.a, t.g, t.m, t.v, i, c);
}

// Builds the table (chunks of `chunk` elements) on the host; returns the total chunk count.
int64_t build_table(std::vector<Entry>& e, int64_t chunk) {
  int64_t total = 0;
  for (Entry& t : e) {
    t.first = total;
    total += (t.n + chunk - 1) / chunk;
  }
  // gridDim.x limit; 2^31 chunks of 16384 elements would be 2^45 elements.
  GYRE_CHECK(total < (int64_t(1) << 31), "cuda multi-tensor: {} chunks exceed the grid", total);
  return total;
}

// Copies the table into `d` (e.size() entries; the caller keeps `d` alive until the launch is
// enqueued).
void upload(const std::vector<Entry>& e, const DeviceBuffer& d) {
  GYRE_CUDA_CHECK(cudaMemcpyAsync(d.as<Entry>(), e.data(), e.size() * sizeof(Entry),
                                  cudaMemcpyHostToDevice, stream()));
}

}  // namespace

void sum_squares_each(const float* const* a, const int64_t* n, int64_t count, double* sums) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    e[i] = {const_cast<float*>(a[i]), nullptr, nullptr, nullptr, n[i], 0};
  const int64_t chunks = build_table(e, ew::kSumGrain);
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  // Partials, then the per-tensor sums after them.
  DeviceBuffer part(size_t(chunks + count) * sizeof(double));
  cudaStream_t s = stream();
  if (chunks > 0) {
    sumsq_partial_many_kernel<<<unsigned(chunks), ew::kSumThreads, 0, s>>>(table.as<Entry>(), count,
                                                                           part.as<double>());
    GYRE_CUDA_LAUNCHED("sumsq_partial_many");
  }
  sum_each_kernel<<<unsigned(count), ew::kSumFinishThreads, 0, s>>>(
      table.as<Entry>(), chunks, count, part.as<double>(), part.as<double>() + chunks);
  GYRE_CUDA_LAUNCHED("sum_each");
  GYRE_CUDA_CHECK(cudaMemcpyAsync(sums, part.as<double>() + chunks, size_t(count) * sizeof(double),
                                  cudaMemcpyDeviceToHost, s));
  GYRE_CUDA_CHECK(cudaStreamSynchronize(s));
}

void scale_many(float* const* a, const int64_t* n, int64_t count, float s) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) e[i] = {a[i], nullptr, nullptr, nullptr, n[i], 0};
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  scale_many_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count, s);
  GYRE_CUDA_LAUNCHED("scale_many");
}

void adamw_many(float* const* param, const float* const* grad, float* const* m, float* const* v,
                const int64_t* n, int64_t count, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) e[i] = {param[i], grad[i], m[i], v[i], n[i], 0};
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  const ew::AdamScalars c = ew::adam_scalars(lr, beta1, beta2, eps, weight_decay, step);
  adamw_many_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count, c);
  GYRE_CUDA_LAUNCHED("adamw_many");
}

}  // namespace gyre::cuda
