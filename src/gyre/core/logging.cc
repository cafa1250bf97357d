#include "gyre/core/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace gyre::log {

namespace {
Level initial_level() {
  const char* e = std::getenv("GYRE_LOG_LEVEL");
  if (!e) return Level::info;
  if (!std::strcmp(e, "debug")) return Level::debug;
  if (!std::strcmp(e, "warn")) return Level::warn;
  if (!std::strcmp(e, "error")) return Level::error;
  return Level::info;
}
std::atomic<int> g_level{int(initial_level())};
std::mutex g_mu;
}  // namespace

Level level() { return Level(g_level.load(std::memory_order_relaxed)); }
void set_level(Level l) { g_level.store(int(l)); }

void write(Level l, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  using namespace std::chrono;
  double t = duration<double>(system_clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lk(g_mu);
  std::fprintf(stderr, "[gyre %.3f %s] %s\n", t, names[int(l)], msg.c_str());
}

}  // namespace gyre::log
