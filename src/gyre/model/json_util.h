// Typed access to JSON documents read from model folders (config.json, safetensors headers, index
// files), with errors that name the source file, the key path and what was expected — so a user can
// fix the file without reading our code.
//
// Invariants: `source` is what the message calls the document (usually its path); a key path like
// "rope_scaling.factor" is built by the caller through `prefix`. Missing and JSON null are treated
// alike by the opt_* getters (Hugging Face writes null for unset optional fields).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace gyre::model::json_util {

using Json = nlohmann::json;

// Parses `text`; Error(invalid_argument) "<source>: invalid JSON at line L, column C (byte B):
// ...".
Json parse(const std::string& text, const std::string& source);
// Line and column (1-based) of byte offset `byte` in `text`.
void line_col(const std::string& text, size_t byte, size_t* line, size_t* col);
// "string", "integer", "number", "boolean", "array", "object", "null".
const char* type_name(const Json& v);

// Required keys: Error(invalid_argument) naming source and key when missing, null or mistyped.
int64_t get_int(const Json& obj, const std::string& key, const std::string& source,
                const std::string& prefix = "");
double get_double(const Json& obj, const std::string& key, const std::string& source,
                  const std::string& prefix = "");
std::string get_string(const Json& obj, const std::string& key, const std::string& source,
                       const std::string& prefix = "");
// Optional keys: nullopt when missing or null; Error when present with the wrong type.
std::optional<int64_t> opt_int(const Json& obj, const std::string& key, const std::string& source,
                               const std::string& prefix = "");
std::optional<double> opt_double(const Json& obj, const std::string& key, const std::string& source,
                                 const std::string& prefix = "");
std::optional<bool> opt_bool(const Json& obj, const std::string& key, const std::string& source,
                             const std::string& prefix = "");
std::optional<std::string> opt_string(const Json& obj, const std::string& key,
                                      const std::string& source, const std::string& prefix = "");
// Converts an element already extracted (e.g. a list item) to an integer, naming `what` on error.
int64_t as_int(const Json& v, const std::string& what, const std::string& source);

}  // namespace gyre::model::json_util
