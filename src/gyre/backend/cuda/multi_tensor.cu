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
// same expressions (elementwise_common.cuh). AdamW's optional bf16 output is the cast of the value
// the thread has just stored (read back, or on the float4 path the register it stored: the stored
// f32 bit for bit either way), rounded by the
// intrinsic cuda::f32_to_bf16 uses; the cast-only kernel (the bf16 weight cache's refresh) and the
// copy kernel's bf16 output (the cast of the very value it copies) round the same way. The table is
// not valid under CUDA-graph capture (its upload is pageable); neither the optimizer step nor a
// refresh is ever captured.
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/elementwise_common.cuh"
#include "gyre/backend/cuda/multi_tensor.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements per block of scale / AdamW

struct Entry {
  float* a;  // scale: the tensor; AdamW: param; sum and cast: the tensor (read only); copy: dst
  const float* g;  // AdamW: the gradient; copy: the source
  float* m;
  float* v;
  uint16_t* bf;  // AdamW, copy: the new value's bf16 copy (may be null); cast: the destination
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

// Four elements of one chunk at [i, i + 4): 16-byte loads and stores of param, grad, m, v (and 8
// bytes of bf16), the element arithmetic unchanged (ew::adamw_value).
template <bool kBf16>
__device__ __forceinline__ void adamw_vec4(const Entry& t, int64_t i, const ew::AdamScalars& c) {
  float4 p = *reinterpret_cast<const float4*>(t.a + i);
  const float4 g = *reinterpret_cast<const float4*>(t.g + i);
  float4 m = *reinterpret_cast<const float4*>(t.m + i);
  float4 v = *reinterpret_cast<const float4*>(t.v + i);
  p.x = ew::adamw_value(p.x, g.x, m.x, v.x, c);
  p.y = ew::adamw_value(p.y, g.y, m.y, v.y, c);
  p.z = ew::adamw_value(p.z, g.z, m.z, v.z, c);
  p.w = ew::adamw_value(p.w, g.w, m.w, v.w, c);
  *reinterpret_cast<float4*>(t.a + i) = p;
  *reinterpret_cast<float4*>(t.m + i) = m;
  *reinterpret_cast<float4*>(t.v + i) = v;
  if constexpr (kBf16) {
    uint2 y;
    y.x = bf16_rn_pair(p.x, p.y);
    y.y = bf16_rn_pair(p.z, p.w);
    *reinterpret_cast<uint2*>(t.bf + i) = y;
  }
}

// kBf16: also writes bf16(param) into t.bf where a tensor has one (a uniform branch per block).
// Chunks start at multiples of kChunk elements, so when a tensor's four f32 pointers are 16-byte
// aligned (and its bf16 copy 8-byte aligned) every chunk runs on float4 (the element arithmetic
// is the scalar path's: the results are bitwise the same); otherwise the scalar loop.
template <bool kBf16>
__global__ void adamw_many_kernel(const Entry* e, int64_t count, ew::AdamScalars c) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * kChunk, i1 = min(t.n, i0 + kChunk);
  const uintptr_t f32_bits = reinterpret_cast<uintptr_t>(t.a) | reinterpret_cast<uintptr_t>(t.g) |
                             reinterpret_cast<uintptr_t>(t.m) | reinterpret_cast<uintptr_t>(t.v);
  if ((f32_bits & 15u) == 0) {
    const bool bf = kBf16 && t.bf != nullptr;
    if (!bf || (reinterpret_cast<uintptr_t>(t.bf) & 7u) == 0) {
      const int64_t tail = i0 + (i1 - i0) / 4 * 4;
      for (int64_t i = i0 + 4 * threadIdx.x; i < tail; i += 4 * blockDim.x) {
        if (bf)
          adamw_vec4<true>(t, i, c);
        else
          adamw_vec4<false>(t, i, c);
      }
      for (int64_t i = tail + threadIdx.x; i < i1; i += blockDim.x) {
        ew::adamw_element(t.a, t.g, t.m, t.v, i, c);
        if (bf) t.bf[i] = uint16_t(bf16_rn_bits(t.a[i]));
      }
      return;
    }
  }
  if constexpr (kBf16) {
    if (t.bf != nullptr) {
      for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        ew::adamw_element(t.a, t.g, t.m, t.v, i, c);
        t.bf[i] =
            uint16_t(bf16_rn_bits(t.a[i]));  // this thread's own store: the f32 result, bit for bit
      }
      return;
    }
  }
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
    ew::adamw_element(t.a, t.g, t.m, t.v, i, c);
}

