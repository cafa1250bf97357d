// Scheduler: token budget, chunked prefill, admission limits, GRPO prefix sharing, preemption by
// recompute, abort, pause, priority, weight-version invalidation, and a 10,000-request property
// test (random aborts and forced preemptions) that must end with every page back in the pool.
#include "gyre/infer/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "gyre/core/error.h"

using namespace gyre;
using namespace gyre::infer;

namespace {

// Drives a Scheduler like the engine does, with a fake "model": every sampled chunk yields token
// (total_len % 97) + 1000, and a request finishes after max_new tokens.
struct Sim {
  PagePool pool;
  RadixCache cache;
  Scheduler sched;
  std::map<std::string, int> max_new;
  std::vector<std::unique_ptr<Request>> done;
  int64_t steps = 0;

  Sim(int64_t pages, int32_t page_size, SchedulerConfig cfg)
      : pool(pages, page_size), cache(pool), sched(pool, &cache, cfg) {}

  Request* add(const std::string& rid, std::vector<int32_t> prompt, int max_new_tokens,
               int priority = 0) {
    auto r = std::make_unique<Request>();
    r->rid = rid;
    r->prompt = std::move(prompt);
    r->priority = priority;
    max_new[rid] = max_new_tokens;
    return sched.add(std::move(r));
  }

  StepPlan step() {
    StepPlan plan;
    sched.schedule(plan);
    sched.commit(plan);
    for (const auto& c : plan.chunks) {
      if (!c.sample) continue;
      Request* r = c.req;
      r->output.push_back(int32_t(r->total_len() % 97) + 1000);
      if (int(r->output.size()) >= max_new[r->rid]) done.push_back(sched.finish(r));
    }
    ++steps;
    return plan;
  }
  void run(int max_steps = 100000) {
    while ((sched.num_running() || sched.num_queued()) && max_steps-- > 0) step();
  }
};

std::vector<int32_t> prompt_of(int n, int seed) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back((seed * 7919 + i * 31) % 5000);
  return v;
}

}  // namespace

TEST(Scheduler, ChunkedPrefillWithinTokenBudget) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 32;
  Sim sim(64, 16, cfg);
  sim.add("a", prompt_of(100, 1), 3);
  std::vector<int64_t> sizes;
  for (int i = 0; i < 4; ++i) {
    auto plan = sim.step();
    ASSERT_EQ(plan.chunks.size(), 1u);
    sizes.push_back(plan.chunks[0].num_tokens);
    EXPECT_EQ(plan.chunks[0].sample, i == 3);
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{32, 32, 32, 4}));
  sim.run();
  ASSERT_EQ(sim.done.size(), 1u);
  EXPECT_EQ(sim.done[0]->output.size(), 3u);
  sim.sched.check_consistency();
}

TEST(Scheduler, BudgetMixesDecodesAndPrefillAndCapsRunning) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 20;
  cfg.max_running_requests = 4;
  Sim sim(256, 8, cfg);
  for (int i = 0; i < 3; ++i) sim.add("d" + std::to_string(i), prompt_of(5, i), 50);
  sim.step();  // all three prefills fit (15 tokens)
  sim.add("long", prompt_of(40, 9), 2);
  sim.add("extra", prompt_of(4, 10), 2);
  auto plan = sim.step();
  // 3 decode tokens + a 17-token chunk of "long"; "extra" is over max_running (4).
  ASSERT_EQ(plan.chunks.size(), 4u);
  EXPECT_EQ(plan.num_tokens, 20);
  EXPECT_EQ(plan.chunks[3].req->rid, "long");
  EXPECT_EQ(plan.chunks[3].num_tokens, 17);
  EXPECT_EQ(sim.sched.num_queued(), 1u);
  sim.run();
  EXPECT_EQ(sim.done.size(), 5u);
  sim.sched.check_consistency();
}

