// Decode look-ahead (EngineConfig::decode_look_ahead, infer/engine_look_ahead.cc): launching step
// n + 1 before step n's tokens are read back changes no output. The same requests through an
// engine with and without it give the same tokens, log-probs (bitwise: the same kernels on the
// same inputs) and finish reasons — for greedy, seeded and top-k / top-p rows, requests that stop
// on a stop token in the middle of a burst (their look-ahead row is dropped), batches that shrink
// as requests finish by length, and a second round that reuses the radix cache's pages (written in
// part by look-ahead steps). Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

GenerateRequest request(std::vector<int32_t> prompt, int32_t n, uint64_t seed, int kind) {
  GenerateRequest r;
  r.input_ids = std::move(prompt);
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.sampling.seed = seed;
  r.sampling.temperature = kind == 0 ? 0.0f : 0.9f;  // greedy, then sampled rows
  if (kind == 2) r.sampling.top_k = 20;
  if (kind == 3) r.sampling.top_p = 0.8f;
  r.return_logprob = true;
  return r;
}

EngineConfig config(bool look_ahead) {
  EngineConfig c;
  c.page_size = 4;
  c.num_pages = 512;
  c.max_num_batched_tokens = 64;
  c.decode_look_ahead = look_ahead;
  return c;
}

void expect_same(const std::vector<GenerateResult>& a, const std::vector<GenerateResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].error.empty()) << a[i].error;
    ASSERT_TRUE(b[i].error.empty()) << b[i].error;
    EXPECT_EQ(a[i].output_ids, b[i].output_ids) << "request " << i;
    EXPECT_EQ(a[i].output_logprobs, b[i].output_logprobs) << "request " << i;
    EXPECT_EQ(a[i].finish.type, b[i].finish.type) << "request " << i;
    EXPECT_EQ(a[i].finish.matched_token, b[i].finish.matched_token) << "request " << i;
  }
}

void same_outputs_with_and_without(model::CausalLM& m) {
  // 9 requests of different lengths and sampling kinds: the batch shrinks as they finish.
  std::vector<GenerateRequest> reqs;
  for (uint64_t s = 0; s < 9; ++s)
    reqs.push_back(request({1, 5, int32_t(7 + s), 9, 11}, int32_t(6 + 3 * s), 70 + s, int(s % 4)));
  Engine on(m, nullptr, config(true));
  Engine off(m, nullptr, config(false));
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
  expect_same(c, d);
  int stopped = 0;
  for (const auto& r : c) stopped += r.finish.type == FinishType::stop;
  EXPECT_GT(stopped, 0);
  EXPECT_GT(on.stats().look_ahead_dropped_rows, 0);
  on.scheduler().check_consistency();

  // A second round over the cached prompts and outputs: the same results again.
  expect_same(on.generate(stopping), d);
  on.scheduler().check_consistency();

  // Batch 1, the decode benchmark's case.
  const std::vector<GenerateRequest> one = {request({3, 1, 4, 1, 5, 9, 2, 6}, 40, 7, 1)};
  expect_same(on.generate(one), off.generate(one));
}

TEST(DecodeLookAheadGpu, SameOutputsWithAndWithoutF32) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                                 {.device = Device::cuda});
  same_outputs_with_and_without(*m);
}

TEST(DecodeLookAheadGpu, SameOutputsWithAndWithoutBf16) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                                 {.device = Device::cuda});
  m->set_precision(model::Precision::bf16);
  same_outputs_with_and_without(*m);
}

}  // namespace
}  // namespace gyre::infer
