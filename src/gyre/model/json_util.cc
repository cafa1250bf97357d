// Typed JSON access with file/key-naming errors (see json_util.h).
#include "gyre/model/json_util.h"

#include <cmath>
#include <limits>

#include "gyre/core/error.h"

namespace gyre::model::json_util {

void line_col(const std::string& text, size_t byte, size_t* line, size_t* col) {
  size_t l = 1, c = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++l;
      c = 1;
    } else {
      ++c;
    }
  }
  *line = l;
  *col = c;
}

Json parse(const std::string& text, const std::string& source) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann's e.byte is 1-based and points just past the offending character.
    size_t byte = e.byte > 0 ? e.byte - 1 : 0;
    size_t line = 0, col = 0;
    line_col(text, byte, &line, &col);
    std::string what = e.what();
    // Keep only the parser's description after its "[json.exception...] parse error ...: " prefix.
    auto colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    GYRE_THROW(invalid_argument, "{}: invalid JSON at line {}, column {} (byte {}): {}", source,
               line, col, byte, what);
  }
}

const char* type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::string: return "string";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "number";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::array: return "array";
    case Json::value_t::object: return "object";
    case Json::value_t::null: return "null";
    default: return "value";
  }
}

namespace {

const Json* lookup(const Json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void missing(const std::string& key, const std::string& source,
                          const std::string& prefix) {
  GYRE_THROW(invalid_argument, "{}: missing required key '{}{}'; add it to the file", source,
             prefix, key);
}

[[noreturn]] void wrong_type(const Json& v, const char* expected, const std::string& key,
                             const std::string& source, const std::string& prefix) {
  GYRE_THROW(invalid_argument, "{}: key '{}{}' must be {}, got {} {}", source, prefix, key,
             expected, type_name(v), v.dump());
}

int64_t to_int(const Json& v, const std::string& key, const std::string& source,
               const std::string& prefix) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      wrong_type(v, "an integer that fits in 63 bits", key, source, prefix);
    return int64_t(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  // HF occasionally writes integral values as floats (e.g. "factor"-like fields copied around);
  // accept those that are exactly integral so such files still load.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return int64_t(d);
  }
  wrong_type(v, "an integer", key, source, prefix);
}

double to_double(const Json& v, const std::string& key, const std::string& source,
                 const std::string& prefix) {
  if (!v.is_number()) wrong_type(v, "a number", key, source, prefix);
  return v.get<double>();
}

}  // namespace

int64_t as_int(const Json& v, const std::string& what, const std::string& source) {
  return to_int(v, what, source, "");
}

int64_t get_int(const Json& obj, const std::string& key, const std::string& source,
                const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) missing(key, source, prefix);
  return to_int(*v, key, source, prefix);
}

double get_double(const Json& obj, const std::string& key, const std::string& source,
                  const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) missing(key, source, prefix);
  return to_double(*v, key, source, prefix);
}

std::string get_string(const Json& obj, const std::string& key, const std::string& source,
                       const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) missing(key, source, prefix);
  if (!v->is_string()) wrong_type(*v, "a string", key, source, prefix);
  return v->get<std::string>();
}

std::optional<int64_t> opt_int(const Json& obj, const std::string& key, const std::string& source,
                               const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) return std::nullopt;
  return to_int(*v, key, source, prefix);
}

std::optional<double> opt_double(const Json& obj, const std::string& key, const std::string& source,
                                 const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) return std::nullopt;
  return to_double(*v, key, source, prefix);
}

std::optional<bool> opt_bool(const Json& obj, const std::string& key, const std::string& source,
                             const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(*v, "true or false", key, source, prefix);
  return v->get<bool>();
}

std::optional<std::string> opt_string(const Json& obj, const std::string& key,
                                      const std::string& source, const std::string& prefix) {
  const Json* v = lookup(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(*v, "a string", key, source, prefix);
  return v->get<std::string>();
}

}  // namespace gyre::model::json_util
