// TaskThread: one background thread running posted tasks in order, and timed tasks at their
// deadline. The API server uses one for blocking control calls (flush, weight reload: never on an
// I/O thread) and one for timeouts (health checks); the router for health probes; the HTTP
// rollout client for retry back-off.
// Invariants: tasks run one at a time on the thread; stop() (and the destructor) drops tasks not
// yet due and joins (a running task finishes first). Tasks often hold the owner of this
// TaskThread (a shared_ptr), so the owner may be destroyed *by* a task on this very thread: then
// the thread cannot join itself; it is detached instead, and since the queue state is shared with
// the thread (not a member of the dying object), the loop ends safely after that task.
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace gyre::serve {

class TaskThread {
 public:
  using Clock = std::chrono::steady_clock;
  TaskThread() : q_(std::make_shared<Queue>()), thread_([q = q_] { loop(*q); }) {}
  ~TaskThread() { stop(); }
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Each returns false (and drops fn) once stop() was called.
  bool post(std::function<void()> fn) { return post_at(Clock::now(), std::move(fn)); }
  bool post_after(double seconds, std::function<void()> fn) {
    return post_at(Clock::now() + std::chrono::microseconds(int64_t(seconds * 1e6)), std::move(fn));
  }
  bool post_at(Clock::time_point t, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lk(q_->mu);
      if (q_->stopping) return false;
      q_->tasks.emplace(std::make_pair(t, q_->seq++), std::move(fn));
    }
    q_->cv.notify_all();
    return true;
  }
  void stop() {
    std::map<Key, std::function<void()>> dropped;  // destroyed outside the lock (they may post)
    {
      std::lock_guard<std::mutex> lk(q_->mu);
      if (q_->stopping) return;
      q_->stopping = true;
      dropped.swap(q_->tasks);
    }
    q_->cv.notify_all();
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();  // stopped by one of its own tasks; the loop exits after it
    else
      thread_.join();
  }

 private:
  using Key = std::pair<Clock::time_point, uint64_t>;
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::map<Key, std::function<void()>> tasks;
    uint64_t seq = 0;
    bool stopping = false;
  };

  static void loop(Queue& q) {
    std::unique_lock<std::mutex> lk(q.mu);
    while (!q.stopping) {
      if (q.tasks.empty()) {
        q.cv.wait(lk);
        continue;
      }
      auto it = q.tasks.begin();
      if (it->first.first > Clock::now()) {
        q.cv.wait_until(lk, it->first.first);
        continue;
      }
      auto fn = std::move(it->second);
      q.tasks.erase(it);
      lk.unlock();
      fn();
      fn = nullptr;  // may release the TaskThread's owner: before re-taking the lock
      lk.lock();
    }
  }

  std::shared_ptr<Queue> q_;
  std::thread thread_;
};

}  // namespace gyre::serve
