// Measured choice among cuBLASLt's candidates, restricted to the heuristic's own bits
// (gemm_tune.h).
#include "gyre/backend/cuda/gemm_tune.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>

#include "gyre/core/env.h"

namespace gyre::cuda {

RawDeviceBuffer::RawDeviceBuffer(size_t bytes) {
  if (bytes && cudaMalloc(&p, bytes) != cudaSuccess) {
    p = nullptr;
    cudaGetLastError();  // clear the sticky-free error state of a failed allocation
  }
}

RawDeviceBuffer::~RawDeviceBuffer() {
  if (p) cudaFree(p);
}

namespace {

struct Events {
  cudaEvent_t a = nullptr, b = nullptr;
  Events() {
    if (cudaEventCreate(&a) != cudaSuccess) a = nullptr;
    if (cudaEventCreate(&b) != cudaSuccess) b = nullptr;
  }
  ~Events() {
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
  }
};

constexpr int kWarmRuns = 2, kTimedRuns = 5;
constexpr double kMinGain = 0.01;  // a candidate must beat the heuristic's by 1% (noise)

// -1: not yet read from GYRE_GEMM_AUTOTUNE (unset: on); then 0 / 1 (set_gemm_autotune overrides).
std::atomic<int> g_autotune{-1};
std::atomic<size_t> g_tuned{0};

}  // namespace

// gemm_tune_compare.cu
bool device_bytes_equal(const void* a, const void* b, size_t n, int* flag, cudaStream_t s);

size_t gemm_problems_tuned() { return g_tuned.load(std::memory_order_relaxed); }

bool gemm_autotune_enabled() {
  int v = g_autotune.load(std::memory_order_relaxed);
  if (v < 0) {
    // On unless GYRE_GEMM_AUTOTUNE=0; another value is an error naming the variable.
    v = env_choice("GYRE_GEMM_AUTOTUNE", {"0", "1"}, "1") == "1" ? 1 : 0;
    g_autotune.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

void set_gemm_autotune(bool on) { g_autotune.store(on ? 1 : 0, std::memory_order_relaxed); }

namespace {
int pick(const TuneProblem& p, std::string* log) {
  cudaStream_t s = cudaStream_t(p.stream);
  if (p.candidates < 2 || p.out_bytes == 0 || p.out_bytes > kTuneMaxOutBytes) return 0;
  int dev = 0, l2 = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev) != cudaSuccess || l2 <= 0)
    return 0;
  // Everything the trials need, or no tuning at all: the trial output, candidate 0's output,
  // D's contents when the GEMM reads them, an L2-sized buffer to evict the operands, one flag.
  RawDeviceBuffer out(p.out_bytes), ref(p.out_bytes), start(p.reads_d ? p.out_bytes : 0),
      flush(size_t(l2) * 2), flag(sizeof(int));
  if (!out.p || !ref.p || (p.reads_d && !start.p) || !flush.p || !flag.p) return 0;
  if (p.reads_d &&
      cudaMemcpyAsync(start.p, p.d, p.out_bytes, cudaMemcpyDeviceToDevice, s) != cudaSuccess)
    return 0;
  Events ev;
  if (!ev.a || !ev.b) return 0;

  // One launch of candidate i from D's contents (or none, for beta = 0) into `out`.
  auto trial = [&](int i) {
    if (p.reads_d &&
        cudaMemcpyAsync(out.p, start.p, p.out_bytes, cudaMemcpyDeviceToDevice, s) != cudaSuccess)
      return false;
    return p.run(i, out.p);
  };
  // Mean time of one launch with a cold L2 (the operands come from HBM, as inside a model step);
  // infinite when any timing step failed (never chosen).
  constexpr double kNever = 1e300;
  auto time_us = [&](int i) {
    for (int r = 0; r < kWarmRuns; ++r) p.run(i, out.p);
    float total = 0;
    for (int r = 0; r < kTimedRuns; ++r) {
      float ms = 0;
      if (cudaMemsetAsync(flush.p, r, size_t(l2) * 2, s) != cudaSuccess ||
          cudaEventRecord(ev.a, s) != cudaSuccess || !p.run(i, out.p) ||
          cudaEventRecord(ev.b, s) != cudaSuccess || cudaEventSynchronize(ev.b) != cudaSuccess ||
          cudaEventElapsedTime(&ms, ev.a, ev.b) != cudaSuccess)
        return kNever;
      total += ms;
    }
    return 1e3 * double(total) / kTimedRuns;
  };

  if (!trial(0) ||
      cudaMemcpyAsync(ref.p, out.p, p.out_bytes, cudaMemcpyDeviceToDevice, s) != cudaSuccess)
    return 0;
  const double base = time_us(0);
  if (base >= kNever) return 0;
  double best = base;
  int best_i = 0;
  char buf[96];
  if (log) {
    std::snprintf(buf, sizeof buf, "#0 %.1f us", base);
    *log += buf;
  }
  for (int i = 1; i < p.candidates; ++i) {
    const bool ran = trial(i);
    const bool same =
        ran && device_bytes_equal(out.p, ref.p, p.out_bytes, static_cast<int*>(flag.p), s);
    const double us = same ? time_us(i) : 0.0;
    if (log) {
      if (same)
        std::snprintf(buf, sizeof buf, ", #%d %.1f us", i, us);
      else
        std::snprintf(buf, sizeof buf, ", #%d %s", i, ran ? "other bits" : "cannot run");
      *log += buf;
    }
    if (same && us < best && us < base * (1 - kMinGain)) best = us, best_i = i;
  }
  cudaStreamSynchronize(s);
  g_tuned.fetch_add(1, std::memory_order_relaxed);
  return best_i;
}
}  // namespace

int pick_fastest_same_bits(const TuneProblem& p, std::string* log) {
  // Tuning is an optimisation, never an error: whatever failed inside (an allocation, an event, a
  // candidate) leaves no pending CUDA error for the next kernel's launch check to report.
  const int chosen = pick(p, log);
  cudaGetLastError();
  return chosen;
}

}  // namespace gyre::cuda
