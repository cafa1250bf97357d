// Tree-walking evaluator for parsed Jinja templates, with Jinja's runtime semantics: lexical
// scopes (for-loop bodies, macros and with-blocks do not leak assignments; namespace() objects are
// how state crosses them), default Undefined (missing names/attributes/items are undefined, print
// as "", are falsy and iterate as empty; using them in arithmetic or accessing their attributes
// fails with "'x' is undefined"), Python arithmetic and comparison rules.
// Invariants: every runtime error is a gyre::Error "<origin>:<line>:<col>: <what>"; macro
// recursion, loop iterations, range() sizes and the output size are bounded by RenderLimits so
// hostile templates fail instead of hanging or exhausting memory.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>

#include "gyre/tokenizer/jinja/ast.h"
#include "gyre/tokenizer/jinja/value.h"

namespace gyre::tokenizer::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t(256) << 20;
  int max_call_depth = 200;
  int64_t max_loop_iterations = 10'000'000;
  int64_t max_range = 1'000'000;
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* lookup(const std::string& name) const;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  Interpreter(const std::string& origin, const RenderLimits& limits);

  // Renders `body` with the variables of `context` (a dict) layered over the globals (range,
  // namespace, raise_exception, strftime_now, dict, ...).
  std::string render(const Body& body, const Value& context);

  // ---- services for filters, tests, globals and methods (builtins.cc, methods.cc) ----
  [[noreturn]] void fail(const std::string& message) const;
  Value call(const Value& fn, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
  bool apply_test(const std::string& name, const Value& input, CallArgs& args);
  Value get_attr(const Value& obj, const std::string& name);
  Value get_item(const Value& obj, const Value& key);
  // Items of an iterable (list items, dict keys, string characters; undefined -> empty).
  List iterate(const Value& v);
  // Throws if a string or list of `bytes` would pass the output limit.
  void check_size(size_t bytes) const;
  void count_iterations(int64_t n);
  const RenderLimits& limits() const { return limits_; }
  // Fails with the undefined value's own message ("'x' is undefined") when v is undefined.
  void require_defined(const Value& v) const;

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out);
  void exec_for(const Stmt& s, const ScopePtr& scope, std::string& out);
  void assign(const ScopePtr& scope, const std::vector<std::string>& targets, const Value& v);
  Value eval(const Expr& e, const ScopePtr& scope);
  Value eval_binary(const Expr& e, const ScopePtr& scope);
  Value eval_compare(const Expr& e, const ScopePtr& scope);
  Value eval_filter(const Expr& e, const ScopePtr& scope, const Value* piped);
  Value eval_call(const Expr& e, const ScopePtr& scope, const Value* caller);
  void eval_args(const Expr& e, size_t first, const ScopePtr& scope, CallArgs& args);
  Value make_macro(const Stmt& s, const ScopePtr& scope);
  ScopePtr live_scope(const std::weak_ptr<Scope>& def, const std::string& name) const;
  Value call_macro(const Stmt& s, const Body& body, const std::vector<MacroParam>& params,
                   const ScopePtr& def_scope, CallArgs& args);
  void at(uint32_t line, uint32_t col) {
    line_ = line;
    col_ = col;
  }
  void append(std::string& out, std::string_view s) const;

  std::string origin_;
  RenderLimits limits_;
  uint32_t line_ = 0, col_ = 0;
  int call_depth_ = 0;
  int64_t iterations_ = 0;
};

// ---- tables in builtins.cc / methods.cc ----
using FilterFn = Value (*)(Interpreter&, const Value& input, CallArgs& args);
using TestFn = bool (*)(Interpreter&, const Value& input, CallArgs& args);
const std::unordered_map<std::string, FilterFn>& builtin_filters();
const std::unordered_map<std::string, TestFn>& builtin_tests();
// range, namespace, dict, raise_exception, strftime_now, joiner, cycler-free set of globals.
void install_globals(Scope& scope);
// A bound method (str/list/dict methods Python exposes and templates call), or undefined.
Value get_method(Interpreter& interp, const Value& obj, const std::string& name);

}  // namespace gyre::tokenizer::jinja
