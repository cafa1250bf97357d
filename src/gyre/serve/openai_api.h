// OpenAI-compatible wire format (reference/sglang-api.md §2): /v1/chat/completions and
// /v1/completions bodies -> GenerateRequests (chat via the model's chat template), results ->
// response objects, and a per-choice streaming state machine that turns engine text increments
// into incremental deltas (reasoning_content split at <think>...</think>, Hermes tool calls).
// Pure functions and value types: no I/O, no engine.
//
// Invariants: choice index = prompt * n + sample; finish_reason is "tool_calls" whenever tool
// calls were parsed; concatenating the streamed content (and reasoning_content) deltas gives the
// non-streamed fields up to the whitespace that the parsers strip.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gyre/infer/types.h"
#include "gyre/tokenizer/tool_parser.h"

namespace gyre::tokenizer {
class Tokenizer;
class ChatTemplate;
}  // namespace gyre::tokenizer

namespace gyre::serve {

struct OpenAiContext {
  const tokenizer::Tokenizer* tok = nullptr;
  const tokenizer::ChatTemplate* chat_template = nullptr;
  int64_t context_len = 0;
  std::string served_model_name = "default";
  std::string tool_call_parser;  // "" (off) | "hermes" | "qwen25" | "qwen3"
  std::string reasoning_parser;  // "" (off) | "qwen3" | "deepseek-r1" | ...
  bool enable_cache_report = true;
};

// Throws gyre::Error(invalid_argument) for parser names this server cannot honour.
void check_parser_names(const std::string& tool_call_parser, const std::string& reasoning_parser);

struct OpenAiCall {
  bool chat = true;
  std::string model;
  std::vector<infer::GenerateRequest> requests;  // one per prompt
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage: a final usage chunk
  bool continuous_usage = false;  // stream_options.continuous_usage_stats
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool echo = false;                // completions: prepend the prompt text
  bool tools = false;               // parse tool calls out of the output
  bool separate_reasoning = false;  // split <think> into reasoning_content
  bool starts_in_reasoning = false;
  bool return_token_ids = false;          // SGLang extension: choice.token_ids
  std::vector<std::string> prompt_texts;  // what was rendered / sent (echo)
  size_t slots() const { return requests.size() * size_t(n); }
};

// Both take the raw body (chat re-reads messages/tools with key order kept, which `tojson` in
// chat templates shows). Errors: RequestError (400, naming the field).
OpenAiCall parse_chat_request(std::string_view body, const OpenAiContext& ctx);
OpenAiCall parse_completion_request(std::string_view body, const OpenAiContext& ctx);

// "stop" | "length" | "abort" | "tool_calls" (when calls were parsed).
std::string openai_finish_reason(const infer::FinishReason& f, bool has_tool_calls);
nlohmann::json matched_stop_json(const infer::FinishReason& f);

// Non-stream response ({id, object, created, model, choices, usage, metadata}).
nlohmann::json openai_response(const OpenAiCall& call, const OpenAiContext& ctx,
                               const std::vector<infer::GenerateResult>& results,
                               const std::string& id, int64_t created,
                               const std::string& weight_version);

nlohmann::json openai_usage(const OpenAiCall& call, const OpenAiContext& ctx,
                            const std::vector<infer::GenerateResult>& results);

// Streaming state of one choice.
class ChoiceStream {
 public:
  ChoiceStream(const OpenAiCall& call, const OpenAiContext& ctx, int32_t index);
  // Chunk objects (without the id/object/created/model envelope: see wrap) for an increment.
  std::vector<nlohmann::json> on_chunk(const infer::TokenChunk& c);
  // The closing chunk(s) carrying finish_reason.
  std::vector<nlohmann::json> on_done(const infer::GenerateResult& r);
  int32_t completion_tokens() const { return completion_tokens_; }

 private:
  std::vector<nlohmann::json> emit_text(const std::string& text, bool final);
  nlohmann::json choice(nlohmann::json delta) const;
  nlohmann::json logprobs_json(const std::vector<int32_t>& ids, const std::vector<float>& lps,
                               const std::vector<std::vector<infer::TopLogprob>>& top) const;

  const OpenAiCall& call_;
  const OpenAiContext& ctx_;
  int32_t index_;
  bool role_sent_ = false;
  bool in_reasoning_;
  bool reasoning_checked_start_ = false;
  bool after_reasoning_ = false;  // strip the whitespace after </think>
  std::string hold_;              // text held back (possible partial tag)
  std::unique_ptr<tokenizer::HermesToolCallStream> tools_;
  int32_t n_calls_ = 0;
  int32_t completion_tokens_ = 0;
  size_t text_offset_ = 0;
};

// Wraps a choice (or usage) into a chunk envelope.
nlohmann::json openai_chunk(const OpenAiCall& call, const std::string& id, int64_t created,
                            nlohmann::json choices, const nlohmann::json& usage = nullptr);

// Logprob rendering shared by stream and non-stream.
nlohmann::json chat_logprobs(const OpenAiContext& ctx, const std::vector<int32_t>& ids,
                             const std::vector<float>& lps,
                             const std::vector<std::vector<infer::TopLogprob>>& top, int32_t top_n);
nlohmann::json completion_logprobs(const OpenAiContext& ctx, const std::vector<int32_t>& ids,
                                   const std::vector<float>& lps,
                                   const std::vector<std::vector<infer::TopLogprob>>& top,
                                   int32_t top_n, size_t text_offset);

}  // namespace gyre::serve
