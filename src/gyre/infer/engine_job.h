// Engine-private per-request state (the scheduler's Request::user points here): sampling seed,
// collected log-probs, the streaming detokenizer and stop-string matcher, callbacks.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/infer/engine.h"
#include "gyre/infer/stop.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::infer {

struct Engine::Job {
  GenerateRequest req;
  RequestCallbacks cb;
  std::string base_rid;  // the submitted rid (n > 1 expands into "<base>-<i>")
  int32_t index = 0;
  uint64_t seed = 0;
  double submit_time = 0;
  std::vector<int32_t> stop_ids;  // eos (unless ignore_eos) + stop_token_ids: masked < min_new
  std::vector<float> logprobs;
  std::vector<std::vector<TopLogprob>> top;
  std::vector<float> input_logprobs;  // [prompt_len - logprob_start_len], first NaN at start 0
  std::vector<std::vector<TopLogprob>> input_top;
  std::unique_ptr<tokenizer::IncrementalDetokenizer> detok;
  StopStringMatcher stop;
  size_t streamed_ids = 0;
  Job(std::vector<std::string> stops, bool no_stop_trim) : stop(std::move(stops), no_stop_trim) {}
};

// The engine's state of a request it admitted (Request::user).
inline Engine::Job& job_of(const Request* r) { return *static_cast<Engine::Job*>(r->user); }

}  // namespace gyre::infer
