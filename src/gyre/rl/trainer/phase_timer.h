// PhaseTimer: times one phase of an RL step into slime-style metrics — wall seconds into
// perf/<name>_time (summed when the phase runs several times in a step) and the share of the
// machine's cores the process kept busy during it into perf/<name>_cpu_util (1.0 = every core busy
// for the whole phase; the issue-6 "share of wall time the CPU is busy in each phase").
//
// Process CPU time (CLOCK_PROCESS_CPUTIME_ID) counts every thread, so the figure is right for
// phases that fan out over the thread pool or the engine thread; thread_cpu_seconds() measures
// work done on one thread inside a concurrent phase (the reward calls inside the rollout).
#pragma once
#include <time.h>

#include <algorithm>
#include <map>
#include <string>
#include <thread>

#include "gyre/core/timer.h"

namespace gyre::rl {

inline double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

inline double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

inline double machine_cores() { return double(std::max(1u, std::thread::hardware_concurrency())); }

class PhaseTimer {
 public:
  PhaseTimer(std::map<std::string, double>& metrics, std::string name)
      : m_(metrics), name_(std::move(name)), cpu0_(process_cpu_seconds()) {}
  ~PhaseTimer() { stop(); }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

  // Ends the phase now (the destructor then does nothing). A phase run twice in one step reports
  // the CPU share of both runs together.
  void stop() {
    if (done_) return;
    done_ = true;
    const double wall = t_.elapsed(), cpu = process_cpu_seconds() - cpu0_;
    double& total_wall = m_["perf/" + name_ + "_time"];
    double& total_cpu = m_["perf/" + name_ + "_cpu_time"];
    total_wall += wall;
    total_cpu += cpu;
    if (total_wall > 0)
      m_["perf/" + name_ + "_cpu_util"] = total_cpu / (total_wall * machine_cores());
  }

 private:
  std::map<std::string, double>& m_;
  std::string name_;
  Timer t_;
  double cpu0_;
  bool done_ = false;
};

}  // namespace gyre::rl
