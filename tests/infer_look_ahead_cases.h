// The decode look-ahead's equivalence cases (EngineConfig::decode_look_ahead,
// infer/engine_look_ahead.cc), shared by the GPU test (decode graphs: tests/gpu/infer/
// decode_look_ahead_gpu_test.cc) and the CPU test (the eager test hook: tests/unit/infer/
// decode_look_ahead_test.cc). Launching step n + 1 before step n's tokens are read back changes no
// output: the same requests through an engine with and without it give the same tokens, log-probs
// (bitwise, or after a stop within a tolerance: see same_outputs_with_and_without) and finish
// reasons — for greedy, seeded and top-k / top-p rows, requests that stop on a stop token in the
// middle of a burst (their look-ahead row is dropped, the others go on), batches that shrink as
// requests finish by length, a queue waiting for room, and a second round that reuses the radix
// cache's pages (written in part by look-ahead steps).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"

namespace gyre::infer::look_ahead_cases {

inline GenerateRequest request(std::vector<int32_t> prompt, int32_t n, uint64_t seed, int kind) {
  GenerateRequest r;
  r.input_ids = std::move(prompt);
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.sampling.seed = seed;
  // Greedy, then sampled rows at temperature 1: every row's log-probs are then at temperature 1,
  // so they share one batch's device sampling (device_sampling() keeps mixed log-prob
  // temperatures on the host, and a step that samples on the host does not look ahead).
  r.sampling.temperature = kind == 0 ? 0.0f : 1.0f;
  if (kind == 2) r.sampling.top_k = 20;
  if (kind == 3) r.sampling.top_p = 0.8f;
  r.return_logprob = true;
  return r;
}

// `eager`: EngineConfig::decode_look_ahead_eager (a CPU model looks ahead through eager forwards).
inline EngineConfig config(bool look_ahead, bool eager, int32_t max_running = 256) {
  EngineConfig c;
  c.decode_look_ahead_eager = eager;
  c.max_running_requests = max_running;
  c.page_size = 4;
  c.num_pages = 512;
  c.max_num_batched_tokens = 64;
  c.decode_look_ahead = look_ahead;
  return c;
}

// The same tokens and finish reasons; log-probs bitwise (tol 0) or within tol.
inline void expect_same(const std::vector<GenerateResult>& a, const std::vector<GenerateResult>& b,
                        float tol = 0.0f) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].error.empty()) << a[i].error;
    ASSERT_TRUE(b[i].error.empty()) << b[i].error;
    EXPECT_EQ(a[i].output_ids, b[i].output_ids) << "request " << i;
    if (tol == 0.0f) {
      EXPECT_EQ(a[i].output_logprobs, b[i].output_logprobs) << "request " << i;
    } else {
      ASSERT_EQ(a[i].output_logprobs.size(), b[i].output_logprobs.size()) << "request " << i;
      for (size_t t = 0; t < a[i].output_logprobs.size(); ++t)
        EXPECT_NEAR(a[i].output_logprobs[t], b[i].output_logprobs[t], tol)
            << "request " << i << ", token " << t;
    }
    EXPECT_EQ(a[i].finish.type, b[i].finish.type) << "request " << i;
    EXPECT_EQ(a[i].finish.matched_token, b[i].finish.matched_token) << "request " << i;
  }
}

// Everything above for one model: the GPU's through decode graphs (eager = false), the CPU's
// through the test hook (eager = true). Rounds without stops are bitwise: every look-ahead step
// has the rows the step without it has. After a stop they are not always: the look-ahead step
// after it also computes the stopped request's row (dropped), so its other rows run in a batch one
// larger than without look-ahead, and a backend whose kernels round a row differently in another
// batch size (the CPU's GEMMs; on the GPU a graph bucket past the GEMV's 8 rows, which 8 requests
// stay inside) gives them other last bits — and a later prefix match may reuse that row's cached
// KV. There the log-probs agree within `stop_tol`; tokens and finish reasons still exactly.
inline void same_outputs_with_and_without(model::CausalLM& m, bool eager, float stop_tol) {
  // 8 requests of different lengths and sampling kinds: the batch shrinks as they finish.
  std::vector<GenerateRequest> reqs;
  for (uint64_t s = 0; s < 8; ++s)
    reqs.push_back(request({1, 5, int32_t(7 + s), 9, 11}, int32_t(6 + 3 * s), 70 + s, int(s % 4)));
  Engine on(m, nullptr, config(true, eager));
  Engine off(m, nullptr, config(false, eager));
  const auto a = on.generate(reqs);
  const auto b = off.generate(reqs);
  expect_same(a, b);
  EXPECT_GT(on.stats().look_ahead_steps, 0);
  EXPECT_EQ(off.stats().look_ahead_steps, 0);

  // Stop tokens met mid-burst: each request stops on the first token it produced at step 3 + i %
  // 5 or later that it had not produced before (so it runs to that step; a tiny model repeats
  // tokens). Its row of the look-ahead step after the stop is computed and dropped.
  std::vector<GenerateRequest> stopping = reqs;
  int planted = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<int32_t>& out = a[i].output_ids;
    for (size_t at = 3 + i % 5; at < out.size(); ++at)
      if (std::find(out.begin(), out.begin() + long(at), out[at]) == out.begin() + long(at)) {
        stopping[i].sampling.stop_token_ids = {out[at]};
        ++planted;
        break;
      }
  }
  ASSERT_GT(planted, 0) << "no request produced a new token after step 3";
  const auto c = on.generate(stopping);
  const auto d = off.generate(stopping);
  expect_same(c, d, stop_tol);
  int stopped = 0;
  for (const auto& r : c) stopped += r.finish.type == FinishType::stop;
  EXPECT_GT(stopped, 0);
  EXPECT_GT(on.stats().look_ahead_dropped_rows, 0);
  on.scheduler().check_consistency();

  // A second round over the cached prompts and outputs: the same results again.
  expect_same(on.generate(stopping), d, stop_tol);
  on.scheduler().check_consistency();

  // Three running at a time: a finish frees room for a queued request, which a look-ahead step
  // cannot admit (the burst ends; the next step admits it).
  Engine on3(m, nullptr, config(true, eager, 3));
  Engine off3(m, nullptr, config(false, eager, 3));
  expect_same(on3.generate(stopping), off3.generate(stopping), stop_tol);
  EXPECT_GT(on3.stats().look_ahead_steps, 0);
  on3.scheduler().check_consistency();

  // Batch 1, the decode benchmark's case.
  const std::vector<GenerateRequest> one = {request({3, 1, 4, 1, 5, 9, 2, 6}, 40, 7, 1)};
  expect_same(on.generate(one), off.generate(one));
}

}  // namespace gyre::infer::look_ahead_cases
