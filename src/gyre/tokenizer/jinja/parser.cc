// Jinja parser (see parser.h). Recursive descent mirroring the structure of Jinja's own parser so
// that precedence and the quirks templates rely on (filters bind to the unary operand, `~` binds
// tighter than + and -, `is` takes one bare argument) come out the same.
#include "gyre/tokenizer/jinja/parser.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "gyre/core/error.h"

namespace gyre::tokenizer::jinja {
namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& toks, const std::string& origin) : t_(toks), origin_(origin) {}

  Body parse_template() {
    std::string end;
    Body b = parse_body({}, &end);
    return b;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t n = 1) const { return t_[std::min(i_ + n, t_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::kOp && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == TokenType::kName && cur().value == n; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    advance();
    return true;
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case TokenType::kName:
      case TokenType::kOp: return "'" + t.value + "'";
      case TokenType::kString: return "string literal";
      case TokenType::kInt:
      case TokenType::kFloat: return "number " + t.value;
      case TokenType::kText: return "template text";
      default: return token_type_name(t.type);
    }
  }
  [[noreturn]] void fail(const Token& t, const std::string& msg) const {
    GYRE_THROW(invalid_argument, "{}:{}:{}: template syntax error: {}", origin_, t.line, t.col,
               msg);
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(cur(), fmt::format("expected '{}', found {}", op, describe(cur())));
  }
  std::string expect_name(const char* what) {
    if (cur().type != TokenType::kName)
      fail(cur(), fmt::format("expected {}, found {}", what, describe(cur())));
    std::string n = cur().value;
    advance();
    return n;
  }
  void expect_block_end(const char* tag) {
    if (cur().type != TokenType::kBlockEnd)
      fail(cur(), fmt::format("expected '%}}' to close '{}', found {}", tag, describe(cur())));
    advance();
  }
  struct DepthGuard {
    DepthGuard(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxParseDepth)
        p_.fail(p_.cur(), fmt::format("nesting deeper than {} levels", kMaxParseDepth));
    }
    ~DepthGuard() { --p_.depth_; }
    Parser& p_;
  };
  ExprPtr node(Expr::Kind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }

  // ---- statements ----
  // Parses until `{% name` with name in `ends`; leaves the stream after that name and stores it.
  Body parse_body(const std::vector<std::string>& ends, std::string* end_found) {
    DepthGuard g(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case TokenType::kEof:
          if (!ends.empty())
            fail(t, fmt::format("unexpected end of template; expected '{{% {} %}}'", ends.back()));
          return body;
        case TokenType::kText: {
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kText;
          s->line = t.line;
          s->col = t.col;
          s->text = t.value;
          body.push_back(std::move(s));
          advance();
          break;
        }
        case TokenType::kVarBegin: {
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kOutput;
          s->line = t.line;
          s->col = t.col;
          advance();
          s->expr = parse_tuple(true);
          if (cur().type != TokenType::kVarEnd)
            fail(cur(), fmt::format("expected '}}}}' to close '{{{{', found {}", describe(cur())));
          advance();
          body.push_back(std::move(s));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name = peek();
          if (name.type == TokenType::kName) {
            for (const auto& e : ends) {
              if (name.value == e) {
                advance();
                advance();
                *end_found = e;
                return body;
              }
            }
          }
          advance();
          body.push_back(parse_statement(t));
          break;
        }
        default: fail(t, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  StmtPtr parse_statement(const Token& begin) {
    const Token& t = cur();
    if (t.type != TokenType::kName)
      fail(t, fmt::format("expected a tag name, found {}", describe(t)));
    auto s = std::make_unique<Stmt>();
    s->line = begin.line;
    s->col = begin.col;
    const std::string tag = t.value;
    advance();
    if (tag == "if") {
      s->kind = Stmt::Kind::kIf;
      ExprPtr cond = parse_tuple(false);
      expect_block_end("if");
      while (true) {
        std::string end;
        Body b = parse_body({"elif", "else", "endif"}, &end);
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "endif") break;
        if (end == "elif") {
          cond = parse_tuple(false);
          expect_block_end("elif");
        } else {
          expect_block_end("else");
          std::string end2;
          Body eb = parse_body({"endif"}, &end2);
          s->branches.emplace_back(nullptr, std::move(eb));
          break;
        }
      }
      expect_block_end("endif");
    } else if (tag == "for") {
      s->kind = Stmt::Kind::kFor;
      s->targets = parse_targets();
      if (!accept_name("in"))
        fail(cur(), fmt::format("expected 'in' in for loop, found {}", describe(cur())));
      s->expr = parse_tuple(false, /*allow_cond=*/false);
      if (accept_name("if")) s->cond = parse_tuple(false);
      if (is_name("recursive"))
        fail(cur(),
             "recursive for loops are not supported; rewrite with a macro that calls itself");
      expect_block_end("for");
      std::string end;
      s->body = parse_body({"else", "endfor"}, &end);
      if (end == "else") {
        expect_block_end("else");
        s->else_body = parse_body({"endfor"}, &end);
      }
      expect_block_end("endfor");
    } else if (tag == "set") {
      s->targets = parse_targets();
      if (s->targets.size() == 1 && accept_op(".")) s->attr = expect_name("an attribute name");
      if (accept_op("=")) {
        s->kind = Stmt::Kind::kSet;
        s->expr = parse_tuple(false);
        expect_block_end("set");
      } else {
        s->kind = Stmt::Kind::kSetBlock;
        if (s->targets.size() != 1 || !s->attr.empty())
          fail(cur(), "a block set ('{% set x %}...{% endset %}') assigns exactly one plain name");
        if (is_op("|")) s->expr = parse_filter_chain(nullptr);
        expect_block_end("set");
        std::string end;
        s->body = parse_body({"endset"}, &end);
        expect_block_end("endset");
      }
    } else if (tag == "macro") {
      s->kind = Stmt::Kind::kMacro;
      s->name = expect_name("a macro name");
      s->params = parse_params();
      expect_block_end("macro");
      std::string end;
      s->body = parse_body({"endmacro"}, &end);
      expect_block_end("endmacro");
    } else if (tag == "call") {
      s->kind = Stmt::Kind::kCallBlock;
      if (is_op("(")) s->params = parse_params();
      s->expr = parse_expression();
      if (s->expr->kind != Expr::Kind::kCall)
        fail(t, "'{% call %}' needs a call expression, e.g. {% call m(1) %}");
      expect_block_end("call");
      std::string end;
      s->body = parse_body({"endcall"}, &end);
      expect_block_end("endcall");
    } else if (tag == "filter") {
      s->kind = Stmt::Kind::kFilterBlock;
      s->expr = parse_filter_chain(nullptr, /*leading_pipe=*/false);
      expect_block_end("filter");
      std::string end;
      s->body = parse_body({"endfilter"}, &end);
      expect_block_end("endfilter");
    } else if (tag == "with") {
      s->kind = Stmt::Kind::kWith;
      while (cur().type != TokenType::kBlockEnd) {
        if (!s->targets.empty()) expect_op(",");
        s->targets.push_back(expect_name("a variable name"));
        expect_op("=");
        s->values.push_back(parse_expression());
      }
      expect_block_end("with");
      std::string end;
      s->body = parse_body({"endwith"}, &end);
      expect_block_end("endwith");
    } else if (tag == "break" || tag == "continue") {
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      expect_block_end(tag.c_str());
    } else if (tag == "generation") {
      s->kind = Stmt::Kind::kGeneration;
      expect_block_end("generation");
      std::string end;
      s->body = parse_body({"endgeneration"}, &end);
      expect_block_end("endgeneration");
    } else if (tag == "include" || tag == "extends" || tag == "import" || tag == "from" ||
               tag == "block") {
      fail(t, fmt::format("'{{% {} %}}' is not supported: a chat template must be a single file",
                          tag));
    } else {
      fail(t, fmt::format("unknown tag '{}' (or a stray end tag without its opening tag)", tag));
    }
    return s;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = accept_op("(");
    names.push_back(expect_name("a variable name"));
    while (accept_op(",")) {
      if (cur().type != TokenType::kName) break;
      names.push_back(expect_name("a variable name"));
    }
    if (paren) expect_op(")");
    return names;
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name("a parameter name");
      if (accept_op("=")) p.default_value = parse_expression();
      params.push_back(std::move(p));
    }
    expect_op(")");
    return params;
  }

  // `| f(args) | g` (or `f(args) | g` for {% filter %}) applied to `operand` (may be null).
  ExprPtr parse_filter_chain(ExprPtr operand, bool leading_pipe = true) {
    bool first = true;
    while ((first && !leading_pipe) || accept_op("|")) {
      first = false;
      operand = parse_filter(std::move(operand));
    }
    return operand;
  }

  // ---- expressions ----
  // A comma-separated list becomes a tuple (e.g. {{ a, b }} or `for x in a, b`).
  ExprPtr parse_tuple(bool explicit_parens, bool allow_cond = true) {
    const Token& at = cur();
    std::vector<ExprPtr> items;
    bool saw_comma = false;
    while (true) {
      if (!items.empty()) {
        if (!accept_op(",")) break;
        saw_comma = true;
      }
      if (cur().type == TokenType::kVarEnd || cur().type == TokenType::kBlockEnd || is_op(")"))
        break;
      items.push_back(allow_cond ? parse_expression() : parse_or());
    }
    if (items.empty()) {
      if (!explicit_parens)
        fail(cur(), fmt::format("expected an expression, found {}", describe(cur())));
      return node(Expr::Kind::kTuple, at);
    }
    if (!saw_comma) return std::move(items[0]);
    auto e = node(Expr::Kind::kTuple, at);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression() {
    DepthGuard g(*this);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      const Token& at = cur();
      advance();
      auto c = node(Expr::Kind::kCond, at);
      ExprPtr cond = parse_or();
      ExprPtr otherwise = accept_name("else") ? parse_expression() : nullptr;
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(otherwise));
      e = bounded(std::move(c));
    }
    return e;
  }

  // Left-associative chains (a + b + c ..., a.b.c ..., x | f | g ...) are built in loops, not by
  // recursion, so their height is checked here to keep evaluation recursion bounded.
  ExprPtr bounded(ExprPtr e) {
    uint32_t h = 0;
    for (const auto& a : e->args)
      if (a) h = std::max(h, a->height);
    for (const auto& [k, v] : e->kwargs) h = std::max(h, v->height);
    e->height = h + 1;
    if (e->height > uint32_t(kMaxParseDepth) * 4)
      fail(cur(), fmt::format("expression nested deeper than {} levels", kMaxParseDepth * 4));
    return e;
  }

  ExprPtr binary(const Token& at, const std::string& op, ExprPtr l, ExprPtr r) {
    auto e = node(Expr::Kind::kBinary, at);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return bounded(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      const Token& at = cur();
      advance();
      l = binary(at, "or", std::move(l), parse_and());
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      const Token& at = cur();
      advance();
      l = binary(at, "and", std::move(l), parse_not());
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(*this);
      const Token& at = cur();
      advance();
      auto e = node(Expr::Kind::kUnary, at);
      e->name = "not";
      e->args.push_back(parse_not());
      return bounded(std::move(e));
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == TokenType::kOp &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
           cur().value == "<=" || cur().value == ">" || cur().value == ">=")) {
        op = cur().value;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == TokenType::kName && peek().value == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Kind::kCompare, at);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? bounded(std::move(cmp)) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = cur();
      std::string op = at.value;
      advance();
      l = binary(at, op, std::move(l), parse_concat());
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      const Token& at = cur();
      advance();
      l = binary(at, "~", std::move(l), parse_math2());
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = cur();
      std::string op = at.value;
      advance();
      l = binary(at, op, std::move(l), parse_pow());
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      const Token& at = cur();
      advance();
      l = binary(at, "**", std::move(l), parse_unary(true));
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard g(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& at = cur();
      advance();
      e = node(Expr::Kind::kUnary, at);
      e->name = at.value;
      e->args.push_back(parse_unary(false));
      e = bounded(std::move(e));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case TokenType::kName: {
        advance();
        auto e = node(Expr::Kind::kLiteral, t);
        if (t.value == "true" || t.value == "True")
          e->literal = Value(true);
        else if (t.value == "false" || t.value == "False")
          e->literal = Value(false);
        else if (t.value == "none" || t.value == "None")
          e->literal = Value::none();
        else {
          e->kind = Expr::Kind::kName;
          e->name = t.value;
        }
        return e;
      }
      case TokenType::kString: {
        std::string s;
        while (cur().type == TokenType::kString) {  // adjacent literals concatenate, as in Python
          s += cur().value;
          advance();
        }
        auto e = node(Expr::Kind::kLiteral, t);
        e->literal = Value(std::move(s));
        return e;
      }
      case TokenType::kInt: {
        advance();
        auto e = node(Expr::Kind::kLiteral, t);
        int64_t v = 0;
        auto r = std::from_chars(t.value.data(), t.value.data() + t.value.size(), v);
        if (r.ec != std::errc())
          e->literal = Value(std::strtod(t.value.c_str(), nullptr));
        else
          e->literal = Value(v);
        return e;
      }
      case TokenType::kFloat: {
        advance();
        auto e = node(Expr::Kind::kLiteral, t);
        e->literal = Value(std::strtod(t.value.c_str(), nullptr));
        return e;
      }
      case TokenType::kOp: {
        if (t.value == "(") {
          advance();
          ExprPtr e = parse_tuple(true);
          expect_op(")");
          return e;
        }
        if (t.value == "[") {
          advance();
          auto e = node(Expr::Kind::kList, t);
          while (!is_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("]")) break;
            e->args.push_back(parse_expression());
          }
          expect_op("]");
          return bounded(std::move(e));
        }
        if (t.value == "{") {
          advance();
          auto e = node(Expr::Kind::kDict, t);
          while (!is_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("}")) break;
            e->args.push_back(parse_expression());
            expect_op(":");
            e->args.push_back(parse_expression());
          }
          expect_op("}");
          return bounded(std::move(e));
        }
        break;
      }
      default: break;
    }
    fail(t, fmt::format("expected an expression, found {}", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const Token& at = cur();
      if (is_op(".")) {
        advance();
        if (cur().type == TokenType::kName) {
          auto g = node(Expr::Kind::kGetAttr, at);
          g->name = cur().value;
          advance();
          g->args.push_back(std::move(e));
          e = bounded(std::move(g));
        } else if (cur().type == TokenType::kInt) {  // `x.0` is x[0]
          auto g = node(Expr::Kind::kGetItem, at);
          auto idx = node(Expr::Kind::kLiteral, cur());
          idx->literal = Value(int64_t(std::strtoll(cur().value.c_str(), nullptr, 10)));
          advance();
          g->args.push_back(std::move(e));
          g->args.push_back(std::move(idx));
          e = bounded(std::move(g));
        } else {
          fail(cur(),
               fmt::format("expected an attribute name after '.', found {}", describe(cur())));
        }
      } else if (is_op("[")) {
        advance();
        e = bounded(parse_subscript(at, std::move(e)));
      } else if (is_op("(")) {
        e = bounded(parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(const Token& at, ExprPtr obj) {
    ExprPtr parts[3];
    int n = 0;
    bool is_slice = false;
    while (true) {
      if (is_op("]")) break;
      if (is_op(":")) {
        advance();
        is_slice = true;
        if (++n > 2) fail(cur(), "a slice has at most three parts, e.g. x[1:5:2]");
        continue;
      }
      if (parts[n])
        fail(cur(), fmt::format("expected ':' or ']' in subscript, found {}", describe(cur())));
      parts[n] = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      if (!parts[0]) fail(at, "empty subscript '[]'; write x[index]");
      auto g = node(Expr::Kind::kGetItem, at);
      g->args.push_back(std::move(obj));
      g->args.push_back(std::move(parts[0]));
      return g;
    }
    auto s = node(Expr::Kind::kSlice, at);
    s->args.push_back(std::move(obj));
    for (auto& p : parts) s->args.push_back(std::move(p));
    return s;
  }

  // `(a, b, k=v)`: appends positional arguments to e.args (after what is there) and kwargs.
  void call_args(Expr& e) {
    expect_op("(");
    int count = 0;
    while (!is_op(")")) {
      if (count > 0) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail(cur(), "*args / **kwargs in calls are not supported");
      ++count;
      if (cur().type == TokenType::kName && peek().type == TokenType::kOp && peek().value == "=") {
        std::string k = cur().value;
        advance();
        advance();
        e.kwargs.emplace_back(k, parse_expression());
      } else {
        if (!e.kwargs.empty()) fail(cur(), "positional argument after a keyword argument");
        e.args.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = node(Expr::Kind::kCall, cur());
    c->args.push_back(std::move(callee));
    call_args(*c);
    return c;
  }

  ExprPtr parse_filter(ExprPtr operand) {
    const Token& at = cur();
    auto f = node(Expr::Kind::kFilter, at);
    f->name = expect_name("a filter name");
    f->args.push_back(std::move(operand));
    if (is_op("(")) call_args(*f);
    return bounded(std::move(f));
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        advance();
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        const Token& at = cur();
        advance();
        auto t = node(Expr::Kind::kTest, at);
        t->negated = accept_name("not");
        t->name = expect_name("a test name");
        t->args.push_back(std::move(e));
        const Token& n = cur();
        if (is_op("(")) {
          call_args(*t);
        } else if ((n.type == TokenType::kName || n.type == TokenType::kString ||
                    n.type == TokenType::kInt || n.type == TokenType::kFloat || is_op("[") ||
                    is_op("{")) &&
                   !(n.type == TokenType::kName &&
                     (n.value == "else" || n.value == "or" || n.value == "and" || n.value == "if" ||
                      n.value == "not" || n.value == "in"))) {
          if (n.type == TokenType::kName && n.value == "is")
            fail(n, "tests cannot be chained ('x is a is b'); use 'and'");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = bounded(std::move(t));
      } else if (is_op("(")) {
        e = bounded(parse_call(std::move(e)));
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& t_;
  const std::string& origin_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens, const std::string& origin) {
  return Parser(tokens, origin).parse_template();
}

}  // namespace gyre::tokenizer::jinja
