// gyre::Error: the one exception type for bad input and configuration. Thrown by library code,
// caught at the CLI (message + exit 2) and per HTTP request (JSON error + status). Hot loops do not
// throw. Messages say what, where (file / tensor / line) and how to fix.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace gyre {

enum class ErrorKind { invalid_argument, not_found, unsupported, io, internal };

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// An allocator could not get the bytes (core/allocator.cc for the host, backend/cuda/allocator.cc
// for the device). Kind internal like any allocation failure, but its own type so that a caller
// that knows which flags sized the request can catch it and name them (gyre bench rollout's KV
// pool) without matching message text.
class OutOfMemory : public Error {
 public:
  explicit OutOfMemory(const std::string& message) : Error(ErrorKind::internal, message) {}
};

template <typename... Args>
[[noreturn]] void throw_error(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(kind, fmt::format(f, std::forward<Args>(args)...));
}

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& msg);
}  // namespace detail

}  // namespace gyre

// Invariant check: on failure throws Error(internal) "file:line: check `cond` failed: message".
#define GYRE_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) [[unlikely]]                                                              \
      ::gyre::detail::check_failed(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
  } while (0)

// Bad user input: throws Error(kind, message).
#define GYRE_THROW(kind, ...) ::gyre::throw_error(::gyre::ErrorKind::kind, __VA_ARGS__)
