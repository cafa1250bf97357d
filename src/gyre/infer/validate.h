// Request validation: every bad field becomes one clear message (what, the value, the allowed
// range, how to fix) that the engine returns in GenerateResult.error while it keeps serving others.
#pragma once
#include <cstdint>
#include <string>

#include "gyre/infer/types.h"

namespace gyre::infer {

struct RequestLimits {
  int64_t vocab_size = 0;
  int64_t context_len = 0;         // max prompt + generated tokens (model's max positions)
  int64_t kv_capacity_tokens = 0;  // whole KV pool: a request larger than this can never run
};

// Empty string when valid; otherwise the first problem found.
std::string validate_request(const GenerateRequest& req, const RequestLimits& limits);

}  // namespace gyre::infer
