// Token sampling on the GPU, one block per row, reproducing the CPU sampler's draw
// (infer/sampler.cc, path without top-k / top-p / penalties): greedy = first maximal logit;
// otherwise e_i = exp((w_i - max) / T), min_p keeps e_i >= min_p (p_i >= min_p · p_max), a uniform
// u from Philox4x32::draw(seed, 0, step)[0] (core/philox.h, the same function on host and device)
// and the first id (in id order) whose cumulative kept mass exceeds u · Σ kept.
//
// Invariants: the row is cut into kSegments contiguous id segments; a warp sums one segment at a
// time (lanes read consecutive ids: coalesced) in f64, and the segment sums are prefixed in segment
// order, then the target segment is scanned in id order 32 ids at a time (an f64 warp prefix sum).
// So the cumulative mass is the CPU's sequential sum up to f64 rounding of the grouping (~1e-16
// relative): the same seed picks the same token except when u lands within that rounding of a
// boundary. (Session 5: a thread-per-segment layout read the row with 256 strided streams and took
// 170 us per row at batch 1; notes/device_measurements.md.)
#include <cmath>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kSegments = 256;
constexpr float kGreedyTemperature = 1e-6f;  // infer/sampler.h: T < 1e-6 means greedy

// Kept mass of one id: e_i if kept (e >= min_e and e > 0), else 0.
__device__ __forceinline__ float kept_e(float x, float mx, float inv_t, float min_e) {
  const float e = expf((x - mx) * inv_t);
  return (e >= min_e && e > 0) ? e : 0.0f;
}

__global__ void sample_kernel(const float* logits, int64_t V, const float* temperature,
                              const uint64_t* seeds, const int64_t* steps, float min_p,
                              int32_t* out) {
  __shared__ float s_max[kThreads];
  __shared__ int64_t s_arg[kThreads];
  __shared__ double s_sum[kSegments];
  __shared__ int64_t s_last[kSegments];  // last kept id of each segment (-1: none)
  const int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // First maximal element (ties -> lower id; a NaN never beats, as the CPU's `>`), strided ids.
  float m = -INFINITY;
  int64_t arg = -1;
  for (int64_t i = tid; i < V; i += kThreads)
    if (arg < 0 || x[i] > m) m = x[i], arg = i;
  s_max[tid] = m;
  s_arg[tid] = arg;
  __syncthreads();
  if (tid == 0) {
    float bm = -INFINITY;
    int64_t ba = -1;
    for (int t = 0; t < kThreads; ++t) {
      const int64_t a = s_arg[t];
      if (a < 0) continue;
      if (ba < 0 || s_max[t] > bm || (s_max[t] == bm && a < ba)) bm = s_max[t], ba = a;
    }
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
  const int64_t seg_len = (V + kSegments - 1) / kSegments;
  for (int seg = warp; seg < kSegments; seg += kWarps) {
    const int64_t a = min(V, seg * seg_len), b = min(V, a + seg_len);
    double sum = 0;
    int64_t last = -1;
    for (int64_t i = a + lane; i < b; i += 32) {
      const float e = kept_e(x[i], mx, inv_t, min_e);
      if (e > 0) sum += e, last = i;
    }
    for (int off = 16; off > 0; off >>= 1) {
      sum += __shfl_xor_sync(0xffffffffu, sum, off);
      last = max(last, __shfl_xor_sync(0xffffffffu, last, off));
    }
    if (lane == 0) s_sum[seg] = sum, s_last[seg] = last;
  }
  __syncthreads();
  if (warp != 0) return;
  // Warp 0: total, target, the segment holding it, then the id inside it.
  double kept = 0;
  for (int t = 0; t < kSegments; ++t) kept += s_sum[t];
  uint32_t bits[4];
  Philox4x32::draw(seeds[row], 0, uint64_t(steps[row]), bits);
  const double target = double(Philox4x32::uniform(bits[0])) * kept;
  double acc = 0;
  int64_t last = -1;
  int seg = 0;
  for (; seg < kSegments; ++seg) {
    if (s_sum[seg] <= 0) continue;
    if (acc + s_sum[seg] > target) break;
    acc += s_sum[seg];
    last = s_last[seg];
  }
  if (seg < kSegments) {
    const int64_t a = min(V, seg * seg_len), b = min(V, a + seg_len);
    bool found = false;
    for (int64_t base = a; base < b && !found; base += 32) {
      const int64_t i = base + lane;
      const float e = i < b ? kept_e(x[i], mx, inv_t, min_e) : 0.0f;
      double inc = e;  // inclusive prefix over the 32 ids, in id order
      for (int off = 1; off < 32; off <<= 1) {
        const double up = __shfl_up_sync(0xffffffffu, inc, off);
        if (lane >= off) inc += up;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, e > 0 && acc + inc > target);
      const unsigned kept_mask = __ballot_sync(0xffffffffu, e > 0);
      if (hit) {
        last = base + __ffs(hit) - 1;
        found = true;
      } else {
        if (kept_mask) last = base + 31 - __clz(kept_mask);
        acc += __shfl_sync(0xffffffffu, inc, 31);
      }
    }
  }
  if (lane == 0) out[row] = int32_t(last >= 0 ? last : argmax);  // nothing kept: the raw argmax
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
