// bench_sampling_gpu: top-p sampling of a rollout batch on the GPU (ops::sample_tokens_filtered:
// radix-select cut, candidates-only sort) against the engine's former host path for such rows
// (copy the [R, V] f32 logits to the host, then infer::Sampler per row on the thread pool).
// Default R = 256 rows x V = 151936 (Qwen vocabulary), random logits (normal, sd 2.5, a
// different row each), T = 1, top_p = 0.9. Prints one JSON line: median milliseconds per batch of
// each path (each timed call ends with the tokens on the host), the speedup, and whether both
// paths picked the same tokens. Flags: --rows R --vocab V --top-p P --top-k K --iters N
// --logit-sd S. With sd 2.5 top-p 0.9 keeps ~11% of the vocabulary (~16k ids per row: every row
// takes the global-memory sort); a larger sd (peakier rows, as LM logits usually are) keeps fewer
// (sd 4: ~800 ids) and stays in the one-block path (<= 4096 candidates).
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"sampling_gpu\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/sampling_ops.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"
#include "gyre/core/thread_pool.h"
#include "gyre/infer/sampler.h"

using namespace gyre;

namespace {}  // namespace

int main(int argc, char** argv) {
  int64_t R = 256, V = 151936, iters = 10;
  float top_p = 0.9f, sd = 2.5f;
  int32_t top_k = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--rows")) R = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--vocab")) V = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--top-p")) top_p = float(std::atof(argv[i + 1]));
    if (!std::strcmp(argv[i], "--top-k")) top_k = int32_t(std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--logit-sd")) sd = float(std::atof(argv[i + 1]));
  }
  if (!cuda::available()) {
    std::printf("{\"bench\":\"sampling_gpu\",\"skipped\":\"no CUDA device visible\"}\n");
    return 0;
  }
  std::vector<float> logits(static_cast<size_t>(R * V));
  PhiloxStream rng(2024);
  for (float& x : logits) x = rng.next_normal() * sd;
  std::vector<float> temps(size_t(R), 1.0f), top_ps(size_t(R), top_p);
  std::vector<int32_t> top_ks(size_t(R), top_k);
  std::vector<int64_t> seeds(static_cast<size_t>(R)), steps(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) seeds[size_t(i)] = 1000 + i, steps[size_t(i)] = i % 17;
  const Device cu = Device::cuda;
  const Tensor dl = Tensor::from_vector(logits, {R, V}).to(cu);
  const Tensor dt = Tensor::from_vector(temps, {R}).to(cu),
               dk = Tensor::from_vector(top_ks, {R}).to(cu);
  const Tensor dp = Tensor::from_vector(top_ps, {R}).to(cu),
               ds = Tensor::from_vector(seeds, {R}).to(cu);
  const Tensor dst = Tensor::from_vector(steps, {R}).to(cu);

  std::vector<int32_t> gpu_tokens, cpu_tokens(static_cast<size_t>(R));
  std::vector<double> gpu_ms, host_ms;
  for (int64_t it = 0; it <= iters; ++it) {  // iteration 0 warms up
    cuda::sync();
    const double t0 = bench::wall_ms();
    Tensor tok;
    ops::sample_tokens_filtered(dl, dt, dk, dp, ds, dst, 0.0f, tok);
    const Tensor host = tok.to(Device::cpu);
    const double t1 = bench::wall_ms();
    gpu_tokens.assign(host.i32(), host.i32() + R);
    if (it > 0) gpu_ms.push_back(t1 - t0);
  }
  for (int64_t it = 0; it <= iters; ++it) {
    cuda::sync();
    const double t0 = bench::wall_ms();
    const Tensor hl = dl.to(Device::cpu);
    parallel_for(R, 1, [&](int64_t k0, int64_t k1) {
      thread_local infer::Sampler sampler;
      for (int64_t i = k0; i < k1; ++i) {
        infer::SamplingParams sp;
        sp.temperature = temps[size_t(i)];
        sp.top_p = top_ps[size_t(i)];
        sp.top_k = top_ks[size_t(i)];
        std::vector<int32_t> output(static_cast<size_t>(steps[size_t(i)]),
                                    0);  // its size is the step
        infer::SampleInput in;
        in.logits = hl.f32() + i * V;
        in.vocab = V;
        in.params = &sp;
        in.output = output;
        in.seed = uint64_t(seeds[size_t(i)]);
        cpu_tokens[size_t(i)] = sampler.sample(in).token;
      }
    });
    const double t1 = bench::wall_ms();
    if (it > 0) host_ms.push_back(t1 - t0);
  }
  int64_t mismatches = 0;
  for (int64_t i = 0; i < R; ++i) mismatches += gpu_tokens[size_t(i)] != cpu_tokens[size_t(i)];
  const double g = bench::median(gpu_ms), h = bench::median(host_ms);
  std::printf(
      "{\"bench\":\"sampling_gpu\",\"rows\":%lld,\"vocab\":%lld,\"top_p\":%g,\"top_k\":%d,"
      "\"logit_sd\":%g,\"gpu_ms\":%.3f,\"host_path_ms\":%.3f,\"speedup\":%.2f,\"host_threads\":%d,"
      "\"token_mismatches\":%lld}\n",
      (long long)R, (long long)V, double(top_p), top_k, double(sd), g, h, h / g,
      global_thread_pool().size(), (long long)mismatches);
  return mismatches == 0 ? 0 : 1;
}
#endif
