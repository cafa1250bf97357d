// Continuous-batching scheduler; the policy and invariants are in scheduler.h.
#include "gyre/infer/scheduler.h"

#include <algorithm>

#include "gyre/core/error.h"

namespace gyre::infer {

namespace {
enum class Admit { admitted, deferred, blocked };
constexpr int64_t kMaxQueueScan = 4096;  // bounds per-step work over deferred queue entries
}  // namespace

Scheduler::Scheduler(PagePool& pool, RadixCache* cache, SchedulerConfig cfg)
    : pool_(pool), cache_(cache), cfg_(cfg), queue_(QueueOrder{cfg.priority}) {
  if (cfg_.max_running_requests < 1)
    GYRE_THROW(invalid_argument, "scheduler: max_running_requests = {} must be >= 1",
               cfg_.max_running_requests);
  if (cfg_.max_num_batched_tokens < 1)
    GYRE_THROW(invalid_argument, "scheduler: max_num_batched_tokens = {} must be >= 1",
               cfg_.max_num_batched_tokens);
  if (!cache_) cfg_.enable_prefix_cache = false;
}

Scheduler::~Scheduler() {
  // Return every page before the pool/cache go away (requests still queued hold none).
  for (Request* r : std::vector<Request*>(running_)) release(r, false);
}

Request* Scheduler::add(std::unique_ptr<Request> req) {
  GYRE_CHECK(req != nullptr, "null request");
  if (live_.count(req->rid))
    GYRE_THROW(invalid_argument, "request id '{}' is already in use; rids must be unique",
               req->rid);
  Request* r = req.get();
  r->arrival = next_arrival_++;
  r->state = RequestState::queued;
  live_.emplace(r->rid, std::move(req));
  queue_.insert(r);
  return r;
}

Request* Scheduler::find(const std::string& rid) const {
  auto it = live_.find(rid);
  return it == live_.end() ? nullptr : it->second.get();
}

uint64_t Scheduler::first_page_key(const Request* req) const {
  const int64_t P = pool_.page_size();
  if (int64_t(req->prompt.size()) <= P) return 0;  // no full cacheable page: never deferred
  uint64_t h = 0xCBF29CE484222325ull;
  for (int64_t i = 0; i < P; ++i) {
    h ^= uint32_t(req->prompt[size_t(i)]);
    h *= 0x100000001B3ull;
  }
  return h | 1;  // never 0
}

void Scheduler::insert_running(Request* req) {
  auto it =
      std::upper_bound(running_.begin(), running_.end(), req,
                       [](const Request* a, const Request* b) { return a->arrival < b->arrival; });
  running_.insert(it, req);
}

void Scheduler::erase_running(Request* req) {
  auto it =
      std::lower_bound(running_.begin(), running_.end(), req,
                       [](const Request* a, const Request* b) { return a->arrival < b->arrival; });
  GYRE_CHECK(it != running_.end() && *it == req, "request {} is not running", req->rid);
  running_.erase(it);
}

// Makes the block table cover `tokens` positions, evicting cached pages if needed. No preemption.
bool Scheduler::ensure_pages(Request* req, int64_t tokens) {
  int64_t need = pool_.pages_for(tokens) - int64_t(req->pages.size());
  if (need <= 0) return true;
  if (need > pool_.num_free() && cache_) cache_->evict(need - pool_.num_free());
  return pool_.allocate(need, req->pages);
}

static std::vector<int32_t> full_sequence(const Request* r) {
  std::vector<int32_t> seq;
  seq.reserve(size_t(r->total_len()));
  seq.insert(seq.end(), r->prompt.begin(), r->prompt.end());
  seq.insert(seq.end(), r->output.begin(), r->output.end());
  return seq;
}

void Scheduler::schedule(StepPlan& plan) {
  plan.clear();
  if (paused_) return;
  int64_t budget = cfg_.max_num_batched_tokens;
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request* r = running_[i];
    int64_t remaining = r->total_len() - r->num_computed;
    GYRE_CHECK(remaining >= 1, "running request {} has nothing to compute", r->rid);
    int64_t n = std::min(remaining, budget);
    bool ok = true;
    while (!ensure_pages(r, r->num_computed + n)) {
      Request* victim = running_.back();
      preempt(victim);
      plan.preempted.push_back(victim);
      if (victim == r) {
        ok = false;
        break;
      }
    }
    if (!ok) break;
    plan.chunks.push_back({r, r->num_computed, int32_t(n), n == remaining});
    plan.num_tokens += n;
    budget -= n;
    ++i;
  }
  // No admissions in a step that had to preempt (vLLM V1): memory is the bottleneck right now.
  if (!plan.preempted.empty()) return;

