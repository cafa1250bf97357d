// libFuzzer target: arbitrary bytes as a Jinja template, parsed and rendered against a fixed
// chat-like context. Any gyre::Error is an accepted outcome; crashes, sanitizer reports, hangs and
// unbounded memory are bugs. Render limits are tightened so every input finishes quickly.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/template.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "You are helpful."},
                 {"role": "user", "content": "Hi <think>é</think>"},
                 {"role": "assistant", "content": "", "tool_calls": [
                   {"type": "function", "function": {"name": "f", "arguments": {"x": [1, 2.5]}}}]},
                 {"role": "tool", "content": "42"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "n": 3, "f": 1.5, "none": null})");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  using namespace gyre::tokenizer::jinja;
  TemplateOptions opt;
  opt.limits.max_output_bytes = 1 << 16;
  opt.limits.max_call_depth = 32;
  opt.limits.max_loop_iterations = 20'000;
  opt.limits.max_range = 10'000;
  try {
    Template t = Template::parse(std::string_view(reinterpret_cast<const char*>(data), size), opt);
    (void)t.render(context());
  } catch (const gyre::Error&) {
  }
  return 0;
}
