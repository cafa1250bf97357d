// Console progress line: one human-readable line per step, e.g.
//   [step 12/100 12%] train/loss=0.1234 rollout/raw_reward=0.5 | 3.21s/step, eta 4m42s
// Pure formatting (no I/O) so the trainer, `gyre bench` and tests share it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gyre/obs/metrics.h"

namespace gyre::obs {

// "850ms", "4.2s", "3m05s", "1h02m", "2d03h"; negative or non-finite -> "?".
std::string format_duration(double seconds);
// Four significant digits; scientific notation outside [1e-3, 1e6); "nan"/"inf" spelled out.
std::string format_metric_value(double v);

struct ProgressOptions {
  // Metrics to show, in this order (missing ones are skipped). Empty = every metric, sorted.
  std::vector<std::string> keys;
  int64_t total_steps = 0;  // 0 = unknown (no percentage / eta)
};

// The line for `step` (0-based: step k means k+1 steps done), given the mean seconds per step.
std::string format_progress(int64_t step, double seconds_per_step, const Metrics& metrics,
                            const ProgressOptions& options = {});

}  // namespace gyre::obs
