// Value: Python-like semantics for the Jinja interpreter (see value.h).
#include "gyre/tokenizer/jinja/value.h"

#include <charconv>
#include <cmath>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer::jinja {

const Value* CallArgs::find(size_t index, std::string_view name) const {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  if (index < pos.size()) return &pos[index];
  return nullptr;
}

const Value* Dict::find(std::string_view key) const {
  auto it = index_.find(std::string(key));
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

Value* Dict::find(std::string_view key) {
  auto it = index_.find(std::string(key));
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

void Dict::set(const std::string& key, Value value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second].second = std::move(value);
    return;
  }
  index_.emplace(key, items_.size());
  items_.emplace_back(key, std::move(value));
}

size_t Dict::size() const { return items_.size(); }

bool Dict::erase(std::string_view key) {
  auto it = index_.find(std::string(key));
  if (it == index_.end()) return false;
  items_.erase(items_.begin() + long(it->second));
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
  return true;
}

const std::string& Value::undefined_name() const {
  static const std::string kEmpty;
  return type_ == Type::kUndefined && str_ ? *str_ : kEmpty;
}

const void* Value::identity() const {
  switch (type_) {
    case Type::kList: return list_.get();
    case Type::kDict: return dict_.get();
    case Type::kCallable: return fn_.get();
    default: return nullptr;
  }
}

bool Value::truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone: return false;
    case Type::kBool:
    case Type::kInt: return int_ != 0;
    case Type::kFloat: return float_ != 0.0;
    case Type::kString: return !str_->empty();
    case Type::kList: return !list_->empty();
    case Type::kDict: return dict_->size() > 0;
    case Type::kCallable: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (type_) {
    case Type::kUndefined: return "undefined";
    case Type::kNone: return "none";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kFloat: return "float";
    case Type::kString: return "string";
    case Type::kList: return "list";
    case Type::kDict: return is_namespace_ ? "namespace" : "dict";
    case Type::kCallable: return "function";
  }
  return "?";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02": shortest round-trip digits
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (sci[i] != '.') digits.push_back(sci[i]);
  int exp = std::stoi(sci.substr(e + 1));
  std::string out = neg ? "-" : "";
  // Python's repr switches to exponent form when the exponent is < -4 or >= 16.
  if (exp < -4 || exp >= 16) {
    out += digits[0];
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
  } else if (exp >= 0) {
    size_t int_len = size_t(exp) + 1;
    if (digits.size() <= int_len) {
      out += digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  } else {
    out += "0." + std::string(size_t(-exp - 1), '0') + digits;
  }
  return out;
}

std::string Value::str() const {
  switch (type_) {
    case Type::kUndefined: return "";
    case Type::kNone: return "None";
    case Type::kBool: return int_ ? "True" : "False";
    case Type::kInt: return std::to_string(int_);
    case Type::kFloat: return python_float_repr(float_);
    case Type::kString: return *str_;
    case Type::kCallable: return "<function " + fn_->name + ">";
    default: return repr();
  }
}

bool reaches(const Value& from, const void* target) {
  if (!target) return false;
  std::vector<const Value*> stack{&from};
  std::unordered_map<const void*, bool> seen;
  while (!stack.empty()) {
    const Value* v = stack.back();
    stack.pop_back();
    const void* id = v->identity();
    if (!id || v->is_callable()) continue;
    if (id == target) return true;
    if (!seen.emplace(id, true).second) continue;
    if (v->is_list())
      for (const Value& x : v->as_list()) stack.push_back(&x);
    else
      for (const auto& [k, x] : v->as_dict().items()) stack.push_back(&x);
  }
  return false;
}

std::string Value::repr() const { return repr(0); }

std::string Value::repr(int depth) const {
  if (depth > kMaxValueNesting)
    GYRE_THROW(invalid_argument, "value nested deeper than {} levels cannot be printed",
               kMaxValueNesting);
  switch (type_) {
    case Type::kString: return pystr::repr(*str_);
    case Type::kList: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        out += (*list_)[i].repr(depth + 1);
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Type::kDict: {
      std::string out = is_namespace_ ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : dict_->items()) {
        if (!first) out += ", ";
        first = false;
        out += pystr::repr(k) + ": " + v.repr(depth + 1);
      }
      return out + (is_namespace_ ? "}>" : "}");
    }
    case Type::kUndefined: return "Undefined";
    default: return str();
  }
}

namespace {
template <typename J>
Value from_json_impl(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value(double(u));
      return Value(int64_t(u));
    }
    case nlohmann::json::value_t::number_float: return Value(j.template get<double>());
    case nlohmann::json::value_t::string: return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json_impl(e));
      return Value(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Value d = Value::dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.as_dict().set(it.key(), from_json_impl(*it));
      return d;
    }
    default: return Value::none();  // binary / discarded: not produced by JSON text
  }
}
}  // namespace

