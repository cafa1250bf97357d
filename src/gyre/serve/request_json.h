// Typed reads of wire JSON with errors that name the field: the one place where a request body
// becomes values. Every reader throws RequestError (a gyre::Error carrying the HTTP status and the
// offending parameter) with a message saying what the field must be and what was sent.
// Rules shared by the native and OpenAI layers: a JSON null means "absent" (pydantic/SGLang
// semantics), integers may be sent as floats with an integral value (pydantic's lax mode accepts
// 16.0 for an int field). Unknown keys are the callers' choice: the native /generate parser refuses
// them (SGLang's SamplingParams(**dict) does), the OpenAI parsers ignore them (OpenAI clients send
// many; SGLang's pydantic models ignore them too).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gyre/core/error.h"

namespace gyre::serve {

using json = nlohmann::json;

class RequestError : public Error {
 public:
  RequestError(int status, std::string param, const std::string& message)
      : Error(ErrorKind::invalid_argument, message), status_(status), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string param_;
};

[[noreturn]] void bad_field(const std::string& field, const std::string& what);
[[noreturn]] void bad_request(const std::string& what, int status = 400);

// Parses a request body that must be one JSON object; malformed JSON -> 400 naming the byte offset.
json parse_json_object(std::string_view body);

// Dumps with invalid UTF-8 replaced (U+FFFD) instead of throwing.
std::string dump_json(const json& j);

// `obj[key]`, or nullptr when absent or null.
const json* field(const json& obj, const char* key);

std::optional<int64_t> opt_int(const json& obj, const char* key, const std::string& path,
                               int64_t lo = INT64_MIN, int64_t hi = INT64_MAX);
std::optional<double> opt_number(const json& obj, const char* key, const std::string& path);
std::optional<bool> opt_bool(const json& obj, const char* key, const std::string& path);
std::optional<std::string> opt_string(const json& obj, const char* key, const std::string& path);
// A string or a list of strings (OpenAI `stop`, SGLang `stop`).
std::optional<std::vector<std::string>> opt_string_or_list(const json& obj, const char* key,
                                                           const std::string& path);
// A list of ints in [lo, hi] (token ids).
std::vector<int32_t> int_list(const json& v, const std::string& path, int64_t lo = INT32_MIN,
                              int64_t hi = INT32_MAX);
int64_t as_int(const json& v, const std::string& path, int64_t lo = INT64_MIN,
               int64_t hi = INT64_MAX);

// The JSON type name for messages ("string", "array", ...).
std::string json_type(const json& v);

}  // namespace gyre::serve
