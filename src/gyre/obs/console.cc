// Console progress-line formatting (see header).
#include "gyre/obs/console.h"

#include <fmt/format.h>

#include <cmath>

namespace gyre::obs {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 1) return fmt::format("{}ms", int64_t(std::llround(s * 1000)));
  if (s < 60) return fmt::format("{:.1f}s", s);
  int64_t t = std::llround(s);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  if (t < 86400) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  return fmt::format("{}d{:02}h", t / 86400, (t % 86400) / 3600);
}

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  double a = std::fabs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e6)) return fmt::format("{:.3e}", v);
  return fmt::format("{:.4g}", v);
}

std::string format_progress(int64_t step, double seconds_per_step, const Metrics& metrics,
                            const ProgressOptions& options) {
  std::string out;
  int64_t done = step + 1;
  if (options.total_steps > 0)
    out = fmt::format("[step {}/{} {}%]", done, options.total_steps,
                      done * 100 / options.total_steps);
  else
    out = fmt::format("[step {}]", done);
  auto add = [&](const std::string& k, double v) {
    out += fmt::format(" {}={}", k, format_metric_value(v));
  };
  if (options.keys.empty()) {
    for (const auto& [k, v] : metrics) add(k, v);
  } else {
    for (const auto& k : options.keys)
      if (auto it = metrics.find(k); it != metrics.end()) add(k, it->second);
  }
  if (seconds_per_step > 0) {
    out += fmt::format(" | {}/step", format_duration(seconds_per_step));
    if (options.total_steps > 0 && done <= options.total_steps)
      out += fmt::format(", eta {}",
                         format_duration(seconds_per_step * double(options.total_steps - done)));
  }
  return out;
}

}  // namespace gyre::obs