Value Value::from_json(const nlohmann::ordered_json& j) { return from_json_impl(j); }
Value Value::from_json(const nlohmann::json& j) { return from_json_impl(j); }

nlohmann::ordered_json Value::to_json() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone: return nullptr;
    case Type::kBool: return int_ != 0;
    case Type::kInt: return int_;
    case Type::kFloat: return float_;
    case Type::kString: return *str_;
    case Type::kList: {
      auto a = nlohmann::ordered_json::array();
      for (const auto& e : *list_) a.push_back(e.to_json());
      return a;
    }
    case Type::kDict: {
      auto o = nlohmann::ordered_json::object();
      for (const auto& [k, v] : dict_->items()) o[k] = v.to_json();
      return o;
    }
    case Type::kCallable: break;
  }
  GYRE_THROW(invalid_argument, "cannot convert function '{}' to JSON", fn_->name);
}

bool values_equal(const Value& a, const Value& b) {
  using T = Value::Type;
  bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
  if (an && bn) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case T::kUndefined:
    case T::kNone: return true;
    case T::kString: return a.as_string() == b.as_string();
    case T::kList: {
      const List &x = a.as_list(), &y = b.as_list();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!values_equal(x[i], y[i])) return false;
      return true;
    }
    case T::kDict: {
      const Dict &x = a.as_dict(), &y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.items()) {
        const Value* o = y.find(k);
        if (!o || !values_equal(v, *o)) return false;
      }
      return true;
    }
    case T::kCallable: return a.identity() == b.identity();
    default: return false;
  }
}

int compare_values(const Value& a, const Value& b) {
  bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
  if (an && bn) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    return a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());  // UTF-8 byte order == code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list()) {
    const List &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      int c = compare_values(x[i], y[i]);
      if (c) return c;
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  GYRE_THROW(invalid_argument,
             "cannot order {} and {} (comparison needs two numbers, two strings "
             "or two lists)",
             a.type_name(), b.type_name());
}

namespace {
void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  pystr::CodePoints p = pystr::decode(s);
  for (uint32_t c : p.cps) {
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else if (ensure_ascii && c >= 0x80) {
      if (c >= 0x10000) {
        uint32_t v = c - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", c);
      }
    } else {
      pystr::append_utf8(out, c);
    }
  }
  out.push_back('"');
}

void dump(std::string& out, const Value& v, const JsonDumpOptions& o, int level) {
  if (level > kMaxValueNesting)
    GYRE_THROW(invalid_argument, "tojson: value nested deeper than {} levels", kMaxValueNesting);
  auto newline = [&](int lvl) {
    if (!o.pretty) return;
    out.push_back('\n');
    for (int i = 0; i < lvl; ++i) out += o.indent_unit;
  };
  switch (v.type()) {
    case Value::Type::kNone: out += "null"; return;
    case Value::Type::kBool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Type::kInt: out += std::to_string(v.as_int()); return;
    case Value::Type::kFloat: {
      double d = v.as_float();
      if (std::isnan(d))
        out += "NaN";
      else if (std::isinf(d))
        out += d > 0 ? "Infinity" : "-Infinity";
      else
        out += python_float_repr(d);
      return;
    }
    case Value::Type::kString: dump_string(out, v.as_string(), o.ensure_ascii); return;
    case Value::Type::kList: {
      const List& l = v.as_list();
      if (l.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < l.size(); ++i) {
        if (i) out += o.item_separator;
        newline(level + 1);
        dump(out, l[i], o, level + 1);
      }
      newline(level);
      out.push_back(']');
      return;
    }
    case Value::Type::kDict: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.as_dict().items()) items.push_back(&kv);
      if (o.sort_keys)
        std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      if (items.empty()) {
        out += "{}";
        return;
      }
      out.push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += o.item_separator;
        newline(level + 1);
        dump_string(out, items[i]->first, o.ensure_ascii);
        out += o.key_separator;
        dump(out, items[i]->second, o, level + 1);
      }
      newline(level);
      out.push_back('}');
      return;
    }
    case Value::Type::kUndefined:
      GYRE_THROW(invalid_argument,
                 "tojson: '{}' is undefined (Python's json.dumps cannot serialise Undefined); "
                 "check the variable name or guard it with `is defined`",
                 v.undefined_name());
    case Value::Type::kCallable:
      GYRE_THROW(invalid_argument, "tojson: function '{}' is not JSON serialisable",
                 v.as_callable().name);
  }
}
}  // namespace

std::string dump_json(const Value& v, const JsonDumpOptions& options) {
  std::string out;
  dump(out, v, options, 0);
  return out;
}

}  // namespace gyre::tokenizer::jinja