TEST(Scheduler, GrpoSamplesShareThePromptPrefill) {
  Sim sim(512, 16, SchedulerConfig{});
  auto prompt = prompt_of(129, 3);  // 8 whole pages + 1 token
  for (int i = 0; i < 8; ++i) sim.add("g-" + std::to_string(i), prompt, 4);
  auto first = sim.step();
  ASSERT_EQ(first.chunks.size(), 1u);  // the 7 others wait for the first prefill
  EXPECT_EQ(first.chunks[0].num_tokens, 129);
  auto second = sim.step();
  EXPECT_EQ(second.chunks.size(), 8u);  // 1 decode + 7 admissions of 1 uncached token each
  EXPECT_EQ(second.num_tokens, 8);
  sim.run();
  ASSERT_EQ(sim.done.size(), 8u);
  int64_t cached = 0;
  for (auto& r : sim.done) cached += r->cached_tokens;
  EXPECT_EQ(cached, 7 * 128);
  sim.sched.check_consistency();
  EXPECT_TRUE(sim.sched.flush_cache());
  EXPECT_EQ(sim.pool.num_free(), 512);
}

TEST(Scheduler, RadixHitsOnSharedPrefixWorkload) {
  // 20 requests share a 64-token system prompt and differ after it.
  Sim sim(1024, 16, SchedulerConfig{});
  auto sys = prompt_of(64, 42);
  for (int i = 0; i < 20; ++i) {
    auto p = sys;
    auto tail = prompt_of(20, 100 + i);
    p.insert(p.end(), tail.begin(), tail.end());
    sim.add("s" + std::to_string(i), p, 3);
  }
  sim.run();
  ASSERT_EQ(sim.done.size(), 20u);
  int hits = 0;
  for (auto& r : sim.done) {
    if (r->rid == "s0") {
      EXPECT_EQ(r->cached_tokens, 0);
    } else {
      EXPECT_EQ(r->cached_tokens, 64) << r->rid;
      ++hits;
    }
  }
  EXPECT_EQ(hits, 19);
  sim.sched.check_consistency();
}

TEST(Scheduler, PreemptsLatestArrivalAndRecomputesKeepingOutput) {
  SchedulerConfig cfg;
  cfg.enable_prefix_cache = false;
  Sim sim(6, 4, cfg);  // 24 token slots
  sim.add("old", prompt_of(4, 1), 12);
  sim.add("new", prompt_of(4, 2), 12);
  bool saw_preempt = false;
  while (sim.sched.num_running() + sim.sched.num_queued() > 0) {
    auto plan = sim.step();
    for (Request* v : plan.preempted) {
      EXPECT_EQ(v->rid, "new");  // the latest arrival is the victim
      EXPECT_FALSE(v->output.empty());
      EXPECT_TRUE(v->pages.empty());
      saw_preempt = true;
    }
    sim.sched.check_consistency();
    ASSERT_LT(sim.steps, 200);
  }
  EXPECT_TRUE(saw_preempt);
  ASSERT_EQ(sim.done.size(), 2u);
  for (auto& r : sim.done) {
    EXPECT_EQ(r->output.size(), 12u);
    // The fake model's token depends only on the position: recompute reproduces the sequence.
    for (size_t i = 0; i < r->output.size(); ++i)
      EXPECT_EQ(r->output[i], int32_t((r->prompt.size() + i) % 97) + 1000);
  }
  EXPECT_EQ(sim.pool.num_free(), 6);
}

