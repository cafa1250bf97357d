// Abstract syntax tree of a parsed Jinja template. Nodes are plain tagged structs (one kind enum,
// a few generic fields) so the evaluator is one switch per node family.
// Invariant: every node records the line and column of the token it started at, for errors.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gyre/tokenizer/jinja/value.h"

namespace gyre::tokenizer::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // args: items
    kTuple,    // args: items (evaluates to a list)
    kDict,     // args: key0, value0, key1, value1, ...
    kUnary,    // name: "-", "+" or "not"; args[0]
    kBinary,   // name: operator (+ - * / // % ** ~ and or); args[0], args[1]
    kCompare,  // args: operands; ops: operators between them (== != < <= > >= in notin)
    kCond,     // args: then, condition, else (else may be null -> undefined)
    kGetAttr,  // args[0].name
    kGetItem,  // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (each bound may be null)
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs); args[0] null inside {% filter %}
    kTest,     // args[0] is [not] name(args[1..]); negated
  };
  Kind kind;
  uint32_t line = 0, col = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
  uint32_t height = 1;  // 1 + the tallest child: bounds evaluation recursion
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // branches: (condition, body); the else branch has a null condition
    kFor,          // targets in expr [if cond]: body [else else_body]
    kSet,          // targets (or attr_target.attr) = expr
    kSetBlock,     // {% set targets[0] [| filter] %}body{% endset %}; filter in expr
    kMacro,        // name(params): body
    kCallBlock,    // {% call[(params)] expr %}body{% endcall %}: body is the caller() macro
    kFilterBlock,  // {% filter expr %}body{% endfilter %}; expr is a filter chain over null
    kWith,         // {% with targets[i] = values[i] %}body{% endwith %}
    kBreak,
    kContinue,
    kGeneration,  // transformers' {% generation %}: renders its body unchanged
  };
  Kind kind;
  uint32_t line = 0, col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace: targets[0].attr = expr
  std::vector<ExprPtr> values;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::string name;
  std::vector<MacroParam> params;
};

}  // namespace gyre::tokenizer::jinja
