// Jinja built-in filters, tests and globals, with the argument names and defaults of Jinja 3 so
// templates written against Python render the same; `tojson` is transformers' override
// (json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)), not Jinja's
// HTML-safe one; raise_exception and strftime_now are the globals transformers installs.
#include <algorithm>
#include <cmath>
#include <ctime>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/interpreter.h"
#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer::jinja {
namespace {

int64_t int_arg(Interpreter& in, const CallArgs& a, size_t i, const char* name, int64_t dflt) {
  const Value* v = a.find(i, name);
  if (!v || v->is_none()) return dflt;
  if (!v->is_int() && !v->is_bool())
    in.fail(fmt::format("argument '{}' must be an integer, got {}", name, v->type_name()));
  return v->as_int();
}
bool bool_arg(const CallArgs& a, size_t i, const char* name, bool dflt) {
  const Value* v = a.find(i, name);
  return v ? v->truthy() : dflt;
}
std::optional<std::string> str_arg(Interpreter& in, const CallArgs& a, size_t i, const char* name) {
  const Value* v = a.find(i, name);
  if (!v || v->is_none() || v->is_undefined()) return std::nullopt;
  if (!v->is_string())
    in.fail(fmt::format("argument '{}' must be a string, got {}", name, v->type_name()));
  return v->as_string();
}
// Jinja's make_attrgetter: "a.b.0" walks attributes/items.
Value attr_path(Interpreter& in, const Value& v, const std::string& path) {
  Value cur = v;
  for (const std::string& part : pystr::split(path, std::string("."), -1, false)) {
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur =
        digits ? in.get_item(cur, Value(int64_t(std::stoll(part)))) : in.get_item(cur, Value(part));
  }
  return cur;
}
// Sort key for case_sensitive=False: strings are lowercased (Jinja's ignore_case).
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(pystr::lower(v.as_string()));
  return v;
}
int cmp(Interpreter& in, const Value& a, const Value& b) {
  try {
    return compare_values(a, b);
  } catch (const Error& e) {
    in.fail(e.what());
  }
}
size_t length_of(Interpreter& in, const Value& v) {
  if (v.is_string()) return pystr::length(v.as_string());
  if (v.is_list()) return v.as_list().size();
  if (v.is_dict()) return v.as_dict().size();
  if (v.is_undefined()) return 0;
  in.fail(fmt::format("object of type '{}' has no len()", v.type_name()));
}

// CallArgs with the positional arguments from index `from` on (for map/select forwarding).
CallArgs rest_args(const CallArgs& a, size_t from) {
  CallArgs r;
  for (size_t i = from; i < a.pos.size(); ++i) r.pos.push_back(a.pos[i]);
  r.kw = a.kw;
  return r;
}

