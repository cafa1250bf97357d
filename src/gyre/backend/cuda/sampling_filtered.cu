// Top-k / top-p / min-p sampling on the GPU without sorting the vocabulary (sampling_filtered.h),
// reproducing infer::Sampler's stochastic branch (infer/sampler.cc) token for token.
//
// The CPU orders the row by e_i = exp((w_i - max) / T) descending (ties -> lower id), keeps the
// prefix whose exclusive cumulative mass cum (f64, in that order) stays <= top_p · total, with
// e >= min_p and e > 0, at most top_k entries, and returns the first kept id whose inclusive f64
// accumulation exceeds u · cum. Per row (one block of kThreads):
//   1. max (first maximal id: greedy and the fallback), total = Σ e (f64);
//   2. a cut value c from radix selects over the float bits of e (e >= 0, so the bits order like
//      the values): the k-th largest e for top-k, and for top-p the largest c whose mass
//      Σ_{e >= c} e exceeds top_p · total (+ a 1e-9 · total margin, which dominates the f64
//      rounding of the grouped histogram sums, so the true mass of {e >= c} exceeds the limit too);
//      min_p raises c to min_p. Every kept element lies in {e >= c}: an element below c comes after
//      all of {e >= c} in the CPU's order, so its exclusive mass already exceeds the top-p limit
//      (or it ranks >= k, or it fails min_p). Ties at c are taken lowest ids first (an id-ordered
//      compaction), as many as top-k allows, which is exactly the CPU's tie order;
//   3. the candidates are sorted by the 64-bit key (bits(e) << 32 | ~id) descending = e desc, id
//      asc (shared-memory bitonic sort, or CUB radix sort in global memory for large sets), so
//      their order is the CPU's order restricted to them; one thread then repeats the CPU's two
//      loops over them with the same f64 accumulations in the same order, so cum, target and acc
//      are the CPU's bit for bit and the decisions match.
// The only grouped (non-CPU-order) sum is total, which enters only as the top-p limit: the token
// can differ only when cum lands within ~1e-16 relative of top_p · total. e uses the same expf as
// sample_rows (sampling.cu), whose agreement with the CPU sampler tests/gpu/infer checks.
#include <cub/cub.cuh>

#include "gyre/backend/cuda/device_util.cuh"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/cuda/sampling_filtered.h"
#include "gyre/core/philox.h"

namespace gyre::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr float kGreedyTemperature = 1e-6f;  // infer/sampler.h: T < 1e-6 means greedy
constexpr int kBins = 2048;                  // radix digits of 11, 11 and 10 bits
static_assert(kFilteredBlockCandidates >= kBins, "the histogram aliases the candidate buffer");
static_assert((kFilteredBlockCandidates & (kFilteredBlockCandidates - 1)) == 0, "power of two");

__device__ __forceinline__ float row_e(float x, float mx, float inv_t) {
  return expf((x - mx) * inv_t);  // as sample_rows and the CPU: exp((w - max) * (1 / T))
}
// Descending key order = e descending, then id ascending (the CPU comparator).
__device__ __forceinline__ uint64_t make_key(float e, int64_t id) {
  return (uint64_t(__float_as_uint(e)) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(id));
}
__device__ __forceinline__ float key_e(uint64_t k) { return __uint_as_float(uint32_t(k >> 32)); }
__device__ __forceinline__ int32_t key_id(uint64_t k) {
  return int32_t(0xFFFFFFFFu - uint32_t(k & 0xFFFFFFFFu));
}

