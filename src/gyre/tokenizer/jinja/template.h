// Public entry point of the Jinja interpreter: parse once, render many times.
//   auto t = jinja::Template::parse(source);            // throws gyre::Error "origin:line:col:
//   ..." std::string s = t.render(nlohmann::ordered_json{{"messages", msgs}});
// Defaults match how transformers renders chat templates: trim_blocks=True, lstrip_blocks=True,
// no autoescape, loop controls (break/continue) on, tojson = json.dumps(ensure_ascii=False).
// Unknown filters and tests are reported at parse time with their position, like Jinja's compiler.
// A Template is immutable after parse and may be rendered from several threads at once.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "gyre/tokenizer/jinja/ast.h"
#include "gyre/tokenizer/jinja/interpreter.h"
#include "gyre/tokenizer/jinja/lexer.h"
#include "gyre/tokenizer/jinja/value.h"

namespace gyre::tokenizer::jinja {

struct TemplateOptions {
  LexerOptions lexer;
  RenderLimits limits;
  std::string origin = "template";  // prefix of error messages (e.g. a file path)
};

class Template {
 public:
  static Template parse(std::string_view source, const TemplateOptions& options = {});
  // `context` must be a dict (or undefined/none for no variables).
  std::string render(const Value& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const Body> body_;
  TemplateOptions options_;
};

}  // namespace gyre::tokenizer::jinja
