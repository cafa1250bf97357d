// StepTimers: named phase durations accumulated over one training step and reported as slime's
// `perf/<phase>_time` metrics (slime's Timer: perf/rollout_time, perf/actor_train_time,
// perf/update_weights_time, ...). A phase entered several times in a step sums its durations.
// Optionally each phase is also a span in a TraceWriter.
//
// Invariants: thread-safe; take() returns the step's totals and starts the next step empty.
#pragma once
#include <map>
#include <mutex>
#include <string>

#include "gyre/obs/metrics.h"
#include "gyre/obs/trace.h"

namespace gyre::obs {

class StepTimers {
 public:
  explicit StepTimers(TraceWriter* trace = nullptr) : trace_(trace) {}

  // RAII: times the enclosing scope into phase `name`.
  class Scope {
   public:
    Scope(StepTimers* owner, std::string name);
    ~Scope();
    Scope(Scope&& other) noexcept;
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope& operator=(Scope&&) = delete;
    // Ends the phase now (the destructor then does nothing); returns its seconds.
    double stop();

   private:
    StepTimers* owner_;
    std::string name_;
    double start_s_ = 0, start_us_ = 0;
  };

  Scope phase(std::string name) { return Scope(this, std::move(name)); }
  // Adds `seconds` to phase `name` (for durations measured elsewhere).
  void add(const std::string& name, double seconds);
  double seconds(const std::string& name) const;  // 0 when the phase did not run
  // {"<prefix><name>_time": seconds} for every phase of the current step.
  Metrics metrics(const std::string& prefix = "perf/") const;
  // metrics() and reset, for the end of a step.
  Metrics take(const std::string& prefix = "perf/");
  void reset();

 private:
  TraceWriter* trace_;
  mutable std::mutex mu_;
  std::map<std::string, double> totals_;
};

}  // namespace gyre::obs
