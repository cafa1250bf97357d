// Choosing among cuBLASLt's candidate algorithms by measurement, without changing a single bit.
//
// cuBLASLt's heuristic ranks algorithms by a model of the GPU, and on the engine's GEMMs its first
// choice is often 5-15% slower than another of its top eight (session 16, H200: the 1.5B gate/up
// GEMM 578 -> 544 us, the log-prob head's logits chunk 707 -> 602 us). gemm.cc times the candidates
// once per problem and keeps the fastest — but only among candidates whose output is bitwise the
// heuristic's first choice on the problem's own operands: every accumulation-order contract of the
// engine (fused == unfused paths, one process's run == another's, tuned == untuned) keeps holding,
// because a candidate that sums in another order (split-K, a different reduction) differs on real
// data and is never taken. The equality is checked on one input, not proven for all: a kernel
// that accumulated the same products in another order would show it on millions of random-ish
// outputs, so the check is treated as decisive.
//
// When: on a problem's kTuneAtLaunch-th launch (problems seen once — a prefill's odd remainder
// chunk — are never tuned and cost nothing; repeated ones — full prefill chunks, the batch decode
// step, a training step's once-per-step GEMMs in the second step — tune once, ~10-20 ms each, so
// benchmarks warm up at their timed shape), never while a CUDA graph is being
// captured, only for problems of at least kTuneMinFlop, at most kTuneMaxProblems per process,
// and only when the heuristic's first choice has no split-K. GYRE_GEMM_AUTOTUNE_LOG=1 prints each
// tuned problem's timings to stderr.
//
// On by default; GYRE_GEMM_AUTOTUNE=0 turns it off (the heuristic's first choice everywhere). On
// the H200 (session 16, notes/device_measurements.md, call 6) every candidate kept the heuristic's
// bits, and whole steps got faster in one same-call A/B: training 0.5B 157.7 -> 154.7 ms, 1.5B
// 360.5 -> 356.3; log-prob 47.6 -> 46.3, 111.6 -> 107.7. (Earlier A/Bs that tuned on the third
// launch measured the tuning itself inside the timed steps and showed no gain.) Session 17 made it
// the default after the GPU rollout / RL / serving / model tests passed with second-launch tuning
// (CUDA-graph warm-ups and the rollout's prefill shapes meet it there).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

struct CUstream_st;

namespace gyre::cuda {

inline constexpr int kTuneAtLaunch = 2;      // tuned on this launch; the first runs the heuristic's
inline constexpr int kTuneCandidates = 8;    // cuBLASLt's top N
inline constexpr double kTuneMinFlop = 2e9;  // smaller problems: launch-bound, not tuned
inline constexpr size_t kTuneMaxProblems = 64;  // per process: bounds the one-time cost when
                                                // dynamic shapes (rollout prefill) repeat
inline constexpr size_t kTuneMaxOutBytes = size_t(1) << 30;  // D copies beyond this: not tuned

// Whether GEMM autotuning is on (default on; GYRE_GEMM_AUTOTUNE=0 turns it off, see above).
// Problems planned while it is off keep the heuristic's choice.
bool gemm_autotune_enabled();
// Overrides the environment for problems planned from now on (tests).
void set_gemm_autotune(bool on);
// How many GEMM problems this process has tuned (all threads).
size_t gemm_problems_tuned();

// Device scratch straight from cudaMalloc, not gyre's pool: tuning scratch (here and in
// cudnn_attention.cc's plan tuning) is transient and must not show in the allocator's peak (the
// log-prob benchmark reports its peak extra bytes). `p` is null when `bytes` is 0 or the memory
// cannot be had (the CUDA error is cleared: tuning is an optimisation, never an error). Freed on
// scope exit.
struct RawDeviceBuffer {
  void* p = nullptr;
  explicit RawDeviceBuffer(size_t bytes);
  ~RawDeviceBuffer();
  RawDeviceBuffer(const RawDeviceBuffer&) = delete;
  RawDeviceBuffer& operator=(const RawDeviceBuffer&) = delete;
};

// One GEMM problem to tune: D (out_bytes, read first when reads_d) on stream s; run(i, out)
// launches candidate i with `out` as D (and as C, when the problem reads D) and returns false when
// the candidate cannot run.
struct TuneProblem {
  void* d = nullptr;
  size_t out_bytes = 0;
  bool reads_d = false;  // beta != 0 with C = D: every trial starts from D's current contents
  CUstream_st* stream = nullptr;
  int candidates = 0;
  std::function<bool(int, void*)> run;
};

// Returns the index of the fastest candidate whose output equals candidate 0's bit for bit, each
// timed over launches with a cold L2 (as inside a model step, where the operands come from HBM) (0
// when none is faster, or when scratch memory cannot be had: tuning is an optimisation, never an
// error). D itself is not written. Synchronises the stream. `log` (optional) gets one line per
// candidate: time in microseconds and whether its bits matched.
int pick_fastest_same_bits(const TuneProblem& p, std::string* log);

}  // namespace gyre::cuda
