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
// When: on a problem's kTuneAtLaunch-th launch (problems seen once — the rollout's dynamic
// prefill shapes — are never tuned and cost nothing; a training step's once-per-step GEMMs tune
// in the second step, so benchmarks warm up twice), never while a CUDA graph is being
// captured, only for problems of at least kTuneMinFlop, and only when the heuristic's first
// choice has no split-K. GYRE_GEMM_AUTOTUNE_LOG=1 prints each tuned problem's timings to stderr.
//
// OFF by default (GYRE_GEMM_AUTOTUNE=1 turns it on): on the H200 (session 16, notes/
// device_measurements.md) every candidate kept the heuristic's bits, and the timings above are
// real in isolation (cold L2 or warm), yet whole model steps ran 0-8% SLOWER with the tuned
// choices (0.5B training 157 -> 166 ms, 1.5B 360 -> 378 ms; log-prob mixed: the entropy variant
// 2-3% faster, the first one measured 3-8% slower). Isolated timing does not predict a GEMM's
// time between the model's other kernels; until that is understood the heuristic stays.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

struct CUstream_st;

namespace gyre::cuda {

inline constexpr int kTuneAtLaunch = 3;      // launches with the heuristic's choice first
inline constexpr int kTuneCandidates = 8;    // cuBLASLt's top N
inline constexpr double kTuneMinFlop = 2e9;  // smaller problems: launch-bound, not tuned
inline constexpr size_t kTuneMaxOutBytes = size_t(1) << 30;  // D copies beyond this: not tuned

// Whether GEMM autotuning is on (GYRE_GEMM_AUTOTUNE=1; default off, see above). Problems planned
// while it is off keep the heuristic's choice.
bool gemm_autotune_enabled();
// Overrides the environment for problems planned from now on (tests).
void set_gemm_autotune(bool on);
// How many GEMM problems this process has tuned (all threads).
size_t gemm_problems_tuned();

// One GEMM problem to tune: D (out_bytes, read first when beta != 0) on stream s; run(i, out)
// launches candidate i with `out` as both C and D and returns false when the candidate cannot run.
struct TuneProblem {
  void* d = nullptr;
  size_t out_bytes = 0;
  bool reads_d = false;  // beta != 0: every trial starts from D's current contents
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
