// SGLang-native /generate wire format (reference/sglang-api.md §1.1-1.4): request body ->
// GenerateRequests, GenerateResults -> response JSON (non-stream objects and cumulative stream
// chunks). Pure functions: no I/O, no engine; the server and the fuzzer call them.
//
// Invariants: a parsed GenerateCall holds one GenerateRequest per prompt, each with the same n;
// results are addressed by slot = prompt * n + sample (SGLang's order for batch x n); the response
// is an array iff the input was a batch or n > 1. output_token_logprobs has one [logprob, id,
// text|null] triple per output id (the training tokens must equal output_ids).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gyre/infer/types.h"

namespace gyre::tokenizer {
class Tokenizer;
}

namespace gyre::serve {

struct GenerateCall {
  std::vector<infer::GenerateRequest> requests;  // one per prompt
  bool batch = false;                            // the response is a JSON array
  bool stream = false;
  bool return_logprob = false;
  bool return_text_in_logprobs = false;
  int32_t n = 1;
  size_t slots() const { return requests.size() * size_t(n); }
};

// Parses a /generate body. Exactly one of text | input_ids; text needs `tok` (else 400 saying so).
// Wrong types or values -> RequestError(400) naming the field; multimodal/constrained-decoding
// fields that this engine does not implement -> 400 naming them (never silently ignored); a field
// that is not one of SGLang's GenerateReqInput fields is ignored, as SGLang ignores it, and named
// once in the server log. An unknown sampling_params key is a 400 (SGLang raises on it too).
GenerateCall parse_generate(const nlohmann::json& body, const tokenizer::Tokenizer* tok);

// SGLang sampling_params (dict) over `base`. `path` prefixes field names in errors. A key that is
// not a sampling parameter -> RequestError(400) naming it and listing the known ones.
infer::SamplingParams parse_sampling_params(const nlohmann::json& sp, const std::string& path,
                                            infer::SamplingParams base = {});

// The one list of sampling_params keys, shared by /generate and `gyre generate`: SGLang's
// SamplingParams fields (reference/sglang-api.md §1.2). SamplingParams(**dict) raises on any other
// key, and a misspelt key must not quietly sample with the default. The unsupported ones
// (constrained decoding, logit_bias, custom_params, stop_regex) are known but refused.
bool is_sampling_param_key(std::string_view key);
bool is_unsupported_sampling_param_key(std::string_view key);
// The supported keys, comma-separated, for error messages.
std::string supported_sampling_param_keys();

// {"type":"stop","matched":...} | {"type":"length","length":n} | {"type":"abort","message":...}
// | null (unfinished).
nlohmann::json finish_reason_json(const infer::FinishReason& f, int32_t completion_tokens);

struct ResultFormat {
  bool return_logprob = false;
  bool text_in_logprobs = false;
  int32_t top_logprobs_num = 0;
  int32_t logprob_start_len = -1;
  const std::vector<int32_t>* input_ids = nullptr;  // for input_token_logprobs ids
  const tokenizer::Tokenizer* tok = nullptr;        // text of tokens (return_text_in_logprobs)
  std::string weight_version;                       // label reported in meta_info
};

// One /generate result object. `finished` = false renders a stream chunk (finish_reason null).
nlohmann::json generate_result_json(const infer::GenerateResult& r, const ResultFormat& fmt,
                                    bool finished);

// Appends a streamed increment to a cumulative result (SGLang's default streaming is cumulative).
void accumulate_chunk(infer::GenerateResult& acc, const infer::TokenChunk& c);

// "data: <json>\n\n"
std::string sse_event(const nlohmann::json& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace gyre::serve