Value f_default(Interpreter&, const Value& v, CallArgs& a) {
  const Value* d = a.find(0, "default_value");
  bool boolean = bool_arg(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.truthy())) return d ? *d : Value("");
  return v;
}
Value f_length(Interpreter& in, const Value& v, CallArgs&) {
  return Value(int64_t(length_of(in, v)));
}
Value f_first(Interpreter& in, const Value& v, CallArgs&) {
  List l = in.iterate(v);
  return l.empty() ? Value::undefined("first: the sequence is empty") : l.front();
}
Value f_last(Interpreter& in, const Value& v, CallArgs&) {
  List l = in.iterate(v);
  return l.empty() ? Value::undefined("last: the sequence is empty") : l.back();
}
Value f_join(Interpreter& in, const Value& v, CallArgs& a) {
  std::string sep = str_arg(in, a, 0, "d").value_or("");
  auto attr = str_arg(in, a, 1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& x : in.iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += attr ? attr_path(in, x, *attr).str() : x.str();
    in.check_size(out.size());
  }
  return Value(out);
}
Value f_upper(Interpreter& in, const Value& v, CallArgs&) { return Value(pystr::upper(v.str())); }
Value f_lower(Interpreter& in, const Value& v, CallArgs&) { return Value(pystr::lower(v.str())); }
Value f_capitalize(Interpreter&, const Value& v, CallArgs&) {
  return Value(pystr::capitalize(v.str()));
}
Value f_title(Interpreter&, const Value& v, CallArgs&) { return Value(pystr::title(v.str())); }
Value f_trim(Interpreter& in, const Value& v, CallArgs& a) {
  return Value(pystr::strip(v.str(), str_arg(in, a, 0, "chars"), true, true));
}
Value f_replace(Interpreter& in, const Value& v, CallArgs& a) {
  auto old = str_arg(in, a, 0, "old"), repl = str_arg(in, a, 1, "new");
  if (!old || !repl) in.fail("filter 'replace' needs two strings: replace(old, new[, count])");
  std::string r = pystr::replace(v.str(), *old, *repl, int_arg(in, a, 2, "count", -1));
  in.check_size(r.size());
  return Value(r);
}
Value f_list(Interpreter& in, const Value& v, CallArgs&) { return Value(in.iterate(v)); }
Value f_string(Interpreter&, const Value& v, CallArgs&) { return Value(v.str()); }
Value f_safe(Interpreter&, const Value& v, CallArgs&) {
  Value r(v.str());
  return r.mark_safe();
}
Value f_escape(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_safe()) return v;
  std::string out;
  for (char c : v.str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return Value(out).mark_safe();
}
Value f_int(Interpreter& in, const Value& v, CallArgs& a) {
  int64_t dflt = int_arg(in, a, 0, "default", 0);
  int base = int(int_arg(in, a, 1, "base", 10));
  if (v.is_int() || v.is_bool()) return Value(v.as_int());
  if (v.is_float()) {
    double d = v.as_float();
    if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return Value(dflt);
    return Value(int64_t(d));
  }
  if (v.is_string()) {
    std::string s = pystr::strip(v.as_string(), std::nullopt, true, true);
    std::string digits;
    for (char c : s)
      if (c != '_') digits.push_back(c);
    if (digits.empty()) return Value(dflt);
    char* end = nullptr;
    errno = 0;
    long long r = std::strtoll(digits.c_str(), &end, base);
    if (*end == '\0' && errno == 0) return Value(int64_t(r));
    double d = std::strtod(digits.c_str(), &end);  // Jinja falls back to int(float(s))
    if (*end == '\0' && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value(int64_t(d));
  }
  return Value(dflt);
}
Value f_float(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* d = a.find(0, "default");
  double dflt = d && d->is_number() ? d->as_float() : 0.0;
  if (v.is_number() || v.is_bool()) return Value(v.as_float());
  if (v.is_string()) {
    std::string s = pystr::strip(v.as_string(), std::nullopt, true, true);
    char* end = nullptr;
    double r = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') return Value(r);
  }
  return Value(dflt);
}
Value f_abs(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_int() || v.is_bool()) {
    if (v.as_int() == INT64_MIN) in.fail("integer overflow in abs");
    return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  in.fail(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}
Value f_round(Interpreter& in, const Value& v, CallArgs& a) {
  if (!v.is_number() && !v.is_bool())
    in.fail(fmt::format("round expects a number, got {}", v.type_name()));
  int64_t precision = int_arg(in, a, 0, "precision", 0);
  std::string method = str_arg(in, a, 1, "method").value_or("common");
  double scale = std::pow(10.0, double(precision));
  double x = v.as_float() * scale;
  if (method == "common")
    x = std::nearbyint(x);  // Jinja calls Python round(): ties to even
  else if (method == "ceil")
    x = std::ceil(x);
  else if (method == "floor")
    x = std::floor(x);
  else
    in.fail("round: method must be 'common', 'ceil' or 'floor'");
  return Value(x / scale);
}
Value f_items(Interpreter& in, const Value& v, CallArgs&) {
  List r;
  if (v.is_undefined()) return Value(r);
  if (!v.is_dict()) in.fail(fmt::format("filter 'items' expects a mapping, got {}", v.type_name()));
  for (const auto& [k, x] : v.as_dict().items()) r.push_back(Value::tuple(List{Value(k), x}));
  return Value(r);
}
Value f_dictsort(Interpreter& in, const Value& v, CallArgs& a) {
  if (!v.is_dict())
    in.fail(fmt::format("filter 'dictsort' expects a mapping, got {}", v.type_name()));
  bool cs = bool_arg(a, 0, "case_sensitive", false);
  std::string by = str_arg(in, a, 1, "by").value_or("key");
  bool rev = bool_arg(a, 2, "reverse", false);
  if (by != "key" && by != "value") in.fail("dictsort: 'by' must be 'key' or 'value'");
  List r;
  for (const auto& [k, x] : v.as_dict().items()) r.push_back(Value::tuple(List{Value(k), x}));
  size_t idx = by == "key" ? 0 : 1;
  std::stable_sort(r.begin(), r.end(), [&](const Value& p, const Value& q) {
    int c = cmp(in, sort_key(p.as_list()[idx], cs), sort_key(q.as_list()[idx], cs));
    return rev ? c > 0 : c < 0;
  });
  return Value(r);
}
Value f_map(Interpreter& in, const Value& v, CallArgs& a) {
  List r;
  if (const Value* attr = a.find(SIZE_MAX, "attribute")) {
    const Value* dflt = a.find(SIZE_MAX, "default");
    for (const Value& x : in.iterate(v)) {
      Value y = attr_path(in, x, attr->str());
      r.push_back(y.is_undefined() && dflt ? *dflt : y);
    }
    return Value(r);
  }
  if (a.pos.empty() || !a.pos[0].is_string())
    in.fail("filter 'map' needs a filter name or attribute=..., e.g. map(attribute='name')");
  std::string name = a.pos[0].as_string();
  CallArgs rest = rest_args(a, 1);
  for (const Value& x : in.iterate(v)) {
    CallArgs copy = rest;
    r.push_back(in.apply_filter(name, x, copy));
  }
  return Value(r);
}
Value select_impl(Interpreter& in, const Value& v, CallArgs& a, bool attr_mode, bool keep) {
  size_t test_pos = attr_mode ? 1 : 0;
  std::optional<std::string> attr;
  if (attr_mode) {
    if (a.pos.empty() || !a.pos[0].is_string())
      in.fail("selectattr/rejectattr need an attribute name");
    attr = a.pos[0].as_string();
  }
  std::optional<std::string> test;
  if (a.pos.size() > test_pos) test = a.pos[test_pos].str();
  CallArgs rest = rest_args(a, test_pos + 1);
  List r;
  for (const Value& x : in.iterate(v)) {
    Value probe = attr ? attr_path(in, x, *attr) : x;
    bool ok;
    if (test) {
      CallArgs copy = rest;
      ok = in.apply_test(*test, probe, copy);
    } else {
      ok = probe.truthy();
    }
    if (ok == keep) r.push_back(x);
  }
  return Value(r);
}
Value f_select(Interpreter& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, false, true);
}
Value f_reject(Interpreter& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, false, false);
}
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, true, true);
}
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, true, false);
}
Value f_unique(Interpreter& in, const Value& v, CallArgs& a) {
  bool cs = bool_arg(a, 0, "case_sensitive", false);
  auto attr = str_arg(in, a, 1, "attribute");
  List r, seen;
  for (const Value& x : in.iterate(v)) {
    Value k = sort_key(attr ? attr_path(in, x, *attr) : x, cs);
    bool dup = false;
    for (const Value& s : seen)
      if (values_equal(s, k)) {
        dup = true;
        break;
      }
    if (!dup) {
      seen.push_back(k);
      r.push_back(x);
    }
  }
  return Value(r);
}
Value f_sum(Interpreter& in, const Value& v, CallArgs& a) {
  auto attr = str_arg(in, a, 0, "attribute");
  const Value* start = a.find(1, "start");
  Value acc = start ? *start : Value(int64_t(0));
  for (const Value& x : in.iterate(v)) {
    Value y = attr ? attr_path(in, x, *attr) : x;
    if (!(y.is_number() || y.is_bool()) || !(acc.is_number() || acc.is_bool()))
      in.fail(fmt::format("sum: cannot add {} to {}", y.type_name(), acc.type_name()));
    if (acc.is_float() || y.is_float())
      acc = Value(acc.as_float() + y.as_float());
    else {
      int64_t r;
      if (__builtin_add_overflow(acc.as_int(), y.as_int(), &r)) in.fail("integer overflow in sum");
      acc = Value(r);
    }
  }
  return acc;
}
Value minmax(Interpreter& in, const Value& v, CallArgs& a, bool want_max) {
  bool cs = bool_arg(a, 0, "case_sensitive", false);
  auto attr = str_arg(in, a, 1, "attribute");
  List l = in.iterate(v);
  if (l.empty()) return Value::undefined(want_max ? "max: empty sequence" : "min: empty sequence");
  size_t best = 0;
  auto key = [&](const Value& x) { return sort_key(attr ? attr_path(in, x, *attr) : x, cs); };
  for (size_t i = 1; i < l.size(); ++i) {
    int c = cmp(in, key(l[i]), key(l[best]));
    if (want_max ? c > 0 : c < 0) best = i;
  }
  return l[best];
}
Value f_min(Interpreter& in, const Value& v, CallArgs& a) { return minmax(in, v, a, false); }
Value f_max(Interpreter& in, const Value& v, CallArgs& a) { return minmax(in, v, a, true); }
Value f_reverse(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_string()) {
    pystr::CodePoints p = pystr::decode(v.as_string());
    std::string r;
    for (size_t i = p.cps.size(); i-- > 0;)
      r.append(v.as_string(), p.offsets[i], p.offsets[i + 1] - p.offsets[i]);
    return Value(r);
  }
  List l = in.iterate(v);
  std::reverse(l.begin(), l.end());
  return Value(l);
}
Value f_sort(Interpreter& in, const Value& v, CallArgs& a) {
  bool rev = bool_arg(a, 0, "reverse", false);
  bool cs = bool_arg(a, 1, "case_sensitive", false);
  auto attr = str_arg(in, a, 2, "attribute");
  List l = in.iterate(v);
  auto key = [&](const Value& x) { return sort_key(attr ? attr_path(in, x, *attr) : x, cs); };
  std::stable_sort(l.begin(), l.end(), [&](const Value& p, const Value& q) {
    int c = cmp(in, key(p), key(q));
    return rev ? c > 0 : c < 0;
  });
  return Value(l);
}
Value f_indent(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* w = a.find(0, "width");
  std::string unit =
      w && w->is_string()
          ? w->as_string()
          : std::string(size_t(std::clamp<int64_t>(int_arg(in, a, 0, "width", 4), 0, 1024)), ' ');
  bool first = bool_arg(a, 1, "first", false), blank = bool_arg(a, 2, "blank", false);
  std::string s = v.str() + "\n";  // Jinja appends a newline so splitlines keeps a trailing line
  std::vector<std::string> lines = pystr::splitlines(s, false);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + unit : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i)
      rv += "\n" + (lines[i].empty() ? "" : unit) + lines[i];
  }
  if (first) rv = unit + rv;
  in.check_size(rv.size());
  return Value(rv);
}
Value f_center(Interpreter& in, const Value& v, CallArgs& a) {
  std::string s = v.str();
  int64_t width = std::min<int64_t>(int_arg(in, a, 0, "width", 80), 1 << 20);
  int64_t len = int64_t(pystr::length(s));
  if (width <= len) return Value(s);
  int64_t pad = width - len, left = pad / 2 + (pad & width & 1);  // CPython's str.center split
  return Value(std::string(size_t(left), ' ') + s + std::string(size_t(pad - left), ' '));
}
Value f_wordcount(Interpreter&, const Value& v, CallArgs&) {
  pystr::CodePoints p = pystr::decode(v.str());
  int64_t n = 0;
  bool in_word = false;
  for (uint32_t c : p.cps) {  // \w+ : letters, digits and underscore
    bool w = c == '_' || (c < 0x80 ? std::isalnum(int(c)) != 0 : !pystr::is_space(c));
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}
Value f_batch(Interpreter& in, const Value& v, CallArgs& a) {
  int64_t n = int_arg(in, a, 0, "linecount", 0);
  if (n <= 0) in.fail("batch: linecount must be a positive integer");
  const Value* fill = a.find(1, "fill_with");
  List r, cur;
  for (const Value& x : in.iterate(v)) {
    cur.push_back(x);
    if (int64_t(cur.size()) == n) {
      r.push_back(Value(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (fill && !fill->is_none())
      while (int64_t(cur.size()) < n) cur.push_back(*fill);
    r.push_back(Value(cur));
  }
  return Value(r);
}
Value f_attr(Interpreter& in, const Value& v, CallArgs& a) {
  auto name = str_arg(in, a, 0, "name");
  if (!name) in.fail("filter 'attr' needs an attribute name");
  return in.get_attr(v, *name);
}
// transformers: json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys); Python's default separators are (', ', ': '), or (',', ': ') with indent.
Value f_tojson(Interpreter& in, const Value& v, CallArgs& a) {
  JsonDumpOptions o;
  if (const Value* ind = a.find(0, "indent"); ind && !ind->is_none()) {
    o.pretty = true;
    o.item_separator = ",";
    if (ind->is_string())
      o.indent_unit = ind->as_string();
    else
      o.indent_unit.assign(size_t(std::clamp<int64_t>(int_arg(in, a, 0, "indent", 0), 0, 64)), ' ');
  }
  o.ensure_ascii = bool_arg(a, 1, "ensure_ascii", false);
  if (const Value* sep = a.find(2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->as_list().size() != 2)
      in.fail("tojson: separators must be a pair like (',', ':')");
    o.item_separator = sep->as_list()[0].str();
    o.key_separator = sep->as_list()[1].str();
  }
  o.sort_keys = bool_arg(a, 3, "sort_keys", false);
  try {
    std::string s = dump_json(v, o);
    in.check_size(s.size());
    return Value(s);
  } catch (const Error& e) {
    if (std::string_view(e.what()).find("bytes exceeds") != std::string_view::npos) throw;
    in.fail(e.what());
  }
}

// ---- tests ----
bool t_defined(Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(Interpreter&, const Value& v, CallArgs&) { return v.is_none(); }
bool t_boolean(Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); }
bool t_true(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }
bool t_false(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }
bool t_integer(Interpreter&, const Value& v, CallArgs&) { return v.is_int(); }
bool t_float(Interpreter&, const Value& v, CallArgs&) { return v.is_float(); }
bool t_number(Interpreter&, const Value& v, CallArgs&) { return v.is_number() || v.is_bool(); }
bool t_string(Interpreter&, const Value& v, CallArgs&) { return v.is_string(); }
bool t_mapping(Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); }
bool t_iterable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
}
bool t_sequence(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() || v.is_list() || v.is_dict();
}
bool t_callable(Interpreter&, const Value& v, CallArgs&) { return v.is_callable(); }
int64_t int_operand(Interpreter& in, const Value& v, const char* test) {
  if (!v.is_int() && !v.is_bool())
    in.fail(fmt::format("test '{}' expects an integer, got {}", test, v.type_name()));
  return v.as_int();
}
bool t_odd(Interpreter& in, const Value& v, CallArgs&) {
  return int_operand(in, v, "odd") % 2 != 0;
}
bool t_even(Interpreter& in, const Value& v, CallArgs&) {
  return int_operand(in, v, "even") % 2 == 0;
}
bool t_divisibleby(Interpreter& in, const Value& v, CallArgs& a) {
  int64_t n = int_arg(in, a, 0, "num", 0);
  if (n == 0) in.fail("divisibleby(0): division by zero");
  return int_operand(in, v, "divisibleby") % n == 0;
}
const Value& other(Interpreter& in, CallArgs& a, const char* test) {
  const Value* o = a.find(0, "other");
  if (!o) in.fail(fmt::format("test '{}' needs a value to compare with", test));
  return *o;
}
bool t_eq(Interpreter& in, const Value& v, CallArgs& a) {
  return values_equal(v, other(in, a, "eq"));
}
bool t_ne(Interpreter& in, const Value& v, CallArgs& a) {
  return !values_equal(v, other(in, a, "ne"));
}
bool t_lt(Interpreter& in, const Value& v, CallArgs& a) {
  return cmp(in, v, other(in, a, "lt")) < 0;
}
bool t_le(Interpreter& in, const Value& v, CallArgs& a) {
  return cmp(in, v, other(in, a, "le")) <= 0;
}
bool t_gt(Interpreter& in, const Value& v, CallArgs& a) {
  return cmp(in, v, other(in, a, "gt")) > 0;
}
bool t_ge(Interpreter& in, const Value& v, CallArgs& a) {
  return cmp(in, v, other(in, a, "ge")) >= 0;
}
bool t_in(Interpreter& in, const Value& v, CallArgs& a) {
  const Value& seq = other(in, a, "in");
  if (seq.is_string())
    return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
  if (seq.is_dict()) return v.is_string() && seq.as_dict().find(v.as_string());
  for (const Value& x : in.iterate(seq))
    if (values_equal(x, v)) return true;
  return false;
}
bool t_sameas(Interpreter& in, const Value& v, CallArgs& a) {
  const Value& o = other(in, a, "sameas");
  if (v.identity() || o.identity()) return v.identity() == o.identity();
  return v.type() == o.type() && values_equal(v, o);  // None/True/False are singletons
}
bool t_lower(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && pystr::lower(v.as_string()) == v.as_string();
}
bool t_upper(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && pystr::upper(v.as_string()) == v.as_string();
}
bool t_escaped(Interpreter&, const Value& v, CallArgs&) { return v.is_safe(); }

}  // namespace

const std::unordered_map<std::string, FilterFn>& builtin_filters() {
  static const std::unordered_map<std::string, FilterFn> kFilters = {
      {"abs", f_abs},
      {"attr", f_attr},
      {"batch", f_batch},
      {"capitalize", f_capitalize},
      {"center", f_center},
      {"count", f_length},
      {"d", f_default},
      {"default", f_default},
      {"dictsort", f_dictsort},
      {"e", f_escape},
      {"escape", f_escape},
      {"first", f_first},
      {"float", f_float},
      {"indent", f_indent},
      {"int", f_int},
      {"items", f_items},
      {"join", f_join},
      {"last", f_last},
      {"length", f_length},
      {"list", f_list},
      {"lower", f_lower},
      {"map", f_map},
      {"max", f_max},
      {"min", f_min},
      {"reject", f_reject},
      {"rejectattr", f_rejectattr},
      {"replace", f_replace},
      {"reverse", f_reverse},
      {"round", f_round},
      {"safe", f_safe},
      {"select", f_select},
      {"selectattr", f_selectattr},
      {"sort", f_sort},
      {"string", f_string},
      {"sum", f_sum},
      {"title", f_title},
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"unique", f_unique},
      {"upper", f_upper},
      {"wordcount", f_wordcount},
  };
  return kFilters;
}

