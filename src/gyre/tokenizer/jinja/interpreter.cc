// Jinja evaluator: statements, expressions, scoping, attribute/item access and operators
// (see interpreter.h). Filters, tests, globals and methods live in builtins.cc and methods.cc.
#include "gyre/tokenizer/jinja/interpreter.h"

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer::jinja {

const Value* Scope::lookup(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

Interpreter::Interpreter(const std::string& origin, const RenderLimits& limits)
    : origin_(origin), limits_(limits) {}

void Interpreter::fail(const std::string& message) const {
  GYRE_THROW(invalid_argument, "{}:{}:{}: {}", origin_, line_, col_, message);
}

void Interpreter::require_defined(const Value& v) const {
  if (v.is_undefined())
    fail(v.undefined_name().empty() ? "value is undefined" : v.undefined_name());
}

void Interpreter::check_size(size_t bytes) const {
  if (bytes > limits_.max_output_bytes)
    fail(fmt::format("value of {} bytes exceeds the render limit of {} bytes", bytes,
                     limits_.max_output_bytes));
}

void Interpreter::count_iterations(int64_t n) {
  iterations_ += n;
  if (iterations_ > limits_.max_loop_iterations)
    fail(fmt::format("more than {} loop iterations; the template does not terminate in bounds",
                     limits_.max_loop_iterations));
}

void Interpreter::append(std::string& out, std::string_view s) const {
  check_size(out.size() + s.size());
  out.append(s);
}

std::string Interpreter::render(const Body& body, const Value& context) {
  auto globals = std::make_shared<Scope>();
  install_globals(*globals);
  auto top = std::make_shared<Scope>();
  top->parent = globals;
  if (context.is_dict())
    for (const auto& [k, v] : context.as_dict().items()) top->vars[k] = v;
  std::string out;
  if (exec_body(body, top, out) != Flow::kNormal) fail("'break' or 'continue' outside a for loop");
  return out;
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const ScopePtr& scope,
                                         std::string& out) {
  for (const auto& s : body) {
    Flow f = exec(*s, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

void Interpreter::assign(const ScopePtr& scope, const std::vector<std::string>& targets,
                         const Value& v) {
  if (targets.size() == 1) {
    scope->vars[targets[0]] = v;
    return;
  }
  List items = iterate(v);
  if (items.size() != targets.size())
    fail(fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
  for (size_t i = 0; i < targets.size(); ++i) scope->vars[targets[i]] = items[i];
}

Interpreter::Flow Interpreter::exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
  at(s.line, s.col);
  switch (s.kind) {
    case Stmt::Kind::kText: append(out, s.text); break;
    case Stmt::Kind::kOutput: {
      Value v = eval(*s.expr, scope);
      append(out, v.str());
      break;
    }
    case Stmt::Kind::kIf:
      for (const auto& [cond, body] : s.branches) {
        if (!cond || eval(*cond, scope).truthy()) return exec_body(body, scope, out);
      }
      break;
    case Stmt::Kind::kFor: exec_for(s, scope, out); break;
    case Stmt::Kind::kSet: {
      Value v = eval(*s.expr, scope);
      if (s.attr.empty()) {
        assign(scope, s.targets, v);
        break;
      }
      at(s.line, s.col);
      const Value* ns = scope->lookup(s.targets[0]);
      if (!ns || !ns->is_namespace())
        fail(
            fmt::format("cannot assign attribute '{}' on '{}': only namespace() objects accept "
                        "'set x.attr = ...'; create it with {{% set {} = namespace() %}}",
                        s.attr, s.targets[0], s.targets[0]));
      if (reaches(v, ns->identity()))
        fail(fmt::format("cannot store namespace '{}' inside itself", s.targets[0]));
      ns->as_dict().set(s.attr, v);
      break;
    }
    case Stmt::Kind::kSetBlock: {
      std::string text;
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      if (exec_body(s.body, inner, text) != Flow::kNormal) fail("'break' inside a set block");
      Value v = Value(std::move(text)).mark_safe();
      if (s.expr) v = eval_filter(*s.expr, scope, &v);
      scope->vars[s.targets[0]] = v;
      break;
    }
    case Stmt::Kind::kMacro: scope->vars[s.name] = make_macro(s, scope); break;
    case Stmt::Kind::kCallBlock: {
      const Stmt* sp = &s;
      std::weak_ptr<Scope> def = scope;  // weak: the scope may hold this value (no cycle)
      Value caller = Value::function("caller", [this, sp, def](CallArgs& a, Interpreter&) {
        return call_macro(*sp, sp->body, sp->params, live_scope(def, "caller"), a);
      });
      Value v = eval_call(*s.expr, scope, &caller);
      append(out, v.str());
      break;
    }
    case Stmt::Kind::kFilterBlock: {
      std::string text;
      if (exec_body(s.body, scope, text) != Flow::kNormal) fail("'break' inside a filter block");
      Value v(std::move(text));
      append(out, eval_filter(*s.expr, scope, &v).str());
      break;
    }
    case Stmt::Kind::kWith: {
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      for (size_t i = 0; i < s.targets.size(); ++i)
        inner->vars[s.targets[i]] = eval(*s.values[i], inner);
      return exec_body(s.body, inner, out);
    }
    case Stmt::Kind::kBreak: return Flow::kBreak;
    case Stmt::Kind::kContinue: return Flow::kContinue;
    case Stmt::Kind::kGeneration: return exec_body(s.body, scope, out);
  }
  return Flow::kNormal;
}

void Interpreter::exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
  Value seq = eval(*s.expr, scope);
  at(s.line, s.col);
  List items = iterate(seq);
  if (s.cond) {  // `for x in xs if cond`: filtered before loop.length etc. are computed
    List kept;
    for (const Value& item : items) {
      count_iterations(1);
      auto probe = std::make_shared<Scope>();
      probe->parent = scope;
      assign(probe, s.targets, item);
      if (eval(*s.cond, probe).truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    if (exec_body(s.else_body, inner, out) != Flow::kNormal) fail("'break' in a for-else branch");
    return;
  }
  const int64_t n = int64_t(items.size());
  for (int64_t i = 0; i < n; ++i) {
    count_iterations(1);
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    assign(inner, s.targets, items[size_t(i)]);
    Value loop = Value::dict();
    Dict& d = loop.as_dict();
    d.set("index", Value(i + 1));
    d.set("index0", Value(i));
    d.set("revindex", Value(n - i));
    d.set("revindex0", Value(n - i - 1));
    d.set("first", Value(i == 0));
    d.set("last", Value(i == n - 1));
    d.set("length", Value(n));
    d.set("depth", Value(1));
    d.set("depth0", Value(0));
    if (i > 0) d.set("previtem", items[size_t(i - 1)]);
    if (i + 1 < n) d.set("nextitem", items[size_t(i + 1)]);
    d.set("cycle", Value::function("loop.cycle", [i](CallArgs& a, Interpreter& in) -> Value {
            if (a.pos.empty()) in.fail("loop.cycle() needs at least one value");
            return a.pos[size_t(i) % a.pos.size()];
          }));
    inner->vars["loop"] = loop;
    Flow f = exec_body(s.body, inner, out);
    if (f == Flow::kBreak) break;
  }
}

ScopePtr Interpreter::live_scope(const std::weak_ptr<Scope>& def, const std::string& name) const {
  ScopePtr p = def.lock();
  if (!p) fail(fmt::format("macro '{}' was called after the block that defined it ended", name));
  return p;
}

Value Interpreter::make_macro(const Stmt& s, const ScopePtr& scope) {
  const Stmt* sp = &s;
  // The defining scope usually stores the macro itself, so the closure holds it weakly: a
  // shared_ptr here would be a reference cycle and leak every render.
  std::weak_ptr<Scope> def = scope;
  return Value::function(s.name, [this, sp, def](CallArgs& a, Interpreter&) {
    return call_macro(*sp, sp->body, sp->params, live_scope(def, sp->name), a);
  });
}

Value Interpreter::call_macro(const Stmt& s, const Body& body,
                              const std::vector<MacroParam>& params, const ScopePtr& def_scope,
                              CallArgs& args) {
  if (++call_depth_ > limits_.max_call_depth) {
    fail(fmt::format("macro recursion deeper than {} calls", limits_.max_call_depth));
  }
  const std::string name = s.kind == Stmt::Kind::kMacro ? s.name : "caller";
  auto frame = std::make_shared<Scope>();
  frame->parent = def_scope;
  if (args.pos.size() > params.size())
    fail(fmt::format("macro '{}' takes {} argument(s), {} given", name, params.size(),
                     args.pos.size()));
  std::vector<bool> bound(params.size(), false);
  for (size_t i = 0; i < args.pos.size(); ++i) {
    frame->vars[params[i].name] = args.pos[i];
    bound[i] = true;
  }
  for (auto& [k, v] : args.kw) {
    size_t j = 0;
    while (j < params.size() && params[j].name != k) ++j;
    if (j < params.size()) {
      frame->vars[k] = v;
      bound[j] = true;
    } else if (k == "caller") {
      frame->vars[k] = v;
    } else {
      fail(fmt::format("macro '{}' has no parameter named '{}'", name, k));
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (bound[i]) continue;
    frame->vars[params[i].name] =
        params[i].default_value
            ? eval(*params[i].default_value, frame)
            : Value::undefined(
                  fmt::format("parameter '{}' of macro '{}' was not given", params[i].name, name));
  }
  std::string out;
  if (exec_body(body, frame, out) != Flow::kNormal)
    fail("'break' or 'continue' outside a for loop");
  --call_depth_;
  return Value(std::move(out)).mark_safe();
}

List Interpreter::iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return {};
    case Value::Type::kList: return v.as_list();
    case Value::Type::kDict: {
      List keys;
      for (const auto& [k, _] : v.as_dict().items()) keys.emplace_back(k);
      return keys;
    }
    case Value::Type::kString: {
      List chars;
      const std::string& s = v.as_string();
      pystr::CodePoints p = pystr::decode(s);
      for (size_t i = 0; i < p.cps.size(); ++i)
        chars.emplace_back(s.substr(p.offsets[i], p.offsets[i + 1] - p.offsets[i]));
      return chars;
    }
    default: fail(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

Value Interpreter::get_attr(const Value& obj, const std::string& name) {
  require_defined(obj);
  Value m = get_method(*this, obj, name);  // Python attributes come before items for `.`
  if (!m.is_undefined()) return m;
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{}' object has no attribute '{}'", obj.type_name(), name));
}

Value Interpreter::get_item(const Value& obj, const Value& key) {
  require_defined(obj);
  if (obj.is_dict()) {
    std::string k = key.is_string() ? key.as_string() : key.str();
    if (const Value* v = obj.as_dict().find(k)) return *v;
    return Value::undefined(fmt::format("'dict object' has no attribute '{}'", k));
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      int64_t n = int64_t(obj.as_list().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return obj.as_list()[size_t(i)];
      return Value::undefined(fmt::format("list index {} out of range", key.as_int()));
    }
    pystr::CodePoints p = pystr::decode(obj.as_string());
    int64_t n = int64_t(p.cps.size());
    if (i < 0) i += n;
    if (i >= 0 && i < n)
      return Value(obj.as_string().substr(p.offsets[size_t(i)],
                                          p.offsets[size_t(i) + 1] - p.offsets[size_t(i)]));
    return Value::undefined(fmt::format("string index {} out of range", key.as_int()));
  }
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(
      fmt::format("'{}' object has no element {}", obj.type_name(), key.repr()));
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (!fn.is_callable()) {
    require_defined(fn);
    fail(fmt::format("'{}' object is not callable", fn.type_name()));
  }
  return fn.as_callable().fn(args, *this);
}

Value Interpreter::apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  auto it = builtin_filters().find(name);
  if (it == builtin_filters().end())
    fail(
        fmt::format("unknown filter '{}'; the supported filters are Jinja's built-ins plus "
                    "tojson",
                    name));
  return it->second(*this, input, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& input, CallArgs& args) {
  auto it = builtin_tests().find(name);
  if (it == builtin_tests().end()) fail(fmt::format("unknown test '{}'", name));
  return it->second(*this, input, args);
}

void Interpreter::eval_args(const Expr& e, size_t first, const ScopePtr& scope, CallArgs& args) {
  for (size_t i = first; i < e.args.size(); ++i) args.pos.push_back(eval(*e.args[i], scope));
  for (const auto& [k, v] : e.kwargs) args.kw.emplace_back(k, eval(*v, scope));
}

Value Interpreter::eval_filter(const Expr& e, const ScopePtr& scope, const Value* piped) {
  Value input =
      e.args[0] ? (e.args[0]->kind == Expr::Kind::kFilter ? eval_filter(*e.args[0], scope, piped)
                                                          : eval(*e.args[0], scope))
                : *piped;
  CallArgs args;
  eval_args(e, 1, scope, args);
  at(e.line, e.col);
  return apply_filter(e.name, input, args);
}

Value Interpreter::eval_call(const Expr& e, const ScopePtr& scope, const Value* caller) {
  Value fn = eval(*e.args[0], scope);
  CallArgs args;
  eval_args(e, 1, scope, args);
  if (caller) args.kw.emplace_back("caller", *caller);
  at(e.line, e.col);
  return call(fn, args);
}

namespace {
void slice_indices(int64_t len, const Value* a, const Value* b, const Value* c, int64_t& start,
                   int64_t& stop, int64_t& step, Interpreter& in) {
  auto as_index = [&](const Value* v, const char* what) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    if (!v->is_int() && !v->is_bool())
      in.fail(fmt::format("slice {} must be an integer or none, got {}", what, v->type_name()));
    return v->as_int();
  };
  step = as_index(c, "step").value_or(1);
  if (step == 0) in.fail("slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {  // Python's PySlice_AdjustIndices
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) {
      x += len;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= len) {
      x = step < 0 ? len - 1 : len;
    }
    return x;
  };
  start = clamp(as_index(a, "start"), step < 0 ? len - 1 : 0);
  stop = clamp(as_index(b, "stop"), step < 0 ? -1 : len);
}
}  // namespace

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.literal;
    case Expr::Kind::kName: {
      if (const Value* v = scope->lookup(e.name)) return *v;
      return Value::undefined(fmt::format("'{}' is undefined", e.name));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      List l;
      for (const auto& a : e.args) l.push_back(eval(*a, scope));
      return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(l)) : Value(std::move(l));
    }
    case Expr::Kind::kDict: {
      Value d = Value::dict();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = eval(*e.args[i], scope);
        d.as_dict().set(k.is_string() ? k.as_string() : k.str(), eval(*e.args[i + 1], scope));
      }
      return d;
    }
    case Expr::Kind::kUnary: {
      Value v = eval(*e.args[0], scope);
      at(e.line, e.col);
      if (e.name == "not") return Value(!v.truthy());
      require_defined(v);
      if (v.is_bool()) v = Value(v.as_int());
      if (!v.is_number())
        fail(fmt::format("bad operand type for unary {}: {}", e.name, v.type_name()));
      if (e.name == "+") return v;
      if (v.is_float()) return Value(-v.as_float());
      if (v.as_int() == INT64_MIN) fail("integer overflow in unary -");
      return Value(-v.as_int());
    }
    case Expr::Kind::kBinary: return eval_binary(e, scope);
    case Expr::Kind::kCompare: return eval_compare(e, scope);
    case Expr::Kind::kCond: {
      if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
      if (e.args[2]) return eval(*e.args[2], scope);
      return Value::undefined("the inline if has no else branch and its condition was false");
    }
    case Expr::Kind::kGetAttr: {
      Value obj = eval(*e.args[0], scope);
      at(e.line, e.col);
      return get_attr(obj, e.name);
    }
    case Expr::Kind::kGetItem: {
      Value obj = eval(*e.args[0], scope);
      Value key = eval(*e.args[1], scope);
      at(e.line, e.col);
      return get_item(obj, key);
    }
    case Expr::Kind::kSlice: {
      Value obj = eval(*e.args[0], scope);
      Value b[3];
      for (int i = 0; i < 3; ++i)
        if (e.args[size_t(i) + 1]) b[i] = eval(*e.args[size_t(i) + 1], scope);
      at(e.line, e.col);
      require_defined(obj);
      auto ptr = [&](int i) { return e.args[size_t(i) + 1] ? &b[i] : nullptr; };
      int64_t start, stop, step;
      if (obj.is_list()) {
        const List& l = obj.as_list();
        slice_indices(int64_t(l.size()), ptr(0), ptr(1), ptr(2), start, stop, step, *this);
        List r;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
          r.push_back(l[size_t(i)]);
        return Value(std::move(r));
      }
      if (obj.is_string()) {
        const std::string& s = obj.as_string();
        pystr::CodePoints p = pystr::decode(s);
        slice_indices(int64_t(p.cps.size()), ptr(0), ptr(1), ptr(2), start, stop, step, *this);
        std::string r;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
          r.append(s, p.offsets[size_t(i)], p.offsets[size_t(i) + 1] - p.offsets[size_t(i)]);
        return Value(std::move(r));
      }
      fail(fmt::format("'{}' object cannot be sliced", obj.type_name()));
    }
    case Expr::Kind::kCall: return eval_call(e, scope, nullptr);
    case Expr::Kind::kFilter: return eval_filter(e, scope, nullptr);
    case Expr::Kind::kTest: {
      Value v = eval(*e.args[0], scope);
      CallArgs args;
      eval_args(e, 1, scope, args);
      at(e.line, e.col);
      return Value(apply_test(e.name, v, args) != e.negated);
    }
  }
  fail("internal: unknown expression kind");
}

Value Interpreter::eval_compare(const Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.args[0], scope);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.args[i + 1], scope);
    at(e.line, e.col);
    const std::string& op = e.ops[i];
    bool r;
    if (op == "==")
      r = values_equal(left, right);
    else if (op == "!=")
      r = !values_equal(left, right);
    else if (op == "in" || op == "notin") {
      bool found = false;
      if (right.is_string()) {
        if (!left.is_string())
          fail(
              fmt::format("'in <string>' requires a string on the left, not {}", left.type_name()));
        found = right.as_string().find(left.as_string()) != std::string::npos;
      } else if (right.is_dict()) {
        found = left.is_string() && right.as_dict().find(left.as_string());
      } else if (right.is_list()) {
        for (const Value& x : right.as_list())
          if (values_equal(x, left)) {
            found = true;
            break;
          }
      } else if (!right.is_undefined()) {
        fail(fmt::format("argument of type '{}' is not iterable (right side of 'in')",
                         right.type_name()));
      }
      r = op == "in" ? found : !found;
    } else {
      require_defined(left);
      require_defined(right);
      int c;
      try {
        c = compare_values(left, right);
      } catch (const Error& err) {
        fail(err.what());
      }
      r = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
    }
    if (!r) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

Value Interpreter::eval_binary(const Expr& e, const ScopePtr& scope) {
  const std::string& op = e.name;
  Value a = eval(*e.args[0], scope);
  if (op == "and") return a.truthy() ? eval(*e.args[1], scope) : a;
  if (op == "or") return a.truthy() ? a : eval(*e.args[1], scope);
  Value b = eval(*e.args[1], scope);
  at(e.line, e.col);
  if (op == "~") {
    std::string s = a.str();
    check_size(s.size() + b.str().size());
    return Value(s + b.str());
  }
  require_defined(a);
  require_defined(b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      check_size(a.as_string().size() + b.as_string().size());
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list()) {
      check_size((a.as_list().size() + b.as_list().size()) * 16);
      List r = a.as_list();
      r.insert(r.end(), b.as_list().begin(), b.as_list().end());
      return Value(std::move(r));
    }
  }
  if (op == "*" && (a.is_string() || a.is_list() || b.is_string() || b.is_list())) {
    const Value& seq = a.is_string() || a.is_list() ? a : b;
    const Value& cnt = a.is_string() || a.is_list() ? b : a;
    if (!cnt.is_int() && !cnt.is_bool())
      fail(fmt::format("can't multiply sequence by non-int of type '{}'", cnt.type_name()));
    int64_t n = std::max<int64_t>(0, cnt.as_int());
    size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().size() * 16;
    if (n > 0 && unit > 0 && uint64_t(n) > limits_.max_output_bytes / unit)
      fail(fmt::format("sequence repeated {} times exceeds the render size limit", n));
    if (seq.is_string()) {
      std::string r;
      for (int64_t i = 0; i < n; ++i) r += seq.as_string();
      return Value(std::move(r));
    }
    List r;
    for (int64_t i = 0; i < n; ++i) r.insert(r.end(), seq.as_list().begin(), seq.as_list().end());
    return Value(std::move(r));
  }
  bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
  if (!an || !bn)
    fail(fmt::format("unsupported operand types for {}: '{}' and '{}'", op, a.type_name(),
                     b.type_name()));
  bool ints = !a.is_float() && !b.is_float();
  if (ints) {
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    if (op == "+") {
      if (__builtin_add_overflow(x, y, &r)) fail("integer overflow in +");
      return Value(r);
    }
    if (op == "-") {
      if (__builtin_sub_overflow(x, y, &r)) fail("integer overflow in -");
      return Value(r);
    }
    if (op == "*") {
      if (__builtin_mul_overflow(x, y, &r)) fail("integer overflow in *");
      return Value(r);
    }
    if (op == "//" || op == "%") {
      if (y == 0) fail("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) fail("integer overflow in //");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward -infinity
        q -= 1;
        m += y;
      }
      return Value(op == "//" ? q : m);
    }
    if (op == "**" && y >= 0) {
      int64_t acc = 1, base = x;
      for (int64_t k = y; k > 0; k >>= 1) {
        if (k & 1)
          if (__builtin_mul_overflow(acc, base, &acc)) fail("integer overflow in **");
        if (k > 1 && __builtin_mul_overflow(base, base, &base)) fail("integer overflow in **");
      }
      return Value(acc);
    }
  }
  double x = a.as_float(), y = b.as_float();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "/") {
    if (y == 0) fail("division by zero");
    return Value(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) fail("float division or modulo by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    if (op == "%") return Value(m);
    return Value(std::floor(x / y));
  }
  if (op == "**") {
    if (x == 0 && y < 0) fail("0.0 cannot be raised to a negative power");
    return Value(std::pow(x, y));
  }
  fail(fmt::format("unknown operator '{}'", op));
}

}  // namespace gyre::tokenizer::jinja
