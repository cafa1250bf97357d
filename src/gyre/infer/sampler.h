// Token sampler over one logits row (f32 [V]), SGLang semantics:
//   1. penalties on the raw logits: repetition (HF/SGLang: divide positive logits, multiply
//   negative
//      ones, for every token id seen in the prompt or the output), frequency (minus f * count in
//      the output) and presence (minus p once per token id in the output); eos/stop ids masked to
//      -inf while fewer than min_new_tokens were generated;
//   2. temperature < 1e-6 is greedy (argmax, lowest id on ties); otherwise p = softmax(w / T) and
//      top_k, top_p and min_p are all judged on that p (as SGLang's
//      top_k_top_p_min_p_sampling_from_probs: keep rank < k, exclusive cumulative mass <= top_p,
//      p >= min_p * p_max), renormalised, and one token is drawn with a Philox uniform at
//      (seed, counter = tokens generated so far), so a seeded request gets the same tokens whatever
//      else is in the batch;
//   3. the reported log-prob is log softmax(logits / T)[token] over the full vocabulary BEFORE
//      penalties and truncation (T = 1 when greedy): what the trainer recomputes (types.h).
// top_p never sorts the whole vocabulary: candidates are selected in doubling blocks
// (nth_element) until the kept mass is reached.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "gyre/infer/types.h"

namespace gyre::infer {

constexpr float kGreedyTemperature = 1e-6f;  // SGLang: 0 <= T < 1e-6 means greedy

struct SampleInput {
  const float* logits = nullptr;  // [vocab], not modified
  int64_t vocab = 0;
  const SamplingParams* params = nullptr;
  std::span<const int32_t> prompt;  // for the repetition penalty
  std::span<const int32_t> output;  // tokens generated so far (penalties; its size is the counter)
  uint64_t seed = 0;
  std::span<const int32_t> masked_ids;  // ids forbidden at this step (eos/stop before min_new)
  int32_t top_logprobs_num = 0;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0;
  std::vector<TopLogprob> top_logprobs;
};

// One per thread: holds scratch buffers so sampling does not allocate per token.
class Sampler {
 public:
  SampleResult sample(const SampleInput& in);

 private:
  std::vector<float> w_;
  std::vector<int32_t> idx_;
  std::vector<int32_t> counts_;
};

// log softmax(logits / T)[token] with T = 1 when temperature < kGreedyTemperature, f32 result.
float token_logprob(const float* logits, int64_t vocab, float temperature, int32_t token);
// The k most likely ids of softmax(logits / T) (same T rule), most likely first, ties -> lower id.
std::vector<TopLogprob> top_logprobs(const float* logits, int64_t vocab, float temperature,
                                     int32_t k);

}  // namespace gyre::infer
