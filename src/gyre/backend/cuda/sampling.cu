// Token sampling on the GPU, one block per row, reproducing the CPU sampler's draw
// (infer/sampler.cc, path without top-k / top-p / penalties): greedy = first maximal logit;
// otherwise e_i = exp((w_i - max) / T), min_p keeps e_i >= min_p (p_i >= min_p · p_max), a uniform
// u from Philox4x32::draw(seed, 0, step)[0] (core/philox.h, the same function on host and device)
// and the first id (in id order) whose cumulative kept mass exceeds u · Σ kept.
//
// Invariants: each thread owns a contiguous id range and sums it in id order (f64); the range sums
// are prefixed in thread order, so the cumulative mass is the CPU's up to f64 rounding of the
// grouping (~1e-16 relative): the same seed picks the same token except when u lands within that
// rounding of a boundary.
#include <cmath>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kGreedyTemperature = 1e-6f;  // infer/sampler.h: T < 1e-6 means greedy

__global__ void sample_kernel(const float* logits, int64_t V, const float* temperature,
                              const uint64_t* seeds, const int64_t* steps, float min_p,
                              int32_t* out) {
  __shared__ float s_max[kThreads];
  __shared__ int64_t s_arg[kThreads];
  __shared__ double s_sum[kThreads];
  const int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  const int tid = threadIdx.x;
  const int64_t chunk = (V + kThreads - 1) / kThreads;
  const int64_t i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
  // First maximal element of the thread's range, then of the block (ties -> lower id).
  float m = -INFINITY;
  int64_t arg = -1;
  for (int64_t i = i0; i < i1; ++i)
    if (arg < 0 || x[i] > m) m = x[i], arg = i;
  s_max[tid] = m;
  s_arg[tid] = arg;
  __syncthreads();
  if (tid == 0) {
    float bm = -INFINITY;
    int64_t ba = -1;
    for (int t = 0; t < kThreads; ++t)
      if (s_arg[t] >= 0 && (ba < 0 || s_max[t] > bm)) bm = s_max[t], ba = s_arg[t];
    s_max[0] = bm;
    s_arg[0] = ba;
  }
  __syncthreads();
  const float mx = s_max[0];
  const int64_t argmax = s_arg[0];
  const float temp = temperature[row];
  if (temp < kGreedyTemperature) {
    if (tid == 0) out[row] = int32_t(argmax);
    return;
  }
  const float inv_t = 1.0f / temp;
  const float min_e = min_p > 0 ? min_p : 0.0f;
  double sum = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const float e = expf((x[i] - mx) * inv_t);
    if (e >= min_e) sum += e;
  }
  s_sum[tid] = sum;
  __syncthreads();
  if (tid != 0) return;
  double kept = 0;
  for (int t = 0; t < kThreads; ++t) kept += s_sum[t];
  uint32_t bits[4];
  Philox4x32::draw(seeds[row], 0, uint64_t(steps[row]), bits);
  const double target = double(Philox4x32::uniform(bits[0])) * kept;
  // The range holding the target, then the id inside it (CPU: first id with acc > target).
  double acc = 0;
  int64_t last = -1;
  for (int t = 0; t < kThreads; ++t) {
    if (s_sum[t] <= 0) continue;
    const int64_t a = min(V, t * chunk), b = min(V, a + chunk);
    if (acc + s_sum[t] <= target) {  // skip the whole range, remembering its last kept id
      for (int64_t i = b - 1; i >= a; --i) {
        const float e = expf((x[i] - mx) * inv_t);
        if (e >= min_e && e > 0) {
          last = i;
          break;
        }
      }
      acc += s_sum[t];
      continue;
    }
    for (int64_t i = a; i < b; ++i) {
      const float e = expf((x[i] - mx) * inv_t);
      if (e < min_e || e <= 0) continue;
      last = i;
      acc += e;
      if (acc > target) break;
    }
    break;
  }
  out[row] = int32_t(last >= 0 ? last : argmax);  // nothing kept: the raw argmax, as the CPU
}

}  // namespace

void sample_rows(const float* logits, int64_t n, int64_t V, const float* temperature,
                 const uint64_t* seeds, const int64_t* steps, float min_p, int32_t* out_tokens) {
  if (n == 0) return;
  sample_kernel<<<unsigned(n), kThreads, 0, stream()>>>(logits, V, temperature, seeds, steps, min_p,
                                                        out_tokens);
  GYRE_CUDA_LAUNCHED("sample_rows");
}

}  // namespace gyre::cuda
