// What every weight-sync path reports (slime logs perf/update_weights_time and, for delta sync,
// perf/update_weights_wire_bytes / _density): method, version, seconds and bytes, logged at info
// level and returned for the step's metrics.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace gyre::rl {

struct SyncStats {
  std::string method;         // "disk" | "delta" | "broadcast" | "colocated"
  int64_t version = 0;        // weight version after the sync
  int64_t base_version = -1;  // delta: the version it was encoded against
  double seconds = 0;
  uint64_t bytes = 0;      // bytes written / sent (the wire)
  uint64_t raw_bytes = 0;  // bytes of all the weights (what a full f32 sync moves)
  int64_t tensors = 0;     // tensors in the model
  int64_t changed_tensors = 0;
};

// "weight sync delta v3 (base v2): 1.2 MB of 80.0 MB (1.5%), 12/34 tensors changed, 0.210 s".
std::string describe(const SyncStats& s);
void log_sync(const SyncStats& s);
// perf/update_weights_time, perf/update_weights_wire_bytes, perf/update_weights_density.
std::map<std::string, double> sync_metrics(const SyncStats& s);

}  // namespace gyre::rl
