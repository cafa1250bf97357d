// Sampler (greedy, temperature, top-k/top-p/min-p, penalties, seeded determinism, log-probs),
// stop tokens / stop strings (spanning token boundaries, trimming, stream hold-back) and request
// validation (every bad field gives its own error).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "gyre/infer/sampler.h"
#include "gyre/infer/stop.h"
#include "gyre/infer/validate.h"

using namespace gyre::infer;

namespace {
std::vector<double> softmax(const std::vector<float>& x, double t = 1) {
  double m = *std::max_element(x.begin(), x.end());
  std::vector<double> p;
  double s = 0;
  for (float v : x) s += std::exp((v - m) / t);
  for (float v : x) p.push_back(std::exp((v - m) / t) / s);
  return p;
}
SampleResult draw(Sampler& s, const std::vector<float>& logits, const SamplingParams& sp,
                  uint64_t seed, std::span<const int32_t> out = {},
                  std::span<const int32_t> prompt = {}, std::span<const int32_t> mask = {}) {
  SampleInput in;
  in.logits = logits.data();
  in.vocab = int64_t(logits.size());
  in.params = &sp;
  in.seed = seed;
  in.output = out;
  in.prompt = prompt;
  in.masked_ids = mask;
  return s.sample(in);
}
}  // namespace

TEST(Sampler, GreedyArgmaxAndRawLogprob) {
  Sampler s;
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f};
  SamplingParams sp;
  sp.temperature = 0;
  auto r = draw(s, logits, sp, 1);
  EXPECT_EQ(r.token, 1);  // ties -> lower id
  EXPECT_NEAR(r.logprob, std::log(softmax(logits)[1]), 1e-6);
}

TEST(Sampler, TemperatureSamplingMatchesSoftmax) {
  Sampler s;
  std::vector<float> logits = {1.0f, 0.0f, 2.0f, -0.5f, 0.7f};
  SamplingParams sp;
  sp.temperature = 0.8f;
  auto p = softmax(logits, 0.8);
  std::vector<int> hist(5, 0);
  const int N = 40000;
  for (int i = 0; i < N; ++i) ++hist[size_t(draw(s, logits, sp, uint64_t(i) * 7919 + 1).token)];
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(hist[size_t(i)] / double(N), p[size_t(i)], 0.01) << i;
  // The log-prob is under softmax(logits / T), before truncation.
  auto r = draw(s, logits, sp, 5);
  EXPECT_NEAR(r.logprob, std::log(p[size_t(r.token)]), 1e-6);
}

TEST(Sampler, TopKTopPMinPKeepSets) {
  Sampler s;
  // probs 0.5, 0.3, 0.15, 0.05
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  auto support = [&](const SamplingParams& sp) {
    std::set<int> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(draw(s, logits, sp, uint64_t(i)).token);
    return seen;
  };
  SamplingParams k2;
  k2.top_k = 2;
  EXPECT_EQ(support(k2), (std::set<int>{0, 1}));
  SamplingParams p7;  // exclusive cumulative mass 0, 0.5, 0.8: keep the first two
  p7.top_p = 0.7f;
  EXPECT_EQ(support(p7), (std::set<int>{0, 1}));
  SamplingParams p85;
  p85.top_p = 0.85f;
  EXPECT_EQ(support(p85), (std::set<int>{0, 1, 2}));
  SamplingParams m;  // keep p >= 0.5 * 0.5
  m.min_p = 0.5f;
  EXPECT_EQ(support(m), (std::set<int>{0, 1}));
  SamplingParams all;
  EXPECT_EQ(support(all), (std::set<int>{0, 1, 2, 3}));
}

TEST(Sampler, TopPPartialSelectionMatchesFullSort) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 3);
  std::vector<float> logits(5000);
  for (float& x : logits) x = nd(rng);
  auto p = softmax(logits);
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  std::set<int> keep;
  double cum = 0;
  for (int i : order) {
    if (cum > 0.9) break;
    keep.insert(i);
    cum += p[size_t(i)];
  }
  ASSERT_GT(keep.size(), 64u);  // exercises more than one selection block
  Sampler s;
  SamplingParams sp;
  sp.top_p = 0.9f;
  std::set<int> seen;
  for (int i = 0; i < 4000; ++i) {
    int t = draw(s, logits, sp, uint64_t(i)).token;
    EXPECT_TRUE(keep.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), keep.size() / 2);
}

