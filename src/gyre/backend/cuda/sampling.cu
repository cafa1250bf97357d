// Token sampling on the GPU, reproducing the CPU sampler's draw (infer/sampler.cc, path without
// top-k / top-p / penalties): greedy = first maximal logit; otherwise e_i = exp((w_i - max) / T),
// min_p keeps e_i >= min_p (p_i >= min_p · p_max), a uniform u from Philox4x32::draw(seed, 0,
// step)[0] (core/philox.h, the same function on host and device) and the first id (in id order)
// whose cumulative kept mass exceeds u · Σ kept.
//
// Three launches per call, many blocks per row (session 7: the former one-block-per-row kernel took
// 117 us per row at V = 151,936 — one SM cannot pull 600 KB three times fast; an ncu profile of the
// batch-1 decode step showed it as the third-largest item):
//   1. max_kernel      grid (rows, max_blocks(V)): the (max, first argmax) of a contiguous id
//   range;
//   2. segments_kernel grid (rows, kSegments / kWarps): every block folds the partial maxima into
//                      the row max (same order in every block), then each warp sums one of the
//                      row's kSegments contiguous id segments (lanes read consecutive ids) in f64;
//   3. pick_kernel     one warp per row: the total (segment sums added in segment order), the
//                      target segment, then the id inside it by an f64 warp prefix over 32 ids at
//                      a time.
// The segment layout and every f64 sum are exactly those of the former one-block kernel, so the
// draw is unchanged; the cumulative mass is the CPU's sequential sum up to f64 rounding of the
// grouping (~1e-16 relative): the same seed picks the same token except when u lands within that
// rounding of a boundary.
//
// NaN: as the CPU's loop `if (w[i] > w[best])` with best starting at 0 — a NaN at id 0 is never
// beaten (the answer is 0), a NaN elsewhere never wins.
#include <cmath>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kSegments = 256;
constexpr int kMaxBlocksCap = 64;  // partial maxima per row
constexpr int64_t kIdsPerMaxBlock = 2048;
constexpr int kScanBatch = 20;  // pick_kernel: 32-id rows loaded at once (20 · 32 >= 151,936 / 256)
constexpr float kGreedyTemperature = 1e-6f;  // infer/sampler.h: T < 1e-6 means greedy

int max_blocks(int64_t V) {
  const int64_t b = (V + kIdsPerMaxBlock - 1) / kIdsPerMaxBlock;
  return int(b < 1 ? 1 : (b > kMaxBlocksCap ? kMaxBlocksCap : b));
}

// Kept mass of one id: e_i if kept (e >= min_e and e > 0), else 0.
__device__ __forceinline__ float kept_e(float x, float mx, float inv_t, float min_e) {
  const float e = expf((x - mx) * inv_t);
  return (e >= min_e && e > 0) ? e : 0.0f;
}

// (m, a) beats (bm, ba): larger value, ties -> lower id; a < 0 means "no candidate".
__device__ __forceinline__ bool better(float m, int64_t a, float bm, int64_t ba) {
  if (a < 0) return false;
  if (ba < 0) return true;
  return m > bm || (m == bm && a < ba);
}

// Row max and first argmax from the nb partials of max_kernel, by one warp: lane l folds partials
// l, l + 32, ..., then a butterfly. `better` is a strict total order on (value, id) candidates
// (larger value, then lower id; NaN never enters, see row_argmax), so the result does not depend
// on the folding order. Every lane gets it.
__device__ __forceinline__ void fold_partials(const float* pmax, const int64_t* parg, int nb,
                                              int lane, float* m, int64_t* a) {
  float bm = -INFINITY;
  int64_t ba = -1;
  for (int b = lane; b < nb; b += 32)
    if (better(pmax[b], parg[b], bm, ba)) bm = pmax[b], ba = parg[b];
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, bm, off);
    const int64_t oa = __shfl_xor_sync(0xffffffffu, ba, off);
    if (better(om, oa, bm, ba)) bm = om, ba = oa;
  }
  *m = bm;
  *a = ba;
}

