#include "gyre/core/env.h"

#include <cerrno>
#include <cstdlib>

#include "gyre/core/error.h"

namespace gyre {

std::string parse_env_choice(const char* name, const char* value,
                             std::initializer_list<std::string_view> allowed,
                             std::string_view def) {
  if (!value || !*value) return std::string(def);
  for (std::string_view a : allowed)
    if (a == value) return std::string(a);
  std::string list;
  for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  GYRE_THROW(invalid_argument, "environment variable {}='{}' is not one of: {} (unset it for {})",
             name, value, list, def);
}

int64_t parse_env_int(const char* name, const char* value, int64_t def, int64_t lo, int64_t hi) {
  if (!value || !*value) return def;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(value, &end, 10);
  const bool starts_ok = (*value >= '0' && *value <= '9') || *value == '-' || *value == '+';
  if (!starts_ok || errno != 0 || end == value || *end != '\0' || v < lo || v > hi)
    GYRE_THROW(invalid_argument,
               "environment variable {}='{}' must be a whole number in [{}, {}] (unset it for {})",
               name, value, lo, hi, def);
  return int64_t(v);
}

std::string env_choice(const char* name, std::initializer_list<std::string_view> allowed,
                       std::string_view def) {
  return parse_env_choice(name, std::getenv(name), allowed, def);
}

int64_t env_int(const char* name, int64_t def, int64_t lo, int64_t hi) {
  return parse_env_int(name, std::getenv(name), def, lo, hi);
}

}  // namespace gyre