  const int64_t P = pool_.page_size();
  int64_t scanned = 0;
  for (auto it = queue_.begin();
       it != queue_.end() && budget > 0 && int64_t(running_.size()) < cfg_.max_running_requests &&
       scanned < kMaxQueueScan;
       ++scanned) {
    Request* r = *it;
    uint64_t key = 0;
    if (cfg_.enable_prefix_cache && !r->prompt_cached) {
      key = first_page_key(r);
      if (key && cfg_.defer_shared_prefix) {
        auto f = prefilling_.find(key);
        if (f != prefilling_.end() && f->second > 0) {  // its prompt is being computed: wait
          ++it;
          continue;
        }
      }
    }
    // Radix match over everything but the last token (its logits are needed), and not past the
    // first prompt position whose log-prob was asked for (those rows must be computed).
    int64_t limit = r->total_len() - 1;
    if (r->logprob_start_len >= 0)
      limit = std::min<int64_t>(limit, std::max(0, r->logprob_start_len - 1));
    RadixCache::Match m;
    if (cfg_.enable_prefix_cache && limit >= P) {
      if (r->output.empty()) {
        m = cache_->match_prefix(std::span<const int32_t>(r->prompt.data(), size_t(limit)));
      } else {
        std::vector<int32_t> seq = full_sequence(r);
        m = cache_->match_prefix(std::span<const int32_t>(seq.data(), size_t(limit)));
      }
      cache_->lock(m.node);
      for (int32_t p : m.pages) pool_.ref(p);
      r->pages = std::move(m.pages);
      r->lock = m.node;
      r->num_computed = m.num_tokens;
    }
    int64_t remaining = r->total_len() - r->num_computed;
    int64_t n = std::min(remaining, budget);
    if (!ensure_pages(r, r->num_computed + n)) {  // undo the match; keep FIFO order: stop here
      for (int32_t p : r->pages) pool_.unref(p);
      r->pages.clear();
      if (r->lock) cache_->unlock(r->lock);
      r->lock = nullptr;
      r->num_computed = 0;
      break;
    }
    if (!r->admitted_once) r->cached_tokens = std::min<int64_t>(r->num_computed, r->prompt.size());
    r->admitted_once = true;
    r->kv_version = weight_version_;
    r->state = RequestState::running;
    // Only a request that computes prompt pages others could match defers its followers.
    bool computes_shared = r->num_computed / P < (int64_t(r->prompt.size()) - 1) / P;
    if (key && computes_shared && !r->in_prefilling) {
      ++prefilling_[key];
      r->in_prefilling = true;
    }
    it = queue_.erase(it);
    insert_running(r);
    plan.chunks.push_back({r, r->num_computed, int32_t(n), n == remaining});
    plan.num_tokens += n;
    budget -= n;
  }
}

void Scheduler::commit(const StepPlan& plan) {
  for (const ScheduledChunk& c : plan.chunks) {
    Request* r = c.req;
    GYRE_CHECK(r->num_computed == c.start, "commit of {} at {} but {} computed", r->rid, c.start,
               r->num_computed);
    r->num_computed += c.num_tokens;
    if (!r->prompt_cached && r->num_computed >= int64_t(r->prompt.size())) cache_prompt(r);
  }
}

void Scheduler::cache_prompt(Request* req) {
  req->prompt_cached = true;
  if (req->in_prefilling) {
    auto f = prefilling_.find(first_page_key(req));
    if (f != prefilling_.end() && --f->second == 0) prefilling_.erase(f);
    req->in_prefilling = false;
  }
  if (!cfg_.enable_prefix_cache || req->kv_version != weight_version_) return;
  int64_t n = int64_t(req->prompt.size()) / pool_.page_size();
  if (n == 0) return;
  RadixCache::InsertResult res = cache_->insert(req->prompt, req->pages, n);
  cache_->lock(res.node);
  if (req->lock) cache_->unlock(req->lock);
  req->lock = res.node;
}

