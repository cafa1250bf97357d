#include "gyre/core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>

#include "gyre/core/env.h"

namespace gyre {

namespace {
thread_local bool t_in_worker = false;
}

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop() {
  t_in_worker = true;
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      task = std::move(queue_.back());
      queue_.pop_back();
    }
    task();
  }
}

void ThreadPool::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t max_chunks = (n + grain - 1) / grain;
  int64_t chunks = std::min<int64_t>(max_chunks, size());
  if (chunks <= 1 || t_in_worker || workers_.empty()) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> remaining(chunks - 1);
  std::mutex done_mu;
  std::condition_variable done_cv;
  std::exception_ptr error;
  std::mutex err_mu;
  auto run_chunk = [&](int64_t c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(err_mu);
      if (!error) error = std::current_exception();
    }
  };
  for (int64_t c = 1; c < chunks; ++c) {
    submit([&, c] {
      run_chunk(c);
      // Decrement under done_mu: otherwise the caller can see 0 (its wait re-checks the
      // predicate), return and free done_mu/done_cv from its stack before this task locks them.
      std::lock_guard<std::mutex> lk(done_mu);
      if (remaining.fetch_sub(1) == 1) done_cv.notify_one();
    });
  }
  run_chunk(0);
  {
    std::unique_lock<std::mutex> lk(done_mu);
    done_cv.wait(lk, [&] { return remaining.load() == 0; });
  }
  if (error) std::rethrow_exception(error);
}

ThreadPool& global_thread_pool() {
  static ThreadPool* pool = new ThreadPool(configured_num_threads());
  return *pool;
}

int configured_num_threads() {
  const int hw = std::max(1, int(std::thread::hardware_concurrency()));
  return int(env_int("GYRE_NUM_THREADS", hw, 1, 4096));
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  global_thread_pool().parallel_for(n, grain, fn);
}

}  // namespace gyre
