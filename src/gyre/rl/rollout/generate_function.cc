#include "gyre/rl/rollout/generate_function.h"

#include <dlfcn.h>

#include "gyre/core/error.h"

namespace gyre::rl {

std::vector<Sample> single_turn_generate(Sample s, const GenerateContext& ctx) {
  // A group returned to the buffer after an abort may hold samples that had already finished:
  // they are handed out again as they are.
  if (s.status == SampleStatus::completed || s.status == SampleStatus::truncated)
    return {std::move(s)};
  if (s.tokens.empty()) {
    if (!s.prompt.is_string())
      GYRE_THROW(invalid_argument,
                 "sample {}: prompt is not a string; chat-message prompts need "
                 "--apply-chat-template",
                 s.index.value_or(-1));
    s.tokens = ctx.tokenizer->encode(s.prompt.get<std::string>(), false);
    s.response_length = 0;
  }
  if (s.tokens.empty()) {
    s.status = SampleStatus::failed;
    s.metadata["error"] = "empty prompt after tokenization";
    return {std::move(s)};
  }
  const int64_t budget = int64_t(ctx.sampling.max_new_tokens) - s.response_length;
  if (budget <= 0) {  // slime: max_new_tokens reaching 0 -> TRUNCATED without a request
    s.status = SampleStatus::truncated;
    return {std::move(s)};
  }
  if (ctx.is_aborting()) {
    s.status = SampleStatus::aborted;
    return {std::move(s)};
  }
  // Off-policy part of a continued partial rollout (slime --mask-offpolicy-in-partial-rollout).
  if (ctx.mask_offpolicy_in_partial_rollout && s.response_length > 0) {
    s.loss_mask.assign(size_t(s.response_length), 0);
  }
  infer::GenerateRequest req;
  req.input_ids = s.tokens;
  req.sampling = ctx.sampling;
  req.sampling.max_new_tokens = int32_t(budget);
  req.return_logprob = true;
  infer::GenerateResult r = ctx.client->generate(std::move(req)).get();
  if (!r.error.empty()) {
    s.status = SampleStatus::failed;
    s.metadata["error"] = r.error;
    return {std::move(s)};
  }
  if (!r.output_ids.empty()) {
    if (s.loss_mask.empty() && s.response_length > 0)
      s.loss_mask.assign(size_t(s.response_length), 1);
    s.append_response(r.output_ids, r.output_logprobs, /*trainable=*/true, "assistant", r.text);
  }
  s.apply_finish_reason(infer::finish_type_name(r.finish.type));
  s.weight_versions.push_back(std::to_string(r.weight_version));
  auto& pc = s.metadata["prefix_cache_info"];
  if (!pc.is_object()) pc = nlohmann::json::object();
  pc["cached_tokens"] = pc.value("cached_tokens", 0) + r.cached_tokens;
  pc["total_prompt_tokens"] = pc.value("total_prompt_tokens", 0) + r.prompt_tokens;
  return {std::move(s)};
}

GenerateFunction load_generate_function(const std::string& spec) {
  if (spec.empty()) return single_turn_generate;
  std::string path = spec, symbol = "gyre_generate";
  if (auto colon = spec.rfind(':'); colon != std::string::npos && colon > 0) {
    path = spec.substr(0, colon);
    symbol = spec.substr(colon + 1);
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle)
    GYRE_THROW(not_found, "--custom-generate-function-path: cannot load '{}': {}", path, dlerror());
  using Fn = void (*)(GenerateCall*);
  auto fn = reinterpret_cast<Fn>(dlsym(handle, symbol.c_str()));
  if (!fn)
    GYRE_THROW(not_found,
               "--custom-generate-function-path: '{}' has no symbol '{}' (declare it extern \"C\" "
               "void {}(gyre::rl::GenerateCall*))",
               path, symbol, symbol);
  return [fn](Sample s, const GenerateContext& ctx) {
    GenerateCall call;
    call.input = std::move(s);
    call.context = &ctx;
    fn(&call);
    if (call.outputs.empty())
      GYRE_THROW(invalid_argument, "custom generate function returned no samples");
    return std::move(call.outputs);
  };
}

}  // namespace gyre::rl
