#include "gyre/core/error.h"

namespace gyre {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_argument: return "invalid_argument";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::io: return "io";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

namespace detail {
void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  throw Error(ErrorKind::internal, fmt::format("{}:{}: check `{}` failed{}{}", file, line, cond,
                                               msg.empty() ? "" : ": ", msg));
}
}  // namespace detail

}  // namespace gyre