TEST(Sampler, PenaltiesFollowSglang) {
  Sampler s;
  std::vector<float> logits = {2.0f, 1.9f, -1.0f, 1.5f};
  SamplingParams g;
  g.temperature = 0;
  std::vector<int32_t> out = {0};
  auto f = g;
  f.frequency_penalty = 0.2f;  // 2.0 - 0.2 < 1.9
  EXPECT_EQ(draw(s, logits, f, 0, out).token, 1);
  auto pres = g;
  pres.presence_penalty = 0.05f;  // 1.95 > 1.9: still 0
  EXPECT_EQ(draw(s, logits, pres, 0, out).token, 0);
  std::vector<int32_t> out2 = {0, 0, 0};  // frequency counts occurrences, presence once
  EXPECT_EQ(draw(s, logits, pres, 0, out2).token, 0);
  auto f2 = g;
  f2.frequency_penalty = 0.04f;  // 2.0 - 0.12 < 1.9
  EXPECT_EQ(draw(s, logits, f2, 0, out2).token, 1);
  auto rep = g;
  rep.repetition_penalty = 1.5f;
  std::vector<int32_t> prompt = {1};  // the prompt counts for the repetition penalty
  EXPECT_EQ(draw(s, logits, rep, 0, out, prompt).token, 3);  // 2/1.5, 1.9/1.5 < 1.5
  // Negative logits are multiplied: token 2 is pushed further down, never up.
  std::vector<float> neg = {-1.0f, -1.2f};
  std::vector<int32_t> o0 = {0};
  EXPECT_EQ(draw(s, neg, rep, 0, o0).token, 1);  // -1.5 < -1.2
  // Log-probs ignore penalties.
  auto r = draw(s, logits, f, 0, out);
  EXPECT_NEAR(r.logprob, std::log(softmax(logits)[1]), 1e-6);
}

TEST(Sampler, MaskedIdsNeverSampled) {
  Sampler s;
  std::vector<float> logits = {5.0f, 0.0f, 0.0f};
  SamplingParams sp;
  std::vector<int32_t> mask = {0};
  for (int i = 0; i < 200; ++i) EXPECT_NE(draw(s, logits, sp, uint64_t(i), {}, {}, mask).token, 0);
}

TEST(Sampler, SeededSamplingIndependentOfBatch) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 2);
  std::vector<std::vector<float>> rows(40, std::vector<float>(300));
  for (auto& r : rows)
    for (float& x : r) x = nd(rng);
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.top_p = 0.95f;
  sp.top_k = 50;
  // Alone: request A decodes 40 tokens.
  Sampler alone;
  std::vector<int32_t> out_alone;
  for (auto& r : rows) out_alone.push_back(draw(alone, r, sp, 1234, out_alone).token);
  // In a batch: interleaved with other requests (other seeds, other params) on the same sampler.
  Sampler shared;
  std::vector<int32_t> out_batch, other;
  SamplingParams sp2;
  sp2.temperature = 1.3f;
  for (auto& r : rows) {
    other.push_back(draw(shared, r, sp2, 99, other).token);
    out_batch.push_back(draw(shared, r, sp, 1234, out_batch).token);
  }
  EXPECT_EQ(out_alone, out_batch);
  Sampler s3;  // a different seed gives a different sequence
  std::vector<int32_t> out_other_seed;
  for (auto& r : rows) out_other_seed.push_back(draw(s3, r, sp, 4321, out_other_seed).token);
  EXPECT_NE(out_alone, out_other_seed);
}

TEST(Sampler, TopLogprobs) {
  std::vector<float> logits = {0.1f, 2.0f, 1.0f, 2.0f};
  auto top = top_logprobs(logits.data(), 4, 1.0f, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token_id, 1);
  EXPECT_EQ(top[1].token_id, 3);
  EXPECT_EQ(top[2].token_id, 2);
  EXPECT_NEAR(top[2].logprob, std::log(softmax(logits)[2]), 1e-6);
}

TEST(StopMatch, StopTokens) {
  SamplingParams sp;
  std::vector<int32_t> eos = {7};
  EXPECT_TRUE(is_stop_token(7, sp, eos));
  EXPECT_FALSE(is_stop_token(8, sp, eos));
  sp.ignore_eos = true;
  EXPECT_FALSE(is_stop_token(7, sp, eos));
  sp.stop_token_ids = {8};
  EXPECT_TRUE(is_stop_token(8, sp, eos));
}