TEST(Scheduler, AbortQueuedAndRunningFreesPages) {
  Sim sim(64, 4, SchedulerConfig{});
  sim.add("a", prompt_of(9, 1), 100);
  sim.step();
  sim.sched.pause();
  sim.add("b", prompt_of(9, 2), 100);
  auto plan = sim.step();
  EXPECT_TRUE(plan.chunks.empty());       // paused: nothing runs
  EXPECT_FALSE(sim.sched.flush_cache());  // requests exist
  auto b = sim.sched.abort("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state, RequestState::done);
  auto a = sim.sched.abort("a");
  ASSERT_TRUE(a);
  EXPECT_FALSE(sim.sched.abort("zzz"));
  sim.sched.resume();
  sim.sched.check_consistency();
  EXPECT_TRUE(sim.sched.flush_cache());
  EXPECT_EQ(sim.pool.num_free(), 64);
}

TEST(Scheduler, ParseRejectsDuplicateRidAndBadConfig) {
  Sim sim(8, 4, SchedulerConfig{});
  sim.add("x", {1, 2}, 1);
  EXPECT_THROW(sim.add("x", {1, 2}, 1), Error);
  SchedulerConfig bad;
  bad.max_running_requests = 0;
  PagePool pool(4, 4);
  EXPECT_THROW(Scheduler(pool, nullptr, bad), Error);
}

TEST(Scheduler, PriorityModeOrdersQueue) {
  SchedulerConfig cfg;
  cfg.priority = true;
  cfg.max_running_requests = 1;
  Sim sim(64, 4, cfg);
  sim.add("low", prompt_of(3, 1), 1, 0);
  sim.add("high", prompt_of(3, 2), 1, 5);
  auto plan = sim.step();
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].req->rid, "high");
  sim.run();
  EXPECT_EQ(sim.done[0]->rid, "high");
  EXPECT_EQ(sim.done[1]->rid, "low");
}

TEST(Scheduler, WeightVersionBumpInvalidatesCache) {
  Sim sim(64, 4, SchedulerConfig{});
  auto p = prompt_of(17, 5);
  sim.add("a", p, 2);
  sim.run();
  sim.sched.bump_weight_version();
  EXPECT_EQ(sim.sched.weight_version(), 1);
  EXPECT_EQ(sim.cache.cached_pages(), 0);
  sim.add("b", p, 2);
  sim.run();
  EXPECT_EQ(sim.done[1]->cached_tokens, 0);  // stale KV was not reused
  EXPECT_EQ(sim.done[1]->kv_version, 1);
  sim.sched.check_consistency();
}

TEST(Scheduler, PropertyRandomWorkloadEndsWithNoPagesAllocated) {
  std::mt19937 rng(1234);
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 96;
  cfg.max_running_requests = 24;
  Sim sim(48, 4, cfg);  // small pool: eviction and preemption happen all the time
  std::vector<std::vector<int32_t>> bases;
  for (int i = 0; i < 12; ++i) bases.push_back(prompt_of(24, i));
  int next = 0, aborted = 0, forced = 0;
  std::vector<std::string> live;
  while (next < 10000 || sim.sched.num_running() + sim.sched.num_queued() > 0) {
    int arrivals = next < 10000 ? int(rng() % 4) : 0;
    for (int a = 0; a < arrivals && next < 10000; ++a, ++next) {
      auto& base = bases[rng() % bases.size()];
      std::vector<int32_t> p(base.begin(), base.begin() + 1 + rng() % base.size());
      for (int t = int(rng() % 6); t > 0; --t) p.push_back(int32_t(rng() % 5000));
      std::string rid = "r" + std::to_string(next);
      sim.add(rid, p, 1 + int(rng() % 20), int(rng() % 3));
      live.push_back(rid);
    }
    if (!live.empty() && rng() % 10 == 0) {  // random abort (queued, running or already done)
      size_t k = rng() % live.size();
      if (sim.sched.abort(live[k])) ++aborted;
      live.erase(live.begin() + long(k));
    }
    if (sim.sched.num_running() > 0 && rng() % 15 == 0) {  // forced preemption
      sim.sched.preempt(sim.sched.running()[rng() % sim.sched.num_running()]);
      ++forced;
    }
    if (rng() % 500 == 0) sim.sched.bump_weight_version();
    sim.step();
    if (sim.steps % 97 == 0) sim.sched.check_consistency();
    ASSERT_LT(sim.steps, 400000) << "no progress";
  }
  sim.sched.check_consistency();
  EXPECT_GT(aborted, 100);
  EXPECT_GT(forced, 100);
  EXPECT_EQ(int(sim.done.size()) + aborted, 10000);
  for (auto& r : sim.done) EXPECT_EQ(int(r->output.size()), sim.max_new[r->rid]);
  EXPECT_TRUE(sim.sched.flush_cache());
  EXPECT_EQ(sim.pool.num_allocated(), 0);
  sim.pool.check_consistency();
}
