// Typed wire-JSON readers (request_json.h).
#include "gyre/serve/request_json.h"

#include <cmath>

namespace gyre::serve {

void bad_field(const std::string& field, const std::string& what) {
  throw RequestError(400, field, fmt::format("{}: {}", field, what));
}

void bad_request(const std::string& what, int status) { throw RequestError(status, "", what); }

std::string json_type(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

json parse_json_object(std::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    throw RequestError(400, "",
                       fmt::format("request body is not valid JSON (byte {}): send one JSON object "
                                   "with Content-Type: application/json",
                                   e.byte));
  }
  if (!j.is_object())
    throw RequestError(400, "",
                       fmt::format("request body must be a JSON object, got {}", json_type(j)));
  return j;
}

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

static std::string brief(const json& v) {
  std::string s = dump_json(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

int64_t as_int(const json& v, const std::string& path, int64_t lo, int64_t hi) {
  int64_t x;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      bad_field(path, fmt::format("{} is too large", brief(v)));
    x = v.get<int64_t>();
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e18)
      bad_field(path, fmt::format("must be an integer, got {}", brief(v)));
    x = int64_t(d);
  } else {
    bad_field(path, fmt::format("must be an integer, got {} {}", json_type(v), brief(v)));
  }
  if (x < lo || x > hi) {
    if (hi == INT64_MAX) bad_field(path, fmt::format("must be >= {}, got {}", lo, x));
    bad_field(path, fmt::format("must be in [{}, {}], got {}", lo, hi, x));
  }
  return x;
}

std::optional<int64_t> opt_int(const json& obj, const char* key, const std::string& path,
                               int64_t lo, int64_t hi) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  return as_int(*v, path, lo, hi);
}

std::optional<double> opt_number(const json& obj, const char* key, const std::string& path) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number())
    bad_field(path, fmt::format("must be a number, got {} {}", json_type(*v), brief(*v)));
  return v->get<double>();
}

std::optional<bool> opt_bool(const json& obj, const char* key, const std::string& path) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean())
    bad_field(path, fmt::format("must be true or false, got {} {}", json_type(*v), brief(*v)));
  return v->get<bool>();
}

std::optional<std::string> opt_string(const json& obj, const char* key, const std::string& path) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string())
    bad_field(path, fmt::format("must be a string, got {} {}", json_type(*v), brief(*v)));
  return v->get<std::string>();
}

std::optional<std::vector<std::string>> opt_string_or_list(const json& obj, const char* key,
                                                           const std::string& path) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string())
        bad_field(fmt::format("{}[{}]", path, i),
                  fmt::format("must be a string, got {}", json_type((*v)[i])));
      out.push_back((*v)[i].get<std::string>());
    }
  } else {
    bad_field(path, fmt::format("must be a string or a list of strings, got {}", json_type(*v)));
  }
  return out;
}

std::vector<int32_t> int_list(const json& v, const std::string& path, int64_t lo, int64_t hi) {
  if (!v.is_array())
    bad_field(path, fmt::format("must be a list of integers, got {}", json_type(v)));
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out.push_back(int32_t(as_int(v[i], fmt::format("{}[{}]", path, i), lo, hi)));
  return out;
}

}  // namespace gyre::serve