// The largest float-bit pattern c with F(c) = Σ_{e >= c} weight > T over the row (weight e when
// `mass`, else 1), or 0 when no c qualifies. Three histogram passes over the bits (31..21, 20..10,
// 9..0); hist is kBins doubles of shared memory. A pass whose bins never cross T (f64 rounding of
// the mass sums only) stops with the low bits 0: a smaller c, hence a larger (still correct)
// candidate set.
__device__ uint32_t radix_select(const float* x, int64_t V, float mx, float inv_t, bool mass,
                                 double T, double* hist) {
  __shared__ uint32_t s_bin;
  __shared__ double s_above;
  __shared__ int s_found;
  uint32_t prefix = 0, mask = 0;
  double above = 0;  // weight of the elements above the current prefix's range
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : (pass == 1 ? 10 : 0);
    const int nb = pass == 2 ? 1024 : 2048;
    for (int b = threadIdx.x; b < nb; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const float e = row_e(x[i], mx, inv_t);
      const uint32_t bits = __float_as_uint(e);
      if ((bits & mask) != prefix) continue;
      atomicAdd(&hist[(bits >> shift) & uint32_t(nb - 1)], mass ? double(e) : 1.0);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns nb/32 consecutive bins, highest first; a warp scan finds the lane where the
      // running weight (from the top) first exceeds T, which then scans its own bins.
      const int lane = threadIdx.x, per = nb / 32, hi = nb - 1 - lane * per;
      double s = 0;
      for (int j = 0; j < per; ++j) s += hist[hi - j];
      double incl = s;
      for (int o = 1; o < 32; o <<= 1) {
        const double v = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += v;
      }
      double excl = __shfl_up_sync(kFull, incl, 1);
      if (lane == 0) excl = 0;
      const unsigned crossing = __ballot_sync(kFull, above + incl > T);
      if (crossing == 0) {
        if (lane == 0) s_found = 0;
      } else if (lane == __ffs(crossing) - 1) {
        double acc = above + excl;
        for (int j = 0; j < per; ++j) {
          const double h = hist[hi - j];
          if (acc + h > T || j == per - 1) {  // the last bin if rounding hid the crossing
            s_bin = uint32_t(hi - j);
            s_above = acc;
            break;
          }
          acc += h;
        }
        s_found = 1;
      }
    }
    __syncthreads();
    const bool found = s_found != 0;
    const uint32_t bin = s_bin;
    const double new_above = s_above;
    __syncthreads();  // everyone has read the results before the next pass rewrites them
    if (!found) return pass == 0 ? 0u : prefix;
    prefix |= bin << shift;
    mask |= uint32_t(nb - 1) << shift;
    above = new_above;
  }
  return prefix;
}

// The CPU's two loops (sampler.cc, top-k/top-p branch) over candidates already in its order.
// Returns -1 when nothing is kept.
__device__ int32_t walk_sorted(const uint64_t* keys, int64_t n, int64_t limit, bool top_p_on,
                               double mass_limit, float min_e, double u) {
  double cum = 0;  // exclusive cumulative mass, accumulated in the CPU's order
  int64_t keep = 0;
  for (int64_t i = 0; i < n && i < limit; ++i) {
    const float p = key_e(keys[i]);
    if ((top_p_on && cum > mass_limit) || p < min_e || p <= 0) break;
    cum += p;
    keep = i + 1;
  }
  if (keep == 0) return -1;
  const double target = u * cum;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += key_e(keys[i]);
    if (acc > target) return key_id(keys[i]);
  }
  return key_id(keys[keep - 1]);
}

// Writes the candidates {e > cut} (any order, slots [0, n_gt)) and the first take_eq ids with
// e == cut in id order (slots n_gt ..) to keys. One block; `counter` is a shared int zeroed here.
__device__ void compact_candidates(const float* x, int64_t V, float mx, float inv_t, uint32_t cut,
                                   int64_t n_gt, int64_t take_eq, uint64_t* keys,
                                   unsigned long long* counter, int* warp_counts) {
  if (threadIdx.x == 0) *counter = 0;
  __syncthreads();
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int64_t eq_base = 0;  // ties seen in earlier tiles (same value in every thread)
  for (int64_t base = 0; base < V; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    float e = 0;
    uint32_t bits = 0;
    if (i < V) {
      e = row_e(x[i], mx, inv_t);
      bits = __float_as_uint(e);
      if (bits > cut) keys[atomicAdd(counter, 1ull)] = make_key(e, i);
    }
    const bool eq = i < V && bits == cut;
    const unsigned bal = __ballot_sync(kFull, eq);
    if (lane == 0) warp_counts[w] = __popc(bal);
    __syncthreads();
    int64_t before = 0, tile = 0;
    for (int j = 0; j < kWarps; ++j) {
      if (j < w) before += warp_counts[j];
      tile += warp_counts[j];
    }
    if (eq) {
      const int64_t rank = eq_base + before + __popc(bal & ((1u << lane) - 1u));
      if (rank < take_eq) keys[n_gt + rank] = make_key(e, i);
    }
    eq_base += tile;
    __syncthreads();
  }
}

