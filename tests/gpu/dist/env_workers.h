// Helpers of the two-GPU tests (tests/gpu/dist): a test re-launches its own binary as `n` worker
// processes, torchrun-style (RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR /
// MASTER_PORT: the ranks meet over TCP, then talk NCCL; no MPI), each running one DISABLED_ worker
// test (run with --gtest_also_run_disabled_tests). dist::init_distributed binds rank r to GPU r
// (LOCAL_RANK), so a worker must make no CUDA call before it.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "gyre/dist/nccl_comm.h"
#include "test_util.h"

namespace gyre::test::envw {

// In a launcher test (not a worker: it counts the GPUs with a CUDA call).
#define GYRE_SKIP_WITHOUT_GPUS(n)              \
  if (::gyre::dist::cuda_device_count() < (n)) \
  GTEST_SKIP() << "needs " << (n) << " GPUs, " << ::gyre::dist::cuda_device_count() << " visible"

inline std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// A rendezvous port in [base, base + 300), from the pid, so concurrent test binaries rarely meet.
inline int worker_port(int base) { return base + int(::getpid() % 300); }

// Where rank r of the workers tagged `tag` writes its output (bench/dist_gpu_device_run.sh copies
// /tmp/gyre_*_worker_*.log off the device machine).
inline std::string worker_log(const std::string& tag, int rank) {
  return "/tmp/gyre_" + tag + "_worker_" + std::to_string(rank) + ".log";
}

// Starts `n` copies of this binary running `test` (suite.DISABLED_name), rank r on GPU r, each
// under a 300 s timeout, and waits for all of them. exit_code: 0 when every rank exited 0; out:
// every rank's log, each after a "== rank r" line.
inline CommandResult run_env_workers(const std::string& test, int n, int port,
                                     const std::string& tag) {
  const std::string last = std::to_string(n - 1), log = "/tmp/gyre_" + tag + "_worker_$r.log";
  const std::string cmd =
      "pids=''; for r in $(seq 0 " + last +
      "); do RANK=$r LOCAL_RANK=$r WORLD_SIZE=" + std::to_string(n) +
      " LOCAL_WORLD_SIZE=" + std::to_string(n) +
      " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " timeout 300 " + self_exe() +
      " --gtest_also_run_disabled_tests --gtest_filter=" + test + " > " + log +
      " 2>&1 & pids=\"$pids $!\"; done; rc=0; for p in $pids; do wait $p || rc=1; done; "
      "for r in $(seq 0 " +
      last + "); do echo \"== rank $r\"; cat " + log + "; done; exit $rc";
  return run_command(cmd);
}

// How many times `needle` occurs in `text` (e.g. "[  PASSED  ] 1 test": once per passing rank).
inline size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    ++n;
  return n;
}

// Prints the lines of `text` that contain `marker` (the workers' measured figures), so the
// launcher test's own log shows them even when it passes.
inline void echo_lines(const std::string& text, const std::string& marker) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    if (line.find(marker) != std::string::npos) std::printf("%s\n", line.c_str());
    begin = end + 1;
  }
  std::fflush(stdout);
}

}  // namespace gyre::test::envw
