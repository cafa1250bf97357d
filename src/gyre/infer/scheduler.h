// Continuous-batching scheduler of the rollout engine. It decides, step by step, which tokens of
// which requests run next; it never runs the model (pure C++, unit-testable, DESIGN.md).
//
// Policy (vLLM V1 token budget + SGLang radix admission):
// - one token budget per step (max_num_batched_tokens) shared by decode tokens and prefill chunks;
//   a long prompt is prefilled over several steps (chunked prefill);
// - running requests are served first, oldest first; then queued requests are admitted FIFO (or by
//   priority, larger first, when priority mode is on) while the budget, max_running_requests and
//   free pages allow; admission matches the radix cache (whole pages, never the last token, which
//   must be computed to get logits) and locks the matched path;
// - a queued request whose first prompt page is being prefilled by a running request is deferred
//   until that prefill is cached, so n samples of one prompt share it (SGLang's in-batch prefix
//   check): n copies submitted together compute the prompt once;
// - out of pages: evict unlocked radix leaves (LRU); still short: preempt by recompute the
//   latest-arrived running request (its KV pages are cached in the radix tree, then released; it
//   returns to the queue keeping its generated tokens and is re-prefilled later).
//
// Invariants: every page in a request's block table holds one pool reference for that request;
// num_computed <= pages.size() * page_size; a request is in exactly one of queue / running /
// (handed back to the caller); running is sorted by arrival.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "gyre/infer/kv_pool.h"
#include "gyre/infer/radix_cache.h"

namespace gyre::infer {

struct SchedulerConfig {
  int32_t max_running_requests = 256;
  int64_t max_num_batched_tokens = 2048;  // per-step token budget (chunked prefill size)
  bool priority = false;                  // order the queue by priority (desc), then arrival
  bool enable_prefix_cache = true;
  bool defer_shared_prefix = true;  // see the header comment
};

enum class RequestState { queued, running, done };

struct Request {
  std::string rid;
  int32_t priority = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;     // sampled tokens (kept across preemption)
  int32_t logprob_start_len = -1;  // >= 0: prompt logits still needed from here (caps matching)
  void* user = nullptr;            // the engine's per-request state

  // Owned by the scheduler.
  int64_t arrival = 0;
  RequestState state = RequestState::queued;
  std::vector<int32_t> pages;  // block table (i32 page ids)
  int64_t num_computed = 0;    // leading tokens of prompt+output whose KV is in `pages`
  int64_t cached_tokens = 0;   // prompt tokens served from the cache at first admission
  bool admitted_once = false;
  bool prompt_cached = false;  // prompt pages inserted into the radix cache
  bool in_prefilling = false;  // counted in the scheduler's in-flight prefill set
  int32_t num_preemptions = 0;
  int64_t kv_version = 0;  // weight version the KV was computed with
  RadixCache::Node* lock = nullptr;

  int64_t total_len() const { return int64_t(prompt.size() + output.size()); }
  int32_t token_at(int64_t i) const {
    return i < int64_t(prompt.size()) ? prompt[size_t(i)] : output[size_t(i) - prompt.size()];
  }
};

// Tokens [start, start + num_tokens) of `req` (prompt+output positions) run this step; `sample`
// when the chunk reaches the last known token (its logits give the next token).
struct ScheduledChunk {
  Request* req;
  int64_t start;
  int32_t num_tokens;
  bool sample;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  int64_t num_tokens = 0;
  std::vector<Request*> preempted;  // sent back to the queue during this step's planning
  void clear() {
    chunks.clear();
    preempted.clear();
    num_tokens = 0;
  }
};

class Scheduler {
 public:
  Scheduler(PagePool& pool, RadixCache* cache, SchedulerConfig cfg);
  ~Scheduler();

  // Enqueues; the rid must be unique among live requests (invalid_argument otherwise).
  Request* add(std::unique_ptr<Request> req);
  // Plans the next step (empty while paused); allocates the pages the chunks write.
  void schedule(StepPlan& plan);
  // After the forward ran: advances num_computed and caches completed prompts.
  void commit(const StepPlan& plan);
  // Hands a running request back to the caller (finished, or aborted), caching its KV pages.
  std::unique_ptr<Request> finish(Request* req);
  // Removes a queued or running request; null when the rid is unknown.
  std::unique_ptr<Request> abort(const std::string& rid);
  std::vector<std::unique_ptr<Request>> abort_all();
  // Forces the preemption of a running request now (tests, and the engine's memory pressure path).
  void preempt(Request* req);

  void pause() { paused_ = true; }
  void resume() { paused_ = false; }
  bool paused() const { return paused_; }
  // Drops the radix cache; false (nothing done) while any request is queued or running.
  bool flush_cache();
  // New weights: version + 1 and the cached KV is invalidated (running requests keep theirs).
  void bump_weight_version();
  int64_t weight_version() const { return weight_version_; }

  Request* find(const std::string& rid) const;
  const std::vector<Request*>& running() const { return running_; }
  size_t num_queued() const { return queue_.size(); }
  size_t num_running() const { return running_.size(); }
  PagePool& pool() { return pool_; }
  RadixCache* cache() { return cache_; }
  const SchedulerConfig& config() const { return cfg_; }
  // Audits pool refcounts against block tables + radix nodes; throws Error(internal) on mismatch.
  void check_consistency() const;

 private:
  struct QueueOrder {
    bool priority;
    bool operator()(const Request* a, const Request* b) const {
      if (priority && a->priority != b->priority) return a->priority > b->priority;
      return a->arrival < b->arrival;
    }
  };
  bool ensure_pages(Request* req, int64_t tokens);
  void release(Request* req, bool cache_kv);
  void cache_prompt(Request* req);
  void insert_running(Request* req);
  void erase_running(Request* req);
  uint64_t first_page_key(const Request* req) const;

  PagePool& pool_;
  RadixCache* cache_;
  SchedulerConfig cfg_;
  std::unordered_map<std::string, std::unique_ptr<Request>> live_;
  std::set<Request*, QueueOrder> queue_;
  std::vector<Request*> running_;
  std::unordered_map<uint64_t, int32_t> prefilling_;  // first-page key -> uncached prefills
  int64_t next_arrival_ = 0;
  int64_t weight_version_ = 0;
  bool paused_ = false;
};

}  // namespace gyre::infer