__global__ void max_kernel(const float* logits, int64_t V, float* pmax, int64_t* parg) {
  __shared__ float s_max[kThreads];
  __shared__ int64_t s_arg[kThreads];
  const int64_t row = blockIdx.x;
  const int nb = gridDim.y, part = blockIdx.y;
  const float* x = logits + row * V;
  const int64_t per = (V + nb - 1) / nb;
  const int64_t a = min(V, int64_t(part) * per), b = min(V, a + per);
  const int tid = threadIdx.x;
  float m = -INFINITY;
  int64_t arg = -1;
  // Each thread's ids ascend, so `>` keeps its first maximal id; NaN never passes `>` (nor the
  // "no candidate yet" test below unless it is id 0, handled after the reduction).
  for (int64_t i = a + tid; i < b; i += kThreads) {
    const float v = x[i];
    if (!isnan(v) && (arg < 0 || v > m)) m = v, arg = i;
  }
  s_max[tid] = m;
  s_arg[tid] = arg;
  __syncthreads();
  for (int off = kThreads / 2; off > 0; off >>= 1) {
    if (tid < off && better(s_max[tid + off], s_arg[tid + off], s_max[tid], s_arg[tid]))
      s_max[tid] = s_max[tid + off], s_arg[tid] = s_arg[tid + off];
    __syncthreads();
  }
  if (tid == 0) {
    float bm = s_max[0];
    int64_t ba = s_arg[0];
    if (part == 0 && V > 0 && isnan(x[0])) bm = NAN, ba = 0;  // the CPU never moves off 0
    pmax[row * nb + part] = bm;
    parg[row * nb + part] = ba;
  }
}

// The row's argmax (one full warp calls it): id 0 when x[0] is NaN (partial 0 says so), else the
// best partial.
__device__ __forceinline__ void row_argmax(const float* pmax, const int64_t* parg, int nb, int lane,
                                           float* m, int64_t* a) {
  if (parg[0] == 0 && isnan(pmax[0])) {
    *m = NAN;
    *a = 0;
    return;
  }
  fold_partials(pmax, parg, nb, lane, m, a);
  if (*a < 0) *a = 0;  // no candidate at all cannot happen (V > 0 and x[0] is not NaN)
}

__global__ void segments_kernel(const float* logits, int64_t V, const float* temperature,
                                const float* pmax, const int64_t* parg, int nb, float min_p,
                                double* seg_sum, int64_t* seg_last) {
  __shared__ float s_mx;
  const int64_t row = blockIdx.x;
  if (temperature[row] < kGreedyTemperature) return;
  if (threadIdx.x < 32) {
    float m;
    int64_t a;
    row_argmax(pmax + row * nb, parg + row * nb, nb, int(threadIdx.x), &m, &a);
    if (threadIdx.x == 0) s_mx = m;
  }
  __syncthreads();
  const float mx = s_mx;
  const float* x = logits + row * V;
  const float inv_t = 1.0f / temperature[row];
  const float min_e = min_p > 0 ? min_p : 0.0f;
  const int lane = threadIdx.x & 31;
  const int seg = blockIdx.y * kWarps + (threadIdx.x >> 5);
  const int64_t seg_len = (V + kSegments - 1) / kSegments;
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
  if (lane == 0) seg_sum[row * kSegments + seg] = sum, seg_last[row * kSegments + seg] = last;
}

