// A fixed pool of worker threads with a blocking parallel_for. The global pool's size is
// GYRE_NUM_THREADS or the hardware concurrency. parallel_for is reentrant-safe: called from inside
// a worker it runs inline (no nested parallelism, no deadlock).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gyre {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  int size() const { return int(workers_.size()) + 1; }  // workers + the calling thread

  // Splits [0, n) into contiguous chunks of at least `grain` and calls fn(begin, end) on each, in
  // parallel; returns when all are done. Exceptions from fn are rethrown (the first one).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
  // Runs a task asynchronously on a worker (fire and forget; used by batch encode etc.).
  void submit(std::function<void()> task);

 private:
  void worker_loop();
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> queue_;
  bool stop_ = false;
};

ThreadPool& global_thread_pool();
// The global pool's size: GYRE_NUM_THREADS (a whole number in [1, 4096]; anything else is an
// invalid_argument error naming it, as every GYRE_* switch: core/env.h) or the hardware
// concurrency. The CLI calls it first thing, so a bad value stops a command before any work.
int configured_num_threads();
// Convenience over the global pool.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace gyre
