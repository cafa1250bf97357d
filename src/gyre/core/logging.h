// Minimal leveled logging to stderr: GYRE_LOG_LEVEL=debug|info|warn|error (default info).
#pragma once
#include <fmt/format.h>

#include <string>

namespace gyre::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };
Level level();
void set_level(Level l);
void write(Level l, const std::string& msg);

template <typename... A>
void debug(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void info(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void warn(fmt::format_string<A...> f, A&&... a) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void error(fmt::format_string<A...> f, A&&... a) {
  write(Level::error, fmt::format(f, std::forward<A>(a)...));
}

}  // namespace gyre::log
