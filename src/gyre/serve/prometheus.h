// Prometheus text exposition (format 0.0.4): counters, gauges and cumulative histograms, as the
// server's /metrics (SGLang's `sglang:*` names) and the router's /metrics (`sgl_router_*`) print
// them. Histograms are thread-safe (one mutex each; observations are per request, not per token).
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace gyre::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends "# HELP/# TYPE" and the _bucket/_sum/_count lines; `labels` like `worker="x"` or "".
  void render(std::string& out, const std::string& name, const std::string& help,
              const std::string& labels = "") const;
  int64_t count() const;
  double quantile(double q) const;  // bucket upper bound holding the q-quantile (approximate)

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<int64_t> counts_;  // per bucket (not cumulative), + overflow
  double sum_ = 0;
  int64_t n_ = 0;
};

// Latency buckets in seconds, 1 ms .. 10 min (SGLang's e2e buckets span the same range).
std::vector<double> latency_buckets();
// Per-token latency buckets in seconds, 0.1 ms .. 10 s (a CPU engine's decode step can be < 1 ms).
std::vector<double> token_latency_buckets();

void prom_metric(std::string& out, const std::string& name, const std::string& type,
                 const std::string& help, double value, const std::string& labels = "");

}  // namespace gyre::serve
