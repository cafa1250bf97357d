// GYRE_* environment switches, parsed strictly: an unset or empty variable means the default, and
// any other value that is not one of the accepted ones is an invalid_argument error naming the
// variable, the value and what it accepts — never silently the default (a typo such as
// GYRE_ATTENTION_BACKEND=flsh must not quietly run the other backend).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace gyre {

// `value` (may be null) as one of `allowed`; `def` when null or empty.
std::string parse_env_choice(const char* name, const char* value,
                             std::initializer_list<std::string_view> allowed, std::string_view def);
// `value` (may be null) as a decimal integer in [lo, hi]; `def` when null or empty.
int64_t parse_env_int(const char* name, const char* value, int64_t def, int64_t lo, int64_t hi);

// The same, reading std::getenv(name).
std::string env_choice(const char* name, std::initializer_list<std::string_view> allowed,
                       std::string_view def);
int64_t env_int(const char* name, int64_t def, int64_t lo, int64_t hi);

}  // namespace gyre
