// SyncStats formatting and metrics (sync_stats.h).
#include "gyre/rl/weight_sync/sync_stats.h"

#include <fmt/format.h>

#include "gyre/core/logging.h"

namespace gyre::rl {

std::string describe(const SyncStats& s) {
  std::string base = s.base_version >= 0 ? fmt::format(" (base v{})", s.base_version) : "";
  const double pct = s.raw_bytes ? 100.0 * double(s.bytes) / double(s.raw_bytes) : 0.0;
  return fmt::format(
      "weight sync {} v{}{}: {:.1f} MB of {:.1f} MB ({:.1f}%), {}/{} tensors changed, {:.3f} s",
      s.method, s.version, base, double(s.bytes) / 1e6, double(s.raw_bytes) / 1e6, pct,
      s.changed_tensors, s.tensors, s.seconds);
}

void log_sync(const SyncStats& s) { log::info("{}", describe(s)); }

std::map<std::string, double> sync_metrics(const SyncStats& s) {
  return {
      {"perf/update_weights_time", s.seconds},
      {"perf/update_weights_wire_bytes", double(s.bytes)},
      {"perf/update_weights_density", s.raw_bytes ? double(s.bytes) / double(s.raw_bytes) : 0.0}};
}

}  // namespace gyre::rl
