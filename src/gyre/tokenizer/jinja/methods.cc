// Python methods callable from templates: str (split, strip, startswith, replace, format, ...),
// dict (items, keys, values, get) and list (append, extend, index, count). Namespace objects expose
// no methods, as in Jinja. Mutating list methods exist because templates accumulate with them;
// dicts stay read-only (transformers renders in an immutable sandbox).
#include <algorithm>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/interpreter.h"
#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer::jinja {
namespace {

std::optional<std::string> opt_str(Interpreter& in, const CallArgs& a, size_t i, const char* name,
                                   const char* method) {
  const Value* v = a.find(i, name);
  if (!v || v->is_none()) return std::nullopt;
  if (!v->is_string())
    in.fail(
        fmt::format("{}(): argument '{}' must be a string, got {}", method, name, v->type_name()));
  return v->as_string();
}
int64_t opt_int(Interpreter& in, const CallArgs& a, size_t i, const char* name, int64_t dflt) {
  const Value* v = a.find(i, name);
  if (!v || v->is_none()) return dflt;
  if (!v->is_int() && !v->is_bool()) in.fail(fmt::format("argument '{}' must be an integer", name));
  return v->as_int();
}
Value str_list(const std::vector<std::string>& parts) {
  List l;
  for (const auto& p : parts) l.emplace_back(p);
  return Value(std::move(l));
}

// str.startswith / endswith with a str or a tuple (list) of str.
bool affix(Interpreter& in, const std::string& s, const CallArgs& a, bool prefix) {
  const Value* v = a.find(0, prefix ? "prefix" : "suffix");
  if (!v) in.fail(prefix ? "startswith() needs a prefix" : "endswith() needs a suffix");
  auto match = [&](const Value& x) {
    if (!x.is_string()) in.fail("startswith/endswith take a string or a tuple of strings");
    const std::string& t = x.as_string();
    if (t.size() > s.size()) return false;
    return prefix ? s.compare(0, t.size(), t) == 0
                  : s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  if (v->is_list()) {
    for (const Value& x : v->as_list())
      if (match(x)) return true;
    return false;
  }
  return match(*v);
}

// str.format with {}, {0} and {name} fields ({{ and }} escape braces); format specs are rejected.
std::string py_format(Interpreter& in, const std::string& fmtstr, const CallArgs& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < fmtstr.size(); ++i) {
    char c = fmtstr[i];
    if (c == '}' && i + 1 < fmtstr.size() && fmtstr[i + 1] == '}') {
      out.push_back('}');
      ++i;
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmtstr.size() && fmtstr[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    size_t e = fmtstr.find('}', i);
    if (e == std::string::npos) in.fail("format(): single '{' encountered in format string");
    std::string field = fmtstr.substr(i + 1, e - i - 1);
    if (field.find(':') != std::string::npos || field.find('!') != std::string::npos)
      in.fail("format(): format specs and conversions ({:...}, {!r}) are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_idx < a.pos.size() ? &a.pos[auto_idx] : nullptr;
      ++auto_idx;
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      v = k < a.pos.size() ? &a.pos[k] : nullptr;
    } else {
      v = a.find(SIZE_MAX, field);
    }
    if (!v) in.fail(fmt::format("format(): no argument for field '{{{}}}'", field));
    out += v->str();
    in.check_size(out.size());
    i = e;
  }
  return out;
}

Value string_method(Interpreter& in, const Value& self, const std::string& name) {
  using F = Value (*)(Interpreter&, const std::string&, CallArgs&);
  static const std::unordered_map<std::string, F> kMethods = {
      {"upper",
       [](Interpreter&, const std::string& s, CallArgs&) { return Value(pystr::upper(s)); }},
      {"lower",
       [](Interpreter&, const std::string& s, CallArgs&) { return Value(pystr::lower(s)); }},
      {"title",
       [](Interpreter&, const std::string& s, CallArgs&) { return Value(pystr::title(s)); }},
      {"capitalize",
       [](Interpreter&, const std::string& s, CallArgs&) { return Value(pystr::capitalize(s)); }},
      {"strip",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         return Value(pystr::strip(s, opt_str(in, a, 0, "chars", "strip"), true, true));
       }},
      {"lstrip",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         return Value(pystr::strip(s, opt_str(in, a, 0, "chars", "lstrip"), true, false));
       }},
      {"rstrip",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         return Value(pystr::strip(s, opt_str(in, a, 0, "chars", "rstrip"), false, true));
       }},
      {"split",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         auto sep = opt_str(in, a, 0, "sep", "split");
         if (sep && sep->empty()) in.fail("split(): empty separator");
         return str_list(pystr::split(s, sep, opt_int(in, a, 1, "maxsplit", -1), false));
       }},
      {"rsplit",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         auto sep = opt_str(in, a, 0, "sep", "rsplit");
         if (sep && sep->empty()) in.fail("rsplit(): empty separator");
         return str_list(pystr::split(s, sep, opt_int(in, a, 1, "maxsplit", -1), true));
       }},
      {"splitlines",
       [](Interpreter&, const std::string& s, CallArgs& a) {
         const Value* k = a.find(0, "keepends");
         return str_list(pystr::splitlines(s, k && k->truthy()));
       }},
      {"startswith", [](Interpreter& in, const std::string& s,
                        CallArgs& a) { return Value(affix(in, s, a, true)); }},
      {"endswith", [](Interpreter& in, const std::string& s,
                      CallArgs& a) { return Value(affix(in, s, a, false)); }},
      {"replace",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         auto o = opt_str(in, a, 0, "old", "replace"), n = opt_str(in, a, 1, "new", "replace");
         if (!o || !n) in.fail("replace(old, new[, count]) needs two strings");
         std::string r = pystr::replace(s, *o, *n, opt_int(in, a, 2, "count", -1));
         in.check_size(r.size());
         return Value(r);
       }},
      {"find",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         auto sub = opt_str(in, a, 0, "sub", "find");
         if (!sub) in.fail("find(sub) needs a string");
         return Value(pystr::find(s, *sub));
       }},
      {"count",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         auto sub = opt_str(in, a, 0, "sub", "count");
         if (!sub) in.fail("count(sub) needs a string");
         return Value(pystr::count(s, *sub));
       }},
      {"join",
       [](Interpreter& in, const std::string& s, CallArgs& a) {
         if (a.pos.empty()) in.fail("join(iterable) needs an argument");
         std::string out;
         bool first = true;
         for (const Value& x : in.iterate(a.pos[0])) {
           if (!x.is_string())
             in.fail(fmt::format("join(): expected str items, got {}", x.type_name()));
           if (!first) out += s;
           first = false;
           out += x.as_string();
           in.check_size(out.size());
         }
         return Value(out);
       }},
      {"format", [](Interpreter& in, const std::string& s,
                    CallArgs& a) { return Value(py_format(in, s, a)); }},
      {"isdigit",
       [](Interpreter&, const std::string& s, CallArgs&) {
         return Value(!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit));
       }},
      {"isalpha",
       [](Interpreter&, const std::string& s, CallArgs&) {
         return Value(!s.empty() && std::all_of(s.begin(), s.end(), ::isalpha));
       }},
      {"isspace",
       [](Interpreter&, const std::string& s, CallArgs&) {
         auto p = pystr::decode(s);
         return Value(!p.cps.empty() && std::all_of(p.cps.begin(), p.cps.end(),
                                                    [](uint32_t c) { return pystr::is_space(c); }));
       }},
      {"islower", [](Interpreter&, const std::string& s,
                     CallArgs&) { return Value(pystr::lower(s) == s && pystr::upper(s) != s); }},
      {"isupper", [](Interpreter&, const std::string& s,
                     CallArgs&) { return Value(pystr::upper(s) == s && pystr::lower(s) != s); }},
  };
  auto it = kMethods.find(name);
  if (it == kMethods.end()) return Value::undefined();
  F f = it->second;
  return Value::function("str." + name, [f, self](CallArgs& a, Interpreter& in) {
    return f(in, self.as_string(), a);
  });
}

