// `path@[a:b]` parsing and Python slice resolution (see header).
#include "gyre/rl/data/slice.h"

#include <algorithm>
#include <charconv>

#include "gyre/core/error.h"

namespace gyre::rl {

namespace {

std::optional<int64_t> parse_bound(const std::string& text, const std::string& spec) {
  std::string t = text;
  t.erase(0, t.find_first_not_of(' '));
  t.erase(t.find_last_not_of(' ') + 1);
  if (t.empty()) return std::nullopt;
  const char* b = t.data();
  const char* e = t.data() + t.size();
  if (*b == '+') ++b;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || ptr != e || b == e)
    GYRE_THROW(invalid_argument,
               "data path '{}': slice bound '{}' is not an integer; write path@[start:stop], e.g. "
               "data.jsonl@[0:1000] or data.jsonl@[-100:]",
               spec, text);
  return v;
}

}  // namespace

std::pair<int64_t, int64_t> RowSlice::resolve(int64_t n) const {
  auto clamp = [n](std::optional<int64_t> v, int64_t open) {
    if (!v) return open;
    int64_t x = *v < 0 ? *v + n : *v;
    return std::clamp<int64_t>(x, 0, n);
  };
  int64_t b = clamp(start, 0), e = clamp(stop, n);
  return {b, std::max(b, e)};
}

DataPath parse_data_path(const std::string& spec) {
  DataPath out{spec, std::nullopt};
  size_t at = spec.rfind("@[");
  if (at == std::string::npos || spec.empty() || spec.back() != ']') return out;
  std::string inner = spec.substr(at + 2, spec.size() - at - 3);
  size_t colon = inner.find(':');
  if (colon == std::string::npos || inner.find(':', colon + 1) != std::string::npos)
    GYRE_THROW(invalid_argument,
               "data path '{}': the row slice must be [start:stop] (one colon, no step), e.g. "
               "data.jsonl@[10:20]",
               spec);
  if (at == 0) GYRE_THROW(invalid_argument, "data path '{}' has a slice but no file", spec);
  out.path = spec.substr(0, at);
  out.slice = RowSlice{parse_bound(inner.substr(0, colon), spec),
                       parse_bound(inner.substr(colon + 1), spec)};
  return out;
}

}  // namespace gyre::rl
