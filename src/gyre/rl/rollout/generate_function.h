// The generate-function interface (slime's --custom-generate-function-path): one sample in, one or
// more samples out, with access to the rollout client, the tokenizer and the sampling parameters.
// The built-in single-turn function is one implementation; multi-turn agent functions append turns
// token-exactly with Sample::append_response (generated turns trainable with their log-probs, tool
// output not trainable), so no trajectory is ever re-tokenized.
//
// Plugins: a shared library exporting
//   extern "C" void gyre_generate(gyre::rl::GenerateCall* call);
// (or another symbol: --custom-generate-function-path path/to/lib.so:symbol). It reads call->input
// and call->context and fills call->outputs; a gyre::Error thrown inside marks the sample failed.
// The plugin must be built against the same gyre headers and compiler (C++ types cross the ABI).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gyre/infer/rollout_client.h"
#include "gyre/rl/sample.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

struct GenerateContext {
  infer::RolloutClient* client = nullptr;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  infer::SamplingParams sampling;  // from --rollout-* flags; max_new_tokens = max response length
  int64_t max_context_len = 0;     // --rollout-max-context-len (0 = the model's)
  int64_t rollout_id = 0;
  bool mask_offpolicy_in_partial_rollout = false;
  const std::atomic<bool>* aborting = nullptr;  // set when the rollout is being stopped
  bool is_aborting() const { return aborting && aborting->load(); }
};

using GenerateFunction = std::function<std::vector<Sample>(Sample, const GenerateContext&)>;

struct GenerateCall {
  Sample input;
  const GenerateContext* context = nullptr;
  std::vector<Sample> outputs;
};

// The default: prompt ids (sample.tokens when already set, e.g. a partial rollout, else the
// tokenizer's encoding of the prompt string without special tokens), one /generate call for the
// rest of the response budget, the response appended with its log-probs, status from finish reason.
std::vector<Sample> single_turn_generate(Sample sample, const GenerateContext& ctx);

// "" -> single_turn_generate; "path.so[:symbol]" -> the plugin (default symbol gyre_generate).
GenerateFunction load_generate_function(const std::string& spec);

}  // namespace gyre::rl