// One warp per row.
__global__ void pick_kernel(const float* logits, int64_t V, const float* temperature,
                            const uint64_t* seeds, const int64_t* steps, const float* pmax,
                            const int64_t* parg, int nb, float min_p, const double* seg_sums,
                            const int64_t* seg_lasts, int32_t* out) {
  __shared__ double s_sum[kSegments];
  __shared__ int64_t s_last[kSegments];
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x;
  float mx;
  int64_t argmax;
  row_argmax(pmax + row * nb, parg + row * nb, nb, lane, &mx, &argmax);
  const float temp = temperature[row];
  if (temp < kGreedyTemperature) {
    if (lane == 0) out[row] = int32_t(argmax);
    return;
  }
  const float* x = logits + row * V;
  // The segment sums into shared memory first (coalesced): the scans below read them one by one,
  // and 256 dependent global loads cost ~40 us (session 7 profile).
  for (int t = lane; t < kSegments; t += 32) {
    s_sum[t] = seg_sums[row * kSegments + t];
    s_last[t] = seg_lasts[row * kSegments + t];
  }
  __syncwarp();
  const float inv_t = 1.0f / temp;
  const float min_e = min_p > 0 ? min_p : 0.0f;
  const int64_t seg_len = (V + kSegments - 1) / kSegments;
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
    // The segment's logits are loaded kScanBatch 32-id rows at a time, all loads issued before the
    // scan uses them: the scan below is serial (it stops at the hit), and with one load per step
    // each step waited a full L2/HBM latency (~19 dependent loads per segment at V = 151,936).
    // Same values, same arithmetic and order as a load per step: the draw is unchanged.
    for (int64_t base0 = a; base0 < b && !found; base0 += 32 * kScanBatch) {
      float xs[kScanBatch];
#pragma unroll
      for (int j = 0; j < kScanBatch; ++j) {
        const int64_t i = base0 + 32 * j + lane;
        xs[j] = i < b ? x[i] : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < kScanBatch; ++j) {
        const int64_t base = base0 + 32 * j;
        if (found || base >= b) break;  // warp-uniform: every lane sees the same found and base
        const int64_t i = base + lane;
        const float e = i < b ? kept_e(xs[j], mx, inv_t, min_e) : 0.0f;
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
  }
  if (lane == 0) out[row] = int32_t(last >= 0 ? last : argmax);  // nothing kept: the raw argmax
}

}  // namespace

void sample_rows(const float* logits, int64_t n, int64_t V, const float* temperature,
                 const uint64_t* seeds, const int64_t* steps, float min_p, int32_t* out_tokens) {
  if (n == 0) return;
  const int nb = max_blocks(V);
  // Stream-ordered pool scratch (a graph-private pool under capture): partial maxima, then the
  // segment sums and last kept ids.
  const size_t max_bytes = size_t(n) * nb * (sizeof(float) + sizeof(int64_t));
  const size_t seg_bytes = size_t(n) * kSegments * (sizeof(double) + sizeof(int64_t));
  DeviceBuffer scratch(max_bytes + seg_bytes);
  char* base = scratch.as<char>();
  auto* seg_sum = reinterpret_cast<double*>(base);
  auto* seg_last = reinterpret_cast<int64_t*>(base + size_t(n) * kSegments * sizeof(double));
  auto* parg = reinterpret_cast<int64_t*>(base + seg_bytes);
  auto* pmax = reinterpret_cast<float*>(base + seg_bytes + size_t(n) * nb * sizeof(int64_t));
  max_kernel<<<dim3(unsigned(n), unsigned(nb)), kThreads, 0, stream()>>>(logits, V, pmax, parg);
  GYRE_CUDA_LAUNCHED("sample_rows (max)");
  segments_kernel<<<dim3(unsigned(n), kSegments / kWarps), kThreads, 0, stream()>>>(
      logits, V, temperature, pmax, parg, nb, min_p, seg_sum, seg_last);
  GYRE_CUDA_LAUNCHED("sample_rows (segments)");
  pick_kernel<<<unsigned(n), 32, 0, stream()>>>(logits, V, temperature, seeds, steps, pmax, parg,
                                                nb, min_p, seg_sum, seg_last, out_tokens);
  GYRE_CUDA_LAUNCHED("sample_rows (pick)");
}

}  // namespace gyre::cuda
