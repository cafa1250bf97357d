// MetricsLogger: metrics.jsonl + TensorBoard mirror (see header).
#include "gyre/obs/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "gyre/core/error.h"

namespace gyre::obs {

namespace {

void check_name(const std::string& name) {
  if (name.empty()) GYRE_THROW(invalid_argument, "metric name is empty; use e.g. 'train/loss'");
  if (name == "step")
    GYRE_THROW(invalid_argument, "metric name 'step' is reserved (the step is the log() argument)");
  for (char c : name) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
      GYRE_THROW(invalid_argument,
                 "metric name '{}' contains whitespace or control characters; use '/' and '_'",
                 name);
  }
}

}  // namespace

MetricsLogger::MetricsLogger(MetricsOptions options) : options_(std::move(options)) {
  if (!options_.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir, ec);
    if (ec)
      GYRE_THROW(io, "cannot create metrics directory '{}': {} (check --save)", options_.dir,
                 ec.message());
    jsonl_path_ = options_.dir + "/" + options_.jsonl_name;
    jsonl_ = std::fopen(jsonl_path_.c_str(), "ab");
    if (!jsonl_) GYRE_THROW(io, "cannot open '{}' for append: {}", jsonl_path_, strerror(errno));
  }
  if (options_.tensorboard) {
    std::string dir = options_.tensorboard_dir;
    if (dir.empty()) {
      if (options_.dir.empty())
        GYRE_THROW(invalid_argument,
                   "TensorBoard logging needs a directory: set --save or the tensorboard dir");
      dir = options_.dir + "/tensorboard";
    }
    tb_ = std::make_unique<TensorBoardWriter>(dir);
  }
}

MetricsLogger::~MetricsLogger() {
  if (jsonl_) std::fclose(jsonl_);
}

std::string MetricsLogger::format_line(int64_t step, const Metrics& metrics) {
  // "step" first, then the metrics sorted by name: stable, diffable lines.
  nlohmann::ordered_json j;
  j["step"] = step;
  for (const auto& [k, v] : metrics) {
    if (std::isfinite(v))
      j[k] = v;
    else
      j[k] = nullptr;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void MetricsLogger::log(int64_t step, const Metrics& metrics) {
  for (const auto& [k, v] : metrics) check_name(k);
  std::string line = format_line(step, metrics) + "\n";
  std::vector<std::pair<std::string, float>> scalars;
  if (tb_) {
    scalars.reserve(metrics.size());
    for (const auto& [k, v] : metrics) scalars.emplace_back(k, float(v));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (jsonl_) {
    if (std::fwrite(line.data(), 1, line.size(), jsonl_) != line.size() || std::fflush(jsonl_) != 0)
      GYRE_THROW(io, "write to '{}' failed: {}", jsonl_path_, strerror(errno));
  }
  if (tb_) {
    tb_->add_scalars(step, scalars);
    tb_->flush();
  }
  last_ = metrics;
}

Metrics MetricsLogger::last() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

}  // namespace gyre::obs