__global__ void __launch_bounds__(kThreads)
    filtered_kernel(const float* logits, int64_t V, const float* temperature, const int32_t* top_k,
                    const float* top_p, const uint64_t* seeds, const int64_t* steps, float min_p,
                    int32_t* out, FilteredRowInfo* info) {
  __shared__ uint64_t s_buf[kFilteredBlockCandidates];  // histogram, range sums or candidates
  __shared__ float s_wmax[kWarps];
  __shared__ int64_t s_warg[kWarps];
  __shared__ int s_wcount[kWarps];
  __shared__ unsigned long long s_counter;
  const int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  const int tid = threadIdx.x, lane = tid & 31;

  // 1. The first maximal logit (strided ids rise per thread; ties -> lower id when combining).
  float m = -INFINITY;
  int64_t arg = -1;
  for (int64_t i = tid; i < V; i += kThreads)
    if (arg < 0 || x[i] > m) m = x[i], arg = i;
  auto better = [](float am, int64_t aa, float bm, int64_t ba) {
    return ba >= 0 && (aa < 0 || bm > am || (bm == am && ba < aa));
  };
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_down_sync(kFull, m, o);
    const int64_t oa = __shfl_down_sync(kFull, arg, o);
    if (better(m, arg, om, oa)) m = om, arg = oa;
  }
  if (lane == 0) s_wmax[tid >> 5] = m, s_warg[tid >> 5] = arg;
  __syncthreads();
  m = s_wmax[0], arg = s_warg[0];
  for (int w = 1; w < kWarps; ++w)
    if (better(m, arg, s_wmax[w], s_warg[w])) m = s_wmax[w], arg = s_warg[w];
  const float mx = m;
  const int64_t argmax = arg;

  const float temp = temperature[row];
  const int32_t k = top_k[row];
  if (temp < kGreedyTemperature || k == 1) {  // the CPU's greedy condition
    if (tid == 0) out[row] = int32_t(argmax), info[row].n_cand = 0;
    return;
  }
  const float inv_t = 1.0f / temp;
  const float min_e = min_p > 0 ? min_p : 0.0f;
  const bool top_k_on = k > 0 && k < V;
  const float tp = top_p[row];
  const bool top_p_on = tp < 1.0f;
  uint32_t bits4[4];
  Philox4x32::draw(seeds[row], 0, uint64_t(steps[row]), bits4);
  const double u = double(Philox4x32::uniform(bits4[0]));

  if (!top_k_on && !top_p_on) {
    // The CPU's id-order walk (as sample_rows): contiguous per-thread ranges summed in id order,
    // then thread 0 finds the range holding the target and walks it.
    double* s_sum = reinterpret_cast<double*>(s_buf);
    const int64_t chunk = (V + kThreads - 1) / kThreads;
    const int64_t i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
    double sum = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const float e = row_e(x[i], mx, inv_t);
      if (e >= min_e) sum += e;
    }
    s_sum[tid] = sum;
    __syncthreads();
    if (tid != 0) return;
    double kept = 0;
    for (int t = 0; t < kThreads; ++t) kept += s_sum[t];
    const double target = u * kept;
    double acc = 0;
    int64_t last = -1;
    for (int t = 0; t < kThreads; ++t) {
      const int64_t a = min(V, t * chunk), b = min(V, a + chunk);
      const bool skip = acc + s_sum[t] <= target;
      for (int64_t i = a; i < b; ++i) {
        const float e = row_e(x[i], mx, inv_t);
        if (e < min_e || e <= 0) continue;
        last = i;
        if (skip) continue;  // only the range's last kept id matters
        acc += e;
        if (acc > target) break;
      }
      if (!skip) break;
      acc += s_sum[t];
    }
    out[row] = int32_t(last >= 0 ? last : argmax);
    info[row].n_cand = 0;
    return;
  }

  // 2. total and the cut value.
  double part = 0;
  for (int64_t i = tid; i < V; i += kThreads) part += row_e(x[i], mx, inv_t);
  const double total = block_sum(part);
  double* hist = reinterpret_cast<double*>(s_buf);
  uint32_t cut = 1u;  // the smallest positive float: e = 0 is never kept
  if (min_e > 0) cut = max(cut, __float_as_uint(min_e));
  if (top_k_on) cut = max(cut, radix_select(x, V, mx, inv_t, false, double(k) - 0.5, hist));
  const double mass_limit = double(tp) * total;  // the CPU's limit (f64 product)
  if (top_p_on)
    cut = max(cut, radix_select(x, V, mx, inv_t, true, mass_limit + 1e-9 * total, hist));

  // Candidates: e > cut, plus ties at cut up to the top-k limit (c >= the k-th largest e, so
  // fewer than k elements exceed it).
  double gt = 0, eq = 0;
  for (int64_t i = tid; i < V; i += kThreads) {
    const uint32_t b = __float_as_uint(row_e(x[i], mx, inv_t));
    gt += b > cut ? 1.0 : 0.0;
    eq += b == cut ? 1.0 : 0.0;
  }
  const int64_t n_gt = int64_t(block_sum(gt));
  const int64_t n_eq = int64_t(block_sum(eq));
  const int64_t take_eq = top_k_on ? min(n_eq, int64_t(k) - n_gt) : n_eq;
  const int64_t n_cand = n_gt + take_eq;
  if (n_cand > kFilteredBlockCandidates) {  // the global-memory path finishes this row
    if (tid == 0) {
      FilteredRowInfo& r = info[row];
      r.n_cand = n_cand;
      r.cut = cut;
      r.mx = __float_as_uint(mx);
      r.take_eq = take_eq;
      r.total = total;
      r.u = u;
      r.inv_t = inv_t;
    }
    return;
  }
  __syncthreads();  // the histogram is dead; s_buf now holds candidate keys
  compact_candidates(x, V, mx, inv_t, cut, n_gt, take_eq, s_buf, &s_counter, s_wcount);
  int64_t n2 = 1;
  while (n2 < n_cand) n2 <<= 1;
  for (int64_t i = n_cand + tid; i < n2; i += kThreads) s_buf[i] = 0;  // pads sort last
  __syncthreads();
  // 3. Bitonic sort, descending overall.
  for (int64_t len = 2; len <= n2; len <<= 1)
    for (int64_t j = len >> 1; j > 0; j >>= 1) {
      for (int64_t i = tid; i < n2; i += kThreads) {
        const int64_t p = i ^ j;
        if (p > i) {
          const uint64_t a = s_buf[i], b = s_buf[p];
          const bool desc = (i & len) == 0;
          if (desc ? a < b : a > b) s_buf[i] = b, s_buf[p] = a;
        }
      }
      __syncthreads();
    }
  if (tid == 0) {
    const int32_t tok =
        walk_sorted(s_buf, n_cand, top_k_on ? int64_t(k) : V, top_p_on, mass_limit, min_e, u);
    out[row] = tok >= 0 ? tok : int32_t(argmax);  // nothing kept: the raw argmax, as the CPU
    info[row].n_cand = 0;
  }
}

