// The value type of the Jinja interpreter: Python-like dynamic values (undefined, none, bool, int,
// float, str, list, dict, callable) with the semantics chat templates rely on.
// Invariants:
// - Strings are UTF-8; lengths, indexes and slices count code points, as Python's str does.
// - Lists and dicts are shared by reference (a copied Value aliases the same container), so
//   `list.append` and namespace attribute sets are visible through every name, as in Python.
// - Dicts keep insertion order (Python 3.7+ dicts), which tojson output depends on; keys are
//   strings (a non-string key in a template literal is converted with Python's str()).
// - Undefined carries the name that was looked up, for "'x' is undefined" errors.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace gyre::tokenizer::jinja {

class Value;
class Interpreter;

// Positional and keyword arguments of a call (function, macro, filter, test or method).
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Argument `name` if passed by keyword, else the positional one at `index`, else nullptr.
  const Value* find(size_t index, std::string_view name) const;
};

using NativeFn = std::function<Value(CallArgs& args, Interpreter& interp)>;

struct Callable {
  std::string name;  // for error messages
  NativeFn fn;
};

class Dict {
 public:
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(const std::string& key, Value value);
  bool erase(std::string_view key);
  size_t size() const;  // out of line: Value is incomplete here
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, Value>> items_;
  std::unordered_map<std::string, size_t> index_;
};

using List = std::vector<Value>;

class Value {
 public:
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  static Value undefined(std::string name = "") {
    Value v;
    v.str_ = std::make_shared<std::string>(std::move(name));
    return v;
  }
  static Value none() { return make(Type::kNone); }
  Value(bool b) : type_(Type::kBool), int_(b) {}
  Value(int i) : type_(Type::kInt), int_(i) {}
  Value(int64_t i) : type_(Type::kInt), int_(i) {}
  Value(double d) : type_(Type::kFloat), float_(d) {}
  Value(std::string s) : type_(Type::kString), str_(std::make_shared<std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  Value(List l) : type_(Type::kList), list_(std::make_shared<List>(std::move(l))) {}
  static Value dict() {
    Value v = make(Type::kDict);
    v.dict_ = std::make_shared<Dict>();
    return v;
  }
  // A namespace() object: a dict whose entries may be assigned with `{% set ns.attr = ... %}`.
  static Value namespace_object() {
    Value v = dict();
    v.is_namespace_ = true;
    return v;
  }
  static Value function(std::string name, NativeFn fn) {
    Value v = make(Type::kCallable);
    v.fn_ = std::make_shared<Callable>(Callable{std::move(name), std::move(fn)});
    return v;
  }

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_int() const { return type_ == Type::kInt; }
  bool is_float() const { return type_ == Type::kFloat; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_list() const { return type_ == Type::kList; }
  bool is_dict() const { return type_ == Type::kDict; }
  bool is_callable() const { return type_ == Type::kCallable; }
  bool is_namespace() const { return is_namespace_; }
  // Python's "safe" marker: output of macros and the safe filter; no autoescape is applied anyway
  // (transformers renders without autoescape), so it only matters for the escape filter.
  bool is_safe() const { return safe_; }
  // A Python tuple: behaves as a list here, only printed with parentheses, as repr() does.
  static Value tuple(List l) {
    Value v(std::move(l));
    v.tuple_ = true;
    return v;
  }
  Value& mark_safe(bool safe = true) {
    safe_ = safe;
    return *this;
  }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_float() const {
    return type_ == Type::kInt || type_ == Type::kBool ? double(int_) : float_;
  }
  const std::string& as_string() const { return *str_; }
  const std::string& undefined_name() const;
  List& as_list() const { return *list_; }
  Dict& as_dict() const { return *dict_; }
  const Callable& as_callable() const { return *fn_; }
  const void* identity() const;  // container pointer (Python `is`), nullptr for scalars

  // Python truthiness: undefined, none, false, 0, 0.0, "", [] and {} are false.
  bool truthy() const;
  // Python str(): what `{{ x }}` prints; undefined prints as "".
  std::string str() const;
  // Python repr(): how values nested in a printed list/dict appear.
  std::string repr() const;
  std::string repr(int depth) const;
  // Name of the type in error messages ("string", "list", ...).
  const char* type_name() const;

  static Value from_json(const nlohmann::ordered_json& j);
  static Value from_json(const nlohmann::json& j);
  nlohmann::ordered_json to_json() const;

 private:
  static Value make(Type t) {
    Value v;
    v.type_ = t;
    return v;
  }
  Type type_ = Type::kUndefined;
  bool is_namespace_ = false;
  bool safe_ = false;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::shared_ptr<std::string> str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Callable> fn_;
};

// Whether `target` (a container's identity()) is `from` or is nested inside it. Mutations that
// store a container (list.append, namespace attribute set) check this first, so values never form
// cycles (which would leak and make printing recurse forever).
bool reaches(const Value& from, const void* target);
inline constexpr int kMaxValueNesting = 512;  // repr/str/tojson refuse deeper values

// Python == (1 == 1.0 == True; containers compare deeply).
bool values_equal(const Value& a, const Value& b);
// Python ordering for <, >, sort, min, max: numbers with numbers, strings with strings, lists
// lexicographically. Returns <0, 0, >0; throws gyre::Error for unorderable types.
int compare_values(const Value& a, const Value& b);

// Python repr() of a float (shortest round-trip digits, "1.0", "1e-05", "1e+16", "inf", "nan").
std::string python_float_repr(double d);

struct JsonDumpOptions {
  bool pretty = false;      // Python indent=... given: one item per line
  std::string indent_unit;  // indent=N means N spaces; a string indent is used as is
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool ensure_ascii = false;
  bool sort_keys = false;
};
// json.dumps(value, ...) exactly as Python prints it (transformers' tojson filter calls json.dumps
// with ensure_ascii=False). Throws gyre::Error for values JSON cannot hold (undefined, callables).
std::string dump_json(const Value& v, const JsonDumpOptions& options);

}  // namespace gyre::tokenizer::jinja
