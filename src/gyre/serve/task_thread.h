// TaskThread: one background thread running posted tasks in order, and timed tasks at their
// deadline. The API server uses one for blocking control calls (flush, weight reload: never on an
// I/O thread) and one for timeouts (health checks); the router for health probes.
// Invariant: tasks run one at a time on the thread; the destructor drops tasks not yet due and
// joins (a running task finishes first).
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace gyre::serve {

class TaskThread {
 public:
  using Clock = std::chrono::steady_clock;
  TaskThread() : thread_([this] { loop(); }) {}
  ~TaskThread() { stop(); }
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  void post(std::function<void()> fn) { post_at(Clock::now(), std::move(fn)); }
  void post_after(double seconds, std::function<void()> fn) {
    post_at(Clock::now() + std::chrono::microseconds(int64_t(seconds * 1e6)), std::move(fn));
  }
  void post_at(Clock::time_point t, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      tasks_.emplace(std::make_pair(t, seq_++), std::move(fn));
    }
    cv_.notify_all();
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      stopping_ = true;
      tasks_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!stopping_) {
      if (tasks_.empty()) {
        cv_.wait(lk);
        continue;
      }
      auto it = tasks_.begin();
      if (it->first.first > Clock::now()) {
        cv_.wait_until(lk, it->first.first);
        continue;
      }
      auto fn = std::move(it->second);
      tasks_.erase(it);
      lk.unlock();
      fn();
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<Clock::time_point, uint64_t>, std::function<void()>> tasks_;
  uint64_t seq_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gyre::serve
