// Prometheus text rendering (prometheus.h).
#include "gyre/serve/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace gyre::serve {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard<std::mutex> lk(mu_);
  counts_[i]++;
  sum_ += v;
  n_++;
}

int64_t Histogram::count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return n_;
}

double Histogram::quantile(double q) const {
  std::lock_guard<std::mutex> lk(mu_);
  if (n_ == 0) return 0;
  int64_t target = int64_t(std::ceil(q * double(n_))), acc = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    acc += counts_[i];
    if (acc >= target) return i < bounds_.size() ? bounds_[i] : INFINITY;
  }
  return INFINITY;
}

static std::string join_labels(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "," + b;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help,
                       const std::string& labels) const {
  std::lock_guard<std::mutex> lk(mu_);
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  int64_t acc = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    acc += counts_[i];
    out += fmt::format("{}_bucket{{{}}} {}\n", name,
                       join_labels(labels, fmt::format("le=\"{}\"", bounds_[i])), acc);
  }
  out += fmt::format("{}_bucket{{{}}} {}\n", name, join_labels(labels, "le=\"+Inf\""), n_);
  std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, l, sum_, name, l, n_);
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
          2.5,   5,      10,    20,   40,    60,   120, 240,  480, 600};
}

std::vector<double> token_latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

void prom_metric(std::string& out, const std::string& name, const std::string& type,
                 const std::string& help, double value, const std::string& labels) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{} {}\n", name, help, name, type, name,
                     labels.empty() ? "" : "{" + labels + "}", value);
}

}  // namespace gyre::serve
