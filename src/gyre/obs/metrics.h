// MetricsLogger: the per-step metrics sink of a run. One JSON object per step is appended to
// <dir>/metrics.jsonl ({"step": N, "rollout/raw_reward": ..., "train/loss": ..., "perf/...": ...},
// slime's metric names) and mirrored as scalars to TensorBoard event files in <dir>/tensorboard.
//
// Invariants: a line is written and flushed whole before log() returns, so a crash never leaves a
// torn line; the file is opened for append so a resumed run continues it; non-finite values are
// written as JSON null (JSON has no NaN) but reach TensorBoard unchanged; "step" is reserved.
// log() is thread-safe.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "gyre/obs/tensorboard.h"

namespace gyre::obs {

using Metrics = std::map<std::string, double>;

struct MetricsOptions {
  std::string dir;              // where metrics.jsonl goes (usually --save); "" = no JSONL
  bool tensorboard = false;     // mirror to TensorBoard (--use-tensorboard)
  std::string tensorboard_dir;  // default <dir>/tensorboard
  std::string jsonl_name = "metrics.jsonl";
};

class MetricsLogger {
 public:
  explicit MetricsLogger(MetricsOptions options);
  ~MetricsLogger();
  MetricsLogger(const MetricsLogger&) = delete;
  MetricsLogger& operator=(const MetricsLogger&) = delete;

  // Records the metrics of one step. Names must be non-empty and free of whitespace/control
  // characters (TensorBoard tags); Error otherwise.
  void log(int64_t step, const Metrics& metrics);
  // The last metrics logged (for the console line).
  Metrics last() const;
  const std::string& jsonl_path() const { return jsonl_path_; }
  std::string tensorboard_path() const { return tb_ ? tb_->path() : ""; }

  // The JSONL line that log() writes for these metrics (no trailing newline).
  static std::string format_line(int64_t step, const Metrics& metrics);

 private:
  MetricsOptions options_;
  mutable std::mutex mu_;
  std::FILE* jsonl_ = nullptr;
  std::string jsonl_path_;
  std::unique_ptr<TensorBoardWriter> tb_;
  Metrics last_;
};

}  // namespace gyre::obs
