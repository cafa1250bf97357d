// Tool-call parsing: model output text -> OpenAI chat message {content, tool_calls}.
//
// Supported: the Hermes / Qwen2.5 / Qwen3 format (SGLang's "qwen25" and vLLM's "hermes" parsers):
//   <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
// repeated for several calls, possibly after ordinary text. Not supported yet (each model family
// has its own tokens and grammar):
//   - Llama 3.x JSON: a bare {"name": ..., "parameters": {...}} object (optionally after
//     <|python_tag|>), several separated by ';'.
//   - Mistral: [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (v11+:
//   [TOOL_CALLS]name[ARGS]{...}).
//   - DeepSeek V3/R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name
//     ```json {...} ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>.
//   - GLM-4.5: <tool_call>name\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>...</tool_call>.
// Rules (SGLang's Qwen25Detector, plus keeping what fails): content is the text outside the
// tool-call blocks with surrounding whitespace stripped; a block whose body is not a JSON object
// with a string "name" stays in content verbatim and is reported in `errors`; an unterminated
// final block (generation cut off) is parsed if its JSON is complete, else kept as content.
// `arguments` is the JSON text of the arguments object as Python's json.dumps(ensure_ascii=False)
// prints it (what SGLang returns), or the string itself if the model wrote a string; "parameters"
// is accepted for "arguments". Call ids are deterministic ("call_" + 24 hex digits hashed from the
// call index, name and arguments) so trajectories are reproducible.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer {

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text
};

struct ParsedToolCalls {
  std::string content;
  std::vector<ToolCall> tool_calls;
  std::vector<std::string> errors;  // one line per block left in content, saying why
  // {"content": ..., "tool_calls": [{"id", "type": "function", "function": {"name",
  // "arguments"}}]}; content is null when empty and there are tool calls (OpenAI's convention).
  nlohmann::ordered_json to_openai() const;
};

ParsedToolCalls parse_hermes_tool_calls(std::string_view text);

// Incremental variant for streaming: feed text deltas; each push returns the content that can be
// shown now (text that cannot be the start of a "<tool_call>" tag) and the calls completed by this
// delta. Concatenating all pushes plus finish() gives the same calls as parse_hermes_tool_calls
// on the whole text, and the same content up to whitespace stripping.
class HermesToolCallStream {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCall> tool_calls;
    std::vector<std::string> errors;
  };
  Delta push(std::string_view text);
  Delta finish();

 private:
  Delta drain(bool final);
  std::string buf_;
  bool in_call_ = false;
  size_t n_calls_ = 0;
};

}  // namespace gyre::tokenizer