// The global-memory path, one block per left-over row: block b compacts row rows[b]'s candidates
// into keys[offsets[b] ..].
__global__ void __launch_bounds__(kThreads)
    large_compact_kernel(const float* logits, int64_t V, const FilteredRowInfo* info,
                         const int32_t* rows, const int32_t* offsets, uint64_t* keys) {
  __shared__ unsigned long long s_counter;
  __shared__ int s_wcount[kWarps];
  const int64_t row = rows[blockIdx.x];
  const FilteredRowInfo r = info[row];
  const int64_t n_gt = r.n_cand - r.take_eq;
  compact_candidates(logits + row * V, V, __uint_as_float(r.mx), r.inv_t, r.cut, n_gt, r.take_eq,
                     keys + offsets[blockIdx.x], &s_counter, s_wcount);
}

// One thread per left-over row walks its sorted segment (rows walk in parallel across blocks).
__global__ void large_walk_kernel(const uint64_t* sorted, const int32_t* rows,
                                  const int32_t* offsets, int64_t V, const int32_t* top_k,
                                  const float* top_p, float min_p, const FilteredRowInfo* info,
                                  const float* logits, int32_t* out) {
  const int64_t row = rows[blockIdx.x];
  const FilteredRowInfo r = info[row];
  const int32_t k = top_k[row];
  const bool top_k_on = k > 0 && k < V;
  const float tp = top_p[row];
  const int32_t tok = walk_sorted(sorted + offsets[blockIdx.x], r.n_cand, top_k_on ? int64_t(k) : V,
                                  tp<1.0f, double(tp) * r.total, min_p> 0 ? min_p : 0.0f, r.u);
  if (tok >= 0) {
    out[row] = tok;
    return;
  }
  const float* x = logits + row * V;  // nothing kept: the first maximal logit
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (x[i] > x[best]) best = i;
  out[row] = int32_t(best);
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

size_t cub_sort_bytes(int64_t total, int64_t n_rows, const int32_t* offsets) {
  size_t bytes = 0;
  GYRE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
      nullptr, bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      int(total), int(n_rows), offsets, offsets + 1, 0, 64, stream()));
  return bytes;
}

}  // namespace

