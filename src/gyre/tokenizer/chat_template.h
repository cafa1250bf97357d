// Chat templates of Hugging Face model folders, rendered by gyre's own Jinja interpreter exactly as
// transformers' `apply_chat_template(..., tokenize=False)` renders them.
// Where the template comes from (transformers' precedence): DIR/chat_template.jinja if present,
// else `chat_template` in DIR/tokenizer_config.json, either a string or a list of
// {"name", "template"}; named templates also come from DIR/additional_chat_templates/<name>.jinja.
// Which named template renders: the one asked for; else "tool_use" when tools are given and it
// exists; else "default" (transformers' rule).
// Render variables, as transformers passes them: messages, tools (none when absent),
// documents (none), add_generation_prompt, the special tokens of tokenizer_config.json
// (bos_token, eos_token, unk_token, pad_token, sep_token, cls_token, mask_token,
// additional_special_tokens; only those that are set), then the caller's kwargs (which override).
// Invariant: objects keep their key order (nlohmann::ordered_json), so `tojson` prints tool
// schemas in the order they were given, as Python dicts do.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gyre/tokenizer/jinja/template.h"

namespace gyre::tokenizer {

class ChatTemplate {
 public:
  // `name` selects a named template ("" = automatic choice at render time, see above).
  // Errors: no template in the folder (not_found), unreadable/invalid config (invalid_argument,
  // naming the file), template syntax errors (file:line:column).
  static ChatTemplate from_dir(const std::string& dir, const std::string& name = "");
  // One template from its source text; special_tokens is a JSON object like
  // {"bos_token": "<s>", "eos_token": "</s>"} (values may also be {"content": ...} objects).
  static ChatTemplate from_string(const std::string& source,
                                  const nlohmann::ordered_json& special_tokens = nullptr,
                                  const std::string& origin = "chat_template");

  // messages: array of {role, content, ...}; tools: array or null; kwargs: object (or null) of
  // extra variables such as {"enable_thinking": false}. A plain nlohmann::json converts
  // implicitly (its objects are key-sorted, so prefer ordered_json where order shows).
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                     bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const;

  // Names of the available templates ("default" for a single unnamed one).
  std::vector<std::string> names() const;
  const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }

 private:
  const jinja::Template& pick(bool has_tools) const;

  std::map<std::string, jinja::Template> templates_;
  std::string requested_;
  std::string origin_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
};

}  // namespace gyre::tokenizer
