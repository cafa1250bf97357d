// Request / result types of the rollout engine, shared by the engine (infer/), the HTTP server
// (serve/) and the RL rollout clients (rl/). Field names follow SGLang's /generate API
// (reference/sglang-api.md) so the server maps them one to one.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gyre::infer {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = -1;        // -1 or 0 = off
  float min_p = 0.0f;        // [0, 1]
  float repetition_penalty =
      1.0f;  // > 0; HF/SGLang style (divide positive logits, multiply negative)
  float presence_penalty = 0.0f;   // OpenAI style, subtracted once per seen output token id
  float frequency_penalty = 0.0f;  // OpenAI style, subtracted per occurrence in the output
  int32_t max_new_tokens = 128;    // >= 0
  int32_t min_new_tokens = 0;      // eos/stop tokens masked until this many were generated
  std::vector<std::string> stop;   // stop strings, matched on detokenized output text
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool no_stop_trim = false;        // keep the matched stop string in the text
  bool skip_special_tokens = true;  // for the returned text
  int32_t n = 1;                    // samples per prompt (>= 1)
  std::optional<uint64_t> seed;     // per-request Philox seed (SGLang: sampling_seed)
};

struct GenerateRequest {
  std::string rid;                 // unique id; generated when empty
  std::vector<int32_t> input_ids;  // the prompt (token in: the engine never re-tokenizes)
  SamplingParams sampling;
  bool return_logprob = false;  // per-output-token log-probs (always computed; returned on request)
  int32_t logprob_start_len = -1;  // >= 0: also return prompt log-probs from this position
  int32_t top_logprobs_num = 0;    // top-k log-probs per position
  bool stream = false;
  int32_t priority = 0;  // larger runs first when the scheduler's priority mode is on
};

enum class FinishType { none, stop, length, abort };
const char* finish_type_name(FinishType t);

struct FinishReason {
  FinishType type = FinishType::none;
  std::optional<int32_t> matched_token;    // stop by a token (eos or stop_token_ids)
  std::optional<std::string> matched_str;  // stop by a string
  std::string message;                     // abort: why (client abort, error text, ...)
};

struct TopLogprob {
  int32_t token_id;
  float logprob;
};

// One increment of a streamed generation (and the shape of the final result's cumulative fields).
struct TokenChunk {
  std::string rid;
  std::vector<int32_t> output_ids;     // new ids since the last chunk
  std::vector<float> output_logprobs;  // their log-probs (see GenerateResult)
  std::vector<std::vector<TopLogprob>> output_top_logprobs;
  std::string text;  // new text since the last chunk (never broken UTF-8)
};

struct GenerateResult {
  std::string rid;
  int32_t index = 0;  // which of the n samples
  std::vector<int32_t> output_ids;
  std::string text;
  // f32 log p(sampled token) under softmax(logits / temperature) over the full vocabulary, before
  // top-k/top-p/min-p truncation and penalties: exactly what the trainer recomputes (temperature 0
  // reports temperature-1 log-probs).
  std::vector<float> output_logprobs;
  std::vector<std::vector<TopLogprob>> output_top_logprobs;
  std::vector<float> input_logprobs;  // from logprob_start_len (first entry has no context: NaN)
  std::vector<std::vector<TopLogprob>> input_top_logprobs;
  FinishReason finish;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;   // prompt tokens served from the prefix cache
  int64_t weight_version = 0;  // weights the request finished on
  double e2e_latency = 0;      // seconds from submit to finish
  std::string error;           // non-empty: the request was rejected (bad input)
};

// Callbacks of one submitted request. on_chunk runs for each decoded increment when streaming;
// on_done runs exactly once, with the final result (also for an abort or an error). Both run on the
// engine thread: they must not block.
struct RequestCallbacks {
  std::function<void(const TokenChunk&)> on_chunk;
  std::function<void(GenerateResult&&)> on_done;
};

struct EngineStats {
  int32_t running = 0, queued = 0;
  int64_t total_pages = 0, free_pages = 0, page_size = 0;
  int64_t prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0;  // cumulative
  int64_t weight_version = 0;
  bool paused = false;
  double gen_tokens_per_s = 0;  // recent decode throughput
  // Cumulative wall seconds of the engine's step phases (where a step's time goes):
  // scheduling + batch building, the model forward (incl. copying logits rows to the host),
  // host sampling, and finishing rows (stop checks, streaming).
  double schedule_seconds = 0, forward_seconds = 0, sample_seconds = 0, finish_seconds = 0;
  // Decode steps launched by the look-ahead before their predecessor's tokens were read back
  // (EngineConfig::decode_look_ahead), and those whose row of a request that had just stopped
  // was computed and dropped.
  int64_t look_ahead_steps = 0, look_ahead_dropped_rows = 0;
};

// What the HTTP server and the in-process rollout client need from a running engine.
class EngineApi {
 public:
  virtual ~EngineApi() = default;
  // Validates and enqueues; n > 1 expands into n requests "<rid>-<i>"... each calling on_done once.
  // Invalid input is reported through on_done with `error` set (never thrown), engine keeps
  // serving.
  virtual void submit(GenerateRequest req, RequestCallbacks cb) = 0;
  virtual void abort(const std::string& rid) = 0;
  virtual void abort_all() = 0;
  virtual void pause() = 0;  // stop scheduling new steps; running requests keep their KV
  virtual void resume() = 0;
  virtual bool flush_cache() = 0;  // false while requests are running
  virtual EngineStats stats() const = 0;
  // Runs `apply` between engine steps with no forward in flight (the trainer's optimizer step on
  // the shared weights, or a reload from disk), then bumps weight_version and flushes the prefix
  // cache (its KV was computed with the old weights). Blocks until done; returns the new version.
  virtual int64_t update_weights(const std::function<void()>& apply) = 0;
  virtual int64_t weight_version() const = 0;
};

}  // namespace gyre::infer