void sample_filtered_rows(const float* logits, int64_t n, int64_t V, const float* temperature,
                          const int32_t* top_k, const float* top_p, const uint64_t* seeds,
                          const int64_t* steps, float min_p, int32_t* out_tokens,
                          FilteredRowInfo* info) {
  if (n == 0) return;
  filtered_kernel<<<unsigned(n), kThreads, 0, stream()>>>(logits, V, temperature, top_k, top_p,
                                                          seeds, steps, min_p, out_tokens, info);
  GYRE_CUDA_LAUNCHED("sample_filtered_rows");
}

size_t sample_filtered_large_workspace_bytes(int64_t total, int64_t n_rows,
                                             const int32_t* offsets) {
  return 2 * align256(size_t(total) * sizeof(uint64_t)) + cub_sort_bytes(total, n_rows, offsets);
}

void sample_filtered_large_rows(const float* logits, int64_t V, const int32_t* top_k,
                                const float* top_p, float min_p, const FilteredRowInfo* info,
                                const int32_t* rows, const int32_t* offsets, int64_t n_rows,
                                int64_t total, void* workspace, size_t workspace_bytes,
                                int32_t* out_tokens) {
  if (n_rows == 0) return;
  const size_t key_bytes = align256(size_t(total) * sizeof(uint64_t));
  auto* keys_in = static_cast<uint64_t*>(workspace);
  auto* keys_out = reinterpret_cast<uint64_t*>(static_cast<char*>(workspace) + key_bytes);
  void* temp = static_cast<char*>(workspace) + 2 * key_bytes;
  size_t temp_bytes = workspace_bytes - 2 * key_bytes;  // sized by the workspace query
  large_compact_kernel<<<unsigned(n_rows), kThreads, 0, stream()>>>(logits, V, info, rows, offsets,
                                                                    keys_in);
  GYRE_CUDA_LAUNCHED("sample_filtered_large_rows/compact");
  GYRE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
      temp, temp_bytes, keys_in, keys_out, int(total), int(n_rows), offsets, offsets + 1, 0, 64,
      stream()));
  large_walk_kernel<<<unsigned(n_rows), 1, 0, stream()>>>(keys_out, rows, offsets, V, top_k, top_p,
                                                          min_p, info, logits, out_tokens);
  GYRE_CUDA_LAUNCHED("sample_filtered_large_rows/walk");
}

}  // namespace gyre::cuda
