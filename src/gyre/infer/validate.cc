// Request validation (SGLang's SamplingParams.verify ranges plus engine capacity checks).
#include "gyre/infer/validate.h"

#include <fmt/format.h>

#include <cmath>

namespace gyre::infer {

std::string validate_request(const GenerateRequest& req, const RequestLimits& lim) {
  const SamplingParams& sp = req.sampling;
  const int64_t L = int64_t(req.input_ids.size());
  if (L == 0) return "input_ids is empty: a prompt needs at least one token";
  for (int64_t i = 0; i < L; ++i) {
    int32_t t = req.input_ids[size_t(i)];
    if (t < 0 || t >= lim.vocab_size)
      return fmt::format(
          "input_ids[{}] = {} is out of range: token ids must be in [0, {}) for this "
          "model's vocabulary",
          i, t, lim.vocab_size);
  }
  if (sp.max_new_tokens < 0)
    return fmt::format("sampling_params.max_new_tokens = {} must be >= 0", sp.max_new_tokens);
  if (L + int64_t(sp.max_new_tokens) > lim.context_len)
    return fmt::format(
        "prompt ({} tokens) + max_new_tokens ({}) = {} exceeds the context length "
        "{}: shorten the prompt or lower max_new_tokens",
        L, sp.max_new_tokens, L + sp.max_new_tokens, lim.context_len);
  if (L + int64_t(sp.max_new_tokens) > lim.kv_capacity_tokens)
    return fmt::format(
        "prompt ({} tokens) + max_new_tokens ({}) needs more KV memory than the "
        "whole pool holds ({} tokens): raise --num-pages or lower max_new_tokens",
        L, sp.max_new_tokens, lim.kv_capacity_tokens);
  if (!(sp.temperature >= 0) || std::isinf(sp.temperature))
    return fmt::format("sampling_params.temperature = {} must be a finite number >= 0 (0 = greedy)",
                       sp.temperature);
  if (!(sp.top_p > 0 && sp.top_p <= 1))
    return fmt::format("sampling_params.top_p = {} must be in (0, 1]", sp.top_p);
  if (sp.top_k < -1)
    return fmt::format("sampling_params.top_k = {} must be -1 (whole vocabulary) or >= 1",
                       sp.top_k);
  if (!(sp.min_p >= 0 && sp.min_p <= 1))
    return fmt::format("sampling_params.min_p = {} must be in [0, 1]", sp.min_p);
  if (!(sp.repetition_penalty > 0 && sp.repetition_penalty <= 2))
    return fmt::format("sampling_params.repetition_penalty = {} must be in (0, 2]",
                       sp.repetition_penalty);
  if (!(sp.frequency_penalty >= -2 && sp.frequency_penalty <= 2))
    return fmt::format("sampling_params.frequency_penalty = {} must be in [-2, 2]",
                       sp.frequency_penalty);
  if (!(sp.presence_penalty >= -2 && sp.presence_penalty <= 2))
    return fmt::format("sampling_params.presence_penalty = {} must be in [-2, 2]",
                       sp.presence_penalty);
  if (sp.min_new_tokens < 0 || sp.min_new_tokens > sp.max_new_tokens)
    return fmt::format("sampling_params.min_new_tokens = {} must be in [0, max_new_tokens = {}]",
                       sp.min_new_tokens, sp.max_new_tokens);
  if (sp.n < 1) return fmt::format("sampling_params.n = {} must be >= 1", sp.n);
  for (size_t i = 0; i < sp.stop.size(); ++i)
    if (sp.stop[i].empty())
      return fmt::format("sampling_params.stop[{}] is an empty string: remove it", i);
  for (size_t i = 0; i < sp.stop_token_ids.size(); ++i) {
    int32_t t = sp.stop_token_ids[i];
    if (t < 0 || t >= lim.vocab_size)
      return fmt::format("sampling_params.stop_token_ids[{}] = {} is out of range [0, {})", i, t,
                         lim.vocab_size);
  }
  if (req.logprob_start_len < -1 || req.logprob_start_len >= L)
    return fmt::format(
        "logprob_start_len = {} must be -1 (outputs only) or in [0, {}) (the prompt "
        "length)",
        req.logprob_start_len, L);
  if (req.top_logprobs_num < 0 || req.top_logprobs_num > lim.vocab_size)
    return fmt::format("top_logprobs_num = {} must be in [0, {}]", req.top_logprobs_num,
                       lim.vocab_size);
  return {};
}

}  // namespace gyre::infer