// dst = bf16(src) per chunk; 4 elements per load/store when both ends are aligned (chunks start at
// multiples of kChunk elements, so a tensor's alignment is every chunk's).
__global__ void f32_to_bf16_many_kernel(const Entry* e, int64_t count) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * kChunk, i1 = min(t.n, i0 + kChunk);
  int64_t tail = i0;
  if ((reinterpret_cast<uintptr_t>(t.a) & 15u) == 0 &&
      (reinterpret_cast<uintptr_t>(t.bf) & 7u) == 0) {
    const int64_t nv = (i1 - i0) / 4;
    const float4* src = reinterpret_cast<const float4*>(t.a + i0);
    uint2* dst = reinterpret_cast<uint2*>(t.bf + i0);
    for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) {
      const float4 x = src[j];
      uint2 y;
      y.x = bf16_rn_pair(x.x, x.y);
      y.y = bf16_rn_pair(x.z, x.w);
      dst[j] = y;
    }
    tail = i0 + nv * 4;
  }
  for (int64_t i = tail + threadIdx.x; i < i1; i += blockDim.x)
    t.bf[i] = uint16_t(bf16_rn_bits(t.a[i]));
}

// dst = src and, kBf16, bf = bf16(src) over [i0, i1): 4 elements per access when every pointer is
// aligned for it (as in the cast kernel, a tensor's alignment is each of its chunks').
template <bool kBf16>
__device__ __forceinline__ void copy_chunk(const float* src, float* dst, uint16_t* bf, int64_t i0,
                                           int64_t i1) {
  int64_t tail = i0;
  if ((reinterpret_cast<uintptr_t>(src) & 15u) == 0 &&
      (reinterpret_cast<uintptr_t>(dst) & 15u) == 0 &&
      (!kBf16 || (reinterpret_cast<uintptr_t>(bf) & 7u) == 0)) {
    const int64_t nv = (i1 - i0) / 4;
    const float4* s4 = reinterpret_cast<const float4*>(src + i0);
    float4* d4 = reinterpret_cast<float4*>(dst + i0);
    for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) {
      const float4 x = s4[j];
      d4[j] = x;
      if constexpr (kBf16) {
        uint2 y;
        y.x = bf16_rn_pair(x.x, x.y);
        y.y = bf16_rn_pair(x.z, x.w);
        reinterpret_cast<uint2*>(bf + i0)[j] = y;
      }
    }
    tail = i0 + nv * 4;
  }
  for (int64_t i = tail + threadIdx.x; i < i1; i += blockDim.x) {
    const float x = src[i];
    dst[i] = x;
    if constexpr (kBf16) bf[i] = uint16_t(bf16_rn_bits(x));
  }
}

// Per chunk: t.a = t.g, and the bf16 cast of the same values into t.bf where the tensor has one
// (a uniform branch per block).
__global__ void copy_many_kernel(const Entry* e, int64_t count) {
  const int64_t b = blockIdx.x;
  const Entry t = e[owner(e, count, b)];
  const int64_t i0 = (b - t.first) * kChunk, i1 = min(t.n, i0 + kChunk);
  if (t.bf != nullptr)
    copy_chunk<true>(t.g, t.a, t.bf, i0, i1);
  else
    copy_chunk<false>(t.g, t.a, nullptr, i0, i1);
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
    e[i] = {const_cast<float*>(a[i]), nullptr, nullptr, nullptr, nullptr, n[i], 0};
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
  for (int64_t i = 0; i < count; ++i) e[i] = {a[i], nullptr, nullptr, nullptr, nullptr, n[i], 0};
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  scale_many_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count, s);
  GYRE_CUDA_LAUNCHED("scale_many");
}

void adamw_many(float* const* param, const float* const* grad, float* const* m, float* const* v,
                const int64_t* n, int64_t count, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step, uint16_t* const* bf16, float grad_scale) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  bool any_bf16 = false;
  for (int64_t i = 0; i < count; ++i) {
    uint16_t* bf = bf16 && n[i] > 0 ? bf16[i] : nullptr;
    any_bf16 |= bf != nullptr;
    e[i] = {param[i], grad[i], m[i], v[i], bf, n[i], 0};
  }
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  const ew::AdamScalars c = ew::adam_scalars(lr, beta1, beta2, eps, weight_decay, step, grad_scale);
  if (any_bf16)
    adamw_many_kernel<true>
        <<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count, c);
  else
    adamw_many_kernel<false>
        <<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count, c);
  GYRE_CUDA_LAUNCHED("adamw_many");
}

void f32_to_bf16_many(const float* const* src, uint16_t* const* dst, const int64_t* n,
                      int64_t count) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    e[i] = {const_cast<float*>(src[i]), nullptr, nullptr, nullptr, dst[i], n[i], 0};
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  f32_to_bf16_many_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count);
  GYRE_CUDA_LAUNCHED("f32_to_bf16_many");
}

void copy_many(const float* const* src, float* const* dst, const int64_t* n, int64_t count,
               uint16_t* const* bf16) {
  if (count == 0) return;
  std::vector<Entry> e(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    uint16_t* bf = bf16 && n[i] > 0 ? bf16[i] : nullptr;
    e[i] = {dst[i], src[i], nullptr, nullptr, bf, n[i], 0};
  }
  const int64_t chunks = build_table(e, kChunk);
  if (chunks == 0) return;
  DeviceBuffer table(e.size() * sizeof(Entry));
  upload(e, table);
  copy_many_kernel<<<unsigned(chunks), kThreads, 0, stream()>>>(table.as<Entry>(), count);
  GYRE_CUDA_LAUNCHED("copy_many");
}

}  // namespace gyre::cuda
