// Helpers for the dist-label tests: a test re-launches its own binary under
// `mpirun -np 2` to run one worker test (named DISABLED_..., so it only runs when asked for) on
// every rank, and checks the exit code and output. ctest runs as root on a 2-core CI machine,
// hence --allow-run-as-root --oversubscribe.
#pragma once
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "gyre/core/timer.h"
#include "test_util.h"

namespace gyre::test {

inline std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

struct MpiResult {
  CommandResult r;
  double seconds = 0;
  std::string all() const { return r.out + r.err; }
};

// Runs `suite.test` (a DISABLED_ worker of this binary) on `np` ranks. `env` is a list of
// "NAME=value" exported to every rank (mpirun -x).
inline MpiResult run_mpi_worker(const std::string& test, int np = 2,
                                const std::vector<std::string>& env = {}, int timeout_s = 120) {
  std::string cmd = "timeout " + std::to_string(timeout_s) +
                    " mpirun --allow-run-as-root --oversubscribe --bind-to none -np " +
                    std::to_string(np);
  for (auto& e : env) cmd += " -x " + e;
  // One BLAS/pool thread per rank: 2 ranks share 2 cores.
  cmd += " -x GYRE_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 " + self_exe() +
         " --gtest_also_run_disabled_tests --gtest_filter=" + test;
  Timer t;
  MpiResult m;
  m.r = run_command(cmd);
  m.seconds = t.elapsed();
  return m;
}

// True when this process is a worker started by run_mpi_worker.
inline bool under_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr; }

}  // namespace gyre::test
