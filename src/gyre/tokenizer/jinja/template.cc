// Template: lex + parse + check filter/test names, then render through the Interpreter.
#include "gyre/tokenizer/jinja/template.h"

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/parser.h"

namespace gyre::tokenizer::jinja {
namespace {

// Jinja resolves filter and test names when compiling, so a misspelt filter fails even on a branch
// that never runs; do the same so template bugs surface on the first render attempt.
void check_names(const Expr* e, const std::string& origin) {
  if (!e) return;
  if (e->kind == Expr::Kind::kFilter && !builtin_filters().count(e->name))
    GYRE_THROW(invalid_argument,
               "{}:{}:{}: unknown filter '{}' (supported: Jinja's built-in filters and tojson)",
               origin, e->line, e->col, e->name);
  if (e->kind == Expr::Kind::kTest && !builtin_tests().count(e->name))
    GYRE_THROW(invalid_argument, "{}:{}:{}: unknown test '{}'", origin, e->line, e->col, e->name);
  for (const auto& a : e->args) check_names(a.get(), origin);
  for (const auto& [k, v] : e->kwargs) check_names(v.get(), origin);
}

void check_names(const Body& body, const std::string& origin) {
  for (const auto& s : body) {
    check_names(s->expr.get(), origin);
    check_names(s->cond.get(), origin);
    for (const auto& v : s->values) check_names(v.get(), origin);
    for (const auto& p : s->params) check_names(p.default_value.get(), origin);
    for (const auto& [c, b] : s->branches) {
      check_names(c.get(), origin);
      check_names(b, origin);
    }
    check_names(s->body, origin);
    check_names(s->else_body, origin);
  }
}

}  // namespace

Template Template::parse(std::string_view source, const TemplateOptions& options) {
  Template t;
  t.options_ = options;
  std::vector<Token> tokens = tokenize(source, options.lexer, options.origin);
  auto body = std::make_shared<Body>(jinja::parse(tokens, options.origin));
  check_names(*body, options.origin);
  t.body_ = std::move(body);
  return t;
}

std::string Template::render(const Value& context) const {
  if (!context.is_dict() && !context.is_undefined() && !context.is_none())
    GYRE_THROW(invalid_argument, "{}: render context must be a JSON object of variables, got {}",
               options_.origin, context.type_name());
  Interpreter interp(options_.origin, options_.limits);
  return interp.render(*body_, context);
}

std::string Template::render(const nlohmann::ordered_json& context) const {
  return render(Value::from_json(context));
}

}  // namespace gyre::tokenizer::jinja