Value dict_method(const Value& self, const std::string& name) {
  if (name == "items")
    return Value::function("dict.items", [self](CallArgs&, Interpreter&) {
      List r;
      for (const auto& [k, v] : self.as_dict().items())
        r.push_back(Value::tuple(List{Value(k), v}));
      return Value(std::move(r));
    });
  if (name == "keys")
    return Value::function("dict.keys", [self](CallArgs&, Interpreter&) {
      List r;
      for (const auto& [k, v] : self.as_dict().items()) r.emplace_back(k);
      return Value(std::move(r));
    });
  if (name == "values")
    return Value::function("dict.values", [self](CallArgs&, Interpreter&) {
      List r;
      for (const auto& [k, v] : self.as_dict().items()) r.push_back(v);
      return Value(std::move(r));
    });
  if (name == "get")
    return Value::function("dict.get", [self](CallArgs& a, Interpreter& in) {
      if (a.pos.empty()) in.fail("get(key[, default]) needs a key");
      const Value& k = a.pos[0];
      if (const Value* v = self.as_dict().find(k.is_string() ? k.as_string() : k.str())) return *v;
      return a.pos.size() > 1 ? a.pos[1] : Value::none();
    });
  return Value::undefined();
}

Value list_method(const Value& self, const std::string& name) {
  if (name == "append")
    return Value::function("list.append", [self](CallArgs& a, Interpreter& in) {
      if (a.pos.size() != 1) in.fail("append() takes exactly one argument");
      if (reaches(a.pos[0], self.identity())) in.fail("append(): a list cannot contain itself");
      in.count_iterations(1);  // bounds accumulation loops
      self.as_list().push_back(a.pos[0]);
      return Value::none();
    });
  if (name == "extend")
    return Value::function("list.extend", [self](CallArgs& a, Interpreter& in) {
      if (a.pos.size() != 1) in.fail("extend() takes exactly one argument");
      List items = in.iterate(a.pos[0]);
      for (const Value& x : items)
        if (reaches(x, self.identity())) in.fail("extend(): a list cannot contain itself");
      in.count_iterations(int64_t(items.size()));
      self.as_list().insert(self.as_list().end(), items.begin(), items.end());
      return Value::none();
    });
  if (name == "index")
    return Value::function("list.index", [self](CallArgs& a, Interpreter& in) {
      if (a.pos.empty()) in.fail("index(value) needs an argument");
      const List& l = self.as_list();
      for (size_t i = 0; i < l.size(); ++i)
        if (values_equal(l[i], a.pos[0])) return Value(int64_t(i));
      in.fail(fmt::format("index(): {} is not in list", a.pos[0].repr()));
    });
  if (name == "count")
    return Value::function("list.count", [self](CallArgs& a, Interpreter& in) {
      if (a.pos.empty()) in.fail("count(value) needs an argument");
      int64_t n = 0;
      for (const Value& x : self.as_list()) n += values_equal(x, a.pos[0]);
      return Value(n);
    });
  return Value::undefined();
}

}  // namespace

Value get_method(Interpreter& interp, const Value& obj, const std::string& name) {
  switch (obj.type()) {
    case Value::Type::kString: return string_method(interp, obj, name);
    case Value::Type::kDict:
      return obj.is_namespace() ? Value::undefined() : dict_method(obj, name);
    case Value::Type::kList: return list_method(obj, name);
    default: return Value::undefined();
  }
}

}  // namespace gyre::tokenizer::jinja
