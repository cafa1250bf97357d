// CUDA-event timing for the GPU benchmarks (bench_cuda_ops, bench_paged_decode_gpu): every call
// is timed on the calling thread's stream (cuda::stream()) after warm-up runs.
//   median_ms(fn)   median of single timed calls (the L2 keeps whatever the previous call left);
//   time_call(fn)   cold = median of single calls, each after flush_l2(), and hot = mean of
//                   back-to-back calls, in microseconds.
//   wall_ms(), median(v)   host wall clock and the median of samples, for benchmarks whose timed
//                   region includes host work (the host sampler, AdamW's norm transfer).
// Include only in builds with the CUDA backend (GYRE_HAVE_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/tensor.h"

namespace gyre::bench {

// Two events on cuda::stream(), destroyed with the object.
class EventPair {
 public:
  EventPair() {
    GYRE_CUDA_CHECK(cudaEventCreate(&start_));
    GYRE_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  void start() { GYRE_CUDA_CHECK(cudaEventRecord(start_, cuda::stream())); }
  // Records the stop event, waits for it and returns the milliseconds since start().
  double stop_ms() {
    GYRE_CUDA_CHECK(cudaEventRecord(stop_, cuda::stream()));
    GYRE_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    GYRE_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Overwrites a 256 MiB device buffer on cuda::stream(), evicting the H200's 60 MB L2 (as a model
// step's other layers would). `salt` varies the byte written.
inline void flush_l2(int salt) {
  // Never freed: a static tensor would return its memory after the CUDA runtime is torn down.
  static Tensor* flush = new Tensor(Tensor::empty({int64_t(64) << 20}, DType::f32, Device::cuda));
  GYRE_CUDA_CHECK(cudaMemsetAsync(flush->raw(), salt & 0xFF, flush->nbytes(), cuda::stream()));
}

// Median milliseconds of fn over `reps` single timed calls after `warm` warm-ups.
inline double median_ms(const std::function<void()>& fn, int warm = 3, int reps = 10) {
  for (int i = 0; i < warm; ++i) fn();
  EventPair ev;
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    ev.start();
    fn();
    t.push_back(ev.stop_ms());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Host wall clock in milliseconds (steady_clock; differences only).
inline double wall_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Median of a non-empty sample (the upper median for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double cold_us = 0, hot_us = 0;
};

// cold_us: median of `reps` single calls, each after flush_l2(); hot_us: mean of `reps`
// back-to-back calls. 3 warm-up calls first.
inline Timing time_call(const std::function<void()>& fn, int reps) {
  for (int i = 0; i < 3; ++i) fn();
  EventPair ev;
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    flush_l2(i);
    ev.start();
    fn();
    t.push_back(ev.stop_ms() * 1e3);
  }
  std::sort(t.begin(), t.end());
  Timing out;
  out.cold_us = t[t.size() / 2];
  ev.start();
  for (int i = 0; i < reps; ++i) fn();
  out.hot_us = ev.stop_ms() * 1e3 / reps;
  return out;
}

}  // namespace gyre::bench