const std::unordered_map<std::string, TestFn>& builtin_tests() {
  static const std::unordered_map<std::string, TestFn> kTests = {
      {"defined", t_defined},
      {"undefined", t_undefined},
      {"none", t_none},
      {"boolean", t_boolean},
      {"true", t_true},
      {"false", t_false},
      {"integer", t_integer},
      {"float", t_float},
      {"number", t_number},
      {"string", t_string},
      {"mapping", t_mapping},
      {"iterable", t_iterable},
      {"sequence", t_sequence},
      {"callable", t_callable},
      {"odd", t_odd},
      {"even", t_even},
      {"divisibleby", t_divisibleby},
      {"equalto", t_eq},
      {"eq", t_eq},
      {"==", t_eq},
      {"ne", t_ne},
      {"!=", t_ne},
      {"lt", t_lt},
      {"<", t_lt},
      {"lessthan", t_lt},
      {"le", t_le},
      {"<=", t_le},
      {"gt", t_gt},
      {">", t_gt},
      {"greaterthan", t_gt},
      {"ge", t_ge},
      {">=", t_ge},
      {"in", t_in},
      {"sameas", t_sameas},
      {"lower", t_lower},
      {"upper", t_upper},
      {"escaped", t_escaped},
  };
  return kTests;
}

