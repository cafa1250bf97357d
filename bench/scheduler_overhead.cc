// Scheduler overhead: microseconds of host work per engine step at 256 running (decoding) requests,
// no model compute — schedule (budget, pages, admission) + packing the step's flat i32 arrays
// (StepBatch) + commit + appending the sampled tokens. Goal: <= 50 us per step (a decode step of a
// 7B model on an H200 takes ~10 ms; scheduling must stay well under 1% of it).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/timer.h"
#include "gyre/infer/scheduler.h"
#include "gyre/infer/step_batch.h"

using namespace gyre;
using namespace gyre::infer;

int main() {
  const int kRunning = 256, kPrompt = 200, kSteps = 2000;
  PagePool pool(kRunning * (kPrompt + kSteps + 64) / 16 + 64, 16);
  RadixCache cache(pool);
  SchedulerConfig cfg;
  cfg.max_running_requests = kRunning;
  cfg.max_num_batched_tokens = 8192;
  Scheduler sched(pool, &cache, cfg);
  for (int i = 0; i < kRunning; ++i) {
    auto r = std::make_unique<Request>();
    r->rid = fmt::format("r{}", i);
    for (int t = 0; t < kPrompt; ++t) r->prompt.push_back((i * 131 + t * 7) % 32000);
    sched.add(std::move(r));
  }
  StepPlan plan;
  StepBatch batch;
  auto no_prompt_rows = [](const Request*) -> int64_t { return -1; };
  auto one_step = [&] {
    sched.schedule(plan);
    build_step_batch(plan, pool.page_size(), no_prompt_rows, batch);
    sched.commit(plan);
    for (const auto& c : plan.chunks)
      if (c.sample) c.req->output.push_back(int32_t(c.req->total_len() % 32000));
  };
  while (true) {  // prefill everything first
    one_step();
    bool all_decoding = true;
    for (Request* r : sched.running()) all_decoding &= r->total_len() - r->num_computed == 1;
    if (sched.num_running() == size_t(kRunning) && all_decoding) break;
  }
  // Best and median of 10 windows of kSteps / 10 steps: the host is shared, so the minimum is the
  // scheduler's own cost and the median shows the interference.
  std::vector<double> windows;
  int64_t tokens = 0;
  for (int w = 0; w < 10; ++w) {
    Timer t;
    for (int s = 0; s < kSteps / 10; ++s) {
      one_step();
      tokens += plan.num_tokens;
    }
    windows.push_back(t.elapsed() / (kSteps / 10) * 1e6);
  }
  std::sort(windows.begin(), windows.end());
  double us = windows.front(), median = windows[windows.size() / 2];
  std::printf(
      "{\"bench\": \"scheduler_overhead\", \"metric\": \"us_per_step\", \"value\": %.2f, "
      "\"median_us\": %.2f, \"running_requests\": %d, \"tokens_per_step\": %.1f, "
      "\"page_size\": 16, \"goal\": \"<= 50 us\", \"meets_goal\": %s}\n",
      us, median, kRunning, double(tokens) / kSteps, us <= 50 ? "true" : "false");
  return 0;
}