TEST(StopMatch, StringSpanningTokensIsTrimmed) {
  StopStringMatcher m({"o wor", "zzz"}, false);
  EXPECT_FALSE(m.feed("Hel"));
  EXPECT_FALSE(m.feed("lo w"));
  EXPECT_TRUE(m.feed("orld"));
  EXPECT_EQ(m.text(), "Hell");
  EXPECT_EQ(*m.matched(), "o wor");
  StopStringMatcher keep({"o wor"}, true);
  keep.feed("Hel");
  keep.feed("lo w");
  keep.feed("orld");
  EXPECT_EQ(keep.text(), "Hello wor");
}

TEST(StopMatch, EarliestOfSeveralStops) {
  StopStringMatcher m({"cd", "b"}, false);
  EXPECT_TRUE(m.feed("abcde"));
  EXPECT_EQ(*m.matched(), "b");
  EXPECT_EQ(m.text(), "a");
}

TEST(StopMatch, StreamHoldsBackPossibleStopPrefix) {
  StopStringMatcher m({"\n\nUser:"}, false);
  m.feed("abc\n");
  EXPECT_EQ(m.take_stream_text(), "abc");
  m.feed("\nUs");
  EXPECT_EQ(m.take_stream_text(), "");
  m.feed("x");  // not a stop after all: released
  EXPECT_EQ(m.take_stream_text(), "\n\nUsx");
  m.feed("\n\nUse");
  m.flush();  // finished for another reason: the tail is real text
  EXPECT_EQ(m.take_stream_text(), "\n\nUse");
  EXPECT_EQ(m.text(), "abc\n\nUsx\n\nUse");
}

TEST(ValidateParse, EachBadFieldHasItsError) {
  RequestLimits lim{100, 64, 1024};
  GenerateRequest ok;
  ok.input_ids = {1, 2, 3};
  ok.sampling.max_new_tokens = 10;
  EXPECT_EQ(validate_request(ok, lim), "");
  auto expect_err = [&](auto mutate, const std::string& needle) {
    GenerateRequest r = ok;
    mutate(r);
    std::string e = validate_request(r, lim);
    EXPECT_NE(e.find(needle), std::string::npos) << "got: '" << e << "' want: " << needle;
  };
  expect_err([](GenerateRequest& r) { r.input_ids.clear(); }, "empty");
  expect_err([](GenerateRequest& r) { r.input_ids[1] = 100; }, "input_ids[1] = 100");
  expect_err([](GenerateRequest& r) { r.input_ids[0] = -1; }, "out of range");
  expect_err([](GenerateRequest& r) { r.sampling.max_new_tokens = -1; }, "max_new_tokens = -1");
  expect_err([](GenerateRequest& r) { r.sampling.max_new_tokens = 62; },
             "prompt (3 tokens) + max_new_tokens (62) = 65 exceeds the context length 64");
  expect_err([](GenerateRequest& r) { r.sampling.top_p = 0; }, "top_p = 0");
  expect_err([](GenerateRequest& r) { r.sampling.top_p = 1.5f; }, "top_p = 1.5");
  expect_err([](GenerateRequest& r) { r.sampling.temperature = -0.1f; }, "temperature");
  expect_err([](GenerateRequest& r) { r.sampling.n = 0; }, "n = 0");
  expect_err([](GenerateRequest& r) { r.sampling.min_p = 1.5f; }, "min_p = 1.5");
  expect_err([](GenerateRequest& r) { r.sampling.top_k = -2; }, "top_k = -2");
  expect_err([](GenerateRequest& r) { r.sampling.repetition_penalty = 0; }, "repetition_penalty");
  expect_err([](GenerateRequest& r) { r.sampling.stop = {""}; }, "stop[0]");
  expect_err(
      [](GenerateRequest& r) {
        r.sampling.stop_token_ids = {5, 500};
      },
      "stop_token_ids[1] = 500");
  expect_err([](GenerateRequest& r) { r.logprob_start_len = 3; }, "logprob_start_len = 3");
  RequestLimits small{100, 64, 8};
  GenerateRequest big = ok;
  EXPECT_NE(validate_request(big, small).find("--num-pages"), std::string::npos);
}