void install_globals(Scope& scope) {
  scope.vars["range"] = Value::function("range", [](CallArgs& a, Interpreter& in) -> Value {
    if (a.pos.empty() || a.pos.size() > 3) in.fail("range() takes 1 to 3 integer arguments");
    for (const Value& v : a.pos)
      if (!v.is_int() && !v.is_bool())
        in.fail(fmt::format("range() arguments must be integers, got {}", v.type_name()));
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = a.pos[0].as_int();
    } else {
      start = a.pos[0].as_int();
      stop = a.pos[1].as_int();
      if (a.pos.size() == 3) step = a.pos[2].as_int();
    }
    if (step == 0) in.fail("range() step must not be zero");
    // Python's range length, checked before anything is allocated.
    __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
    __int128 len = span <= 0 ? 0
                             : (span + (step > 0 ? step : -__int128(step)) - 1) /
                                   (step > 0 ? step : -__int128(step));
    if (len > in.limits().max_range)
      in.fail(fmt::format("range() longer than {} items", in.limits().max_range));
    List r;
    r.reserve(size_t(len));
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      r.push_back(Value(i));
      if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
    }
    return Value(std::move(r));
  });
  scope.vars["namespace"] = Value::function("namespace", [](CallArgs& a, Interpreter& in) {
    Value ns = Value::namespace_object();
    for (const Value& v : a.pos) {
      if (!v.is_dict()) in.fail("namespace() takes keyword arguments or a dict");
      for (const auto& [k, x] : v.as_dict().items()) ns.as_dict().set(k, x);
    }
    for (const auto& [k, x] : a.kw) ns.as_dict().set(k, x);
    return ns;
  });
  scope.vars["dict"] = Value::function("dict", [](CallArgs& a, Interpreter& in) {
    Value d = Value::dict();
    for (const Value& v : a.pos) {
      if (!v.is_dict()) in.fail("dict() takes keyword arguments or a dict");
      for (const auto& [k, x] : v.as_dict().items()) d.as_dict().set(k, x);
    }
    for (const auto& [k, x] : a.kw) d.as_dict().set(k, x);
    return d;
  });
  // transformers: raise_exception(message) raises jinja2.TemplateError(message).
  scope.vars["raise_exception"] =
      Value::function("raise_exception", [](CallArgs& a, Interpreter& in) -> Value {
        std::string msg = a.pos.empty() ? std::string() : a.pos[0].str();
        in.fail("raise_exception: " + msg);
      });
  // transformers: strftime_now(format) = datetime.now().strftime(format).
  scope.vars["strftime_now"] =
      Value::function("strftime_now", [](CallArgs& a, Interpreter& in) -> Value {
        if (a.pos.empty() || !a.pos[0].is_string())
          in.fail("strftime_now(format) needs a format string");
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = std::strftime(buf, sizeof buf, a.pos[0].as_string().c_str(), &tm);
        return Value(std::string(buf, n));
      });
}

}  // namespace gyre::tokenizer::jinja