void Scheduler::release(Request* req, bool cache_kv) {
  if (req->in_prefilling) {
    auto f = prefilling_.find(first_page_key(req));
    if (f != prefilling_.end() && --f->second == 0) prefilling_.erase(f);
    req->in_prefilling = false;
  }
  int64_t n = std::min<int64_t>(req->num_computed / pool_.page_size(), req->pages.size());
  if (cache_kv && cfg_.enable_prefix_cache && req->kv_version == weight_version_ && n > 0) {
    std::vector<int32_t> seq = full_sequence(req);
    cache_->insert(seq, req->pages, n);
  }
  for (int32_t p : req->pages) pool_.unref(p);
  req->pages.clear();
  if (req->lock) cache_->unlock(req->lock);
  req->lock = nullptr;
  req->num_computed = 0;
}

void Scheduler::preempt(Request* req) {
  GYRE_CHECK(req->state == RequestState::running, "preempt of non-running request {}", req->rid);
  erase_running(req);
  release(req, true);
  req->state = RequestState::queued;
  ++req->num_preemptions;
  queue_.insert(req);  // by arrival: it goes ahead of everything that came after it
}

std::unique_ptr<Request> Scheduler::finish(Request* req) {
  auto it = live_.find(req->rid);
  GYRE_CHECK(it != live_.end() && it->second.get() == req, "finish of unknown request {}",
             req->rid);
  if (req->state == RequestState::running) {
    erase_running(req);
    release(req, true);
  } else if (req->state == RequestState::queued) {
    queue_.erase(req);
  }
  req->state = RequestState::done;
  std::unique_ptr<Request> out = std::move(it->second);
  live_.erase(it);
  return out;
}

std::unique_ptr<Request> Scheduler::abort(const std::string& rid) {
  Request* r = find(rid);
  return r ? finish(r) : nullptr;
}

std::vector<std::unique_ptr<Request>> Scheduler::abort_all() {
  std::vector<Request*> all;
  for (Request* r : queue_) all.push_back(r);
  for (Request* r : running_) all.push_back(r);
  std::sort(all.begin(), all.end(),
            [](const Request* a, const Request* b) { return a->arrival < b->arrival; });
  std::vector<std::unique_ptr<Request>> out;
  for (Request* r : all) out.push_back(finish(r));
  return out;
}

bool Scheduler::flush_cache() {
  if (!live_.empty()) return false;
  return cache_ ? cache_->flush() : true;
}

void Scheduler::bump_weight_version() {
  ++weight_version_;
  if (cache_) cache_->invalidate();
}

void Scheduler::check_consistency() const {
  pool_.check_consistency();
  if (cache_) cache_->check_consistency();
  std::vector<int32_t> counts(size_t(pool_.num_pages()), 0);
  if (cache_) cache_->count_page_refs(counts);
  for (const auto& [rid, r] : live_) {
    if (r->state == RequestState::queued)
      GYRE_CHECK(r->pages.empty() && r->num_computed == 0 && !r->lock,
                 "queued request {} still holds KV", rid);
    GYRE_CHECK(r->num_computed <= int64_t(r->pages.size()) * pool_.page_size(),
               "request {}: {} tokens computed but {} pages", rid, r->num_computed,
               r->pages.size());
    for (int32_t p : r->pages) ++counts[size_t(p)];
  }
  for (size_t p = 0; p < counts.size(); ++p)
    GYRE_CHECK(counts[p] == pool_.refcount(int32_t(p)),
               "page {}: refcount {} but {} holders (block tables + radix nodes)", p,
               pool_.refcount(int32_t(p)), counts[p]);
  GYRE_CHECK(queue_.size() + running_.size() == live_.size(), "{} queued + {} running != {} live",
             queue_.size(), running_.size(), live_.size());
  for (size_t i = 1; i < running_.size(); ++i)
    GYRE_CHECK(running_[i - 1]->arrival < running_[i]->arrival, "running list out of order");
}

}  // namespace gyre::infer
