// Decode look-ahead (EngineConfig::decode_look_ahead; SGLang's overlap scheduler): a burst of
// CUDA-graph decode steps in which step n + 1 is launched before step n's tokens are read back.
//
// Without it, the host does all of its per-step work — reading back the sampled tokens, stop
// checks, streaming, scheduling, the next step's upload and graph launch — while the GPU waits:
// at batch 256 that was ~0.45 ms of every ~3.4 ms 0.5B step (session 30, H200). With it:
//   launch step n + 1 (ids = step n's sampled ids, copied on the device)
//   read back step n (waits on step n's copy only, not on step n + 1), process its tokens
//   launch step n + 2 ...
// so the GPU always has the next step queued.
//
// Invariants (why the outputs are exactly those of one step at a time):
// - Step n + 1 runs the same requests in the same order (can_look_ahead), each one token further:
//   a placeholder stands for step n's token in Request::output until step n is read back and
//   process_row(pending) writes the real token over it. Scheduling, positions, pages and the
//   sampler's draw counter (output.size()) therefore see what they would have seen after step n.
//   The placeholder's id never reaches the model: the graph's ids come from step n's device ids.
// - No request finishes by length at step n (checked before looking ahead), so the only way a
//   request of step n + 1 is gone by the time step n + 1 is read back is a stop (token or string)
//   found at step n. Its row of step n + 1 computed the KV of its last token (correct, and cached
//   with the request's pages like any computed token) and a sample that is dropped; the burst ends
//   there, since the next step's set of requests differs.
// - Nothing changes the engine between the steps of a burst: it continues only while the inbox is
//   empty (submits, aborts, weight updates, pause and flush wait for the burst's end, a step or
//   two), and no request can be admitted or preempted (checked). Every launched step is read back
//   before the burst returns, so between run_step() calls nothing is in flight.
#include <exception>
#include <string>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_job.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

namespace {

// What Request::output holds for a token still being sampled on the device. Any id of the
// vocabulary would do: the host checks of the step accept it and the model never reads it.
constexpr int32_t kPendingToken = 0;

}  // namespace

bool Engine::can_look_ahead(const std::vector<Request*>& reqs) const {
  if (!graphs_ || !cfg_.decode_look_ahead || follower_state_ != Followers::none) return false;
  // Tensor-parallel ranks driven inline each decide for themselves; a look-ahead taken on one rank
  // and not another (a callback that posted to one inbox) would mismatch their collectives.
  const model::TpLayout* tp = model_.tensor_parallel();
  if (tp && tp->size > 1) return false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!inbox_.empty() || stopping_) return false;
  }
  if (sched_->paused()) return false;
  // The same requests in the same order: the next plan's rows are this step's rows.
  const std::vector<Request*>& running = sched_->running();
  if (running != reqs) return false;
  const int64_t B = int64_t(reqs.size());
  // No admission (nothing queued, or no room) and every running request inside the budget.
  if (sched_->num_queued() > 0 && B < int64_t(cfg_.max_running_requests)) return false;
  if (B > cfg_.max_num_batched_tokens) return false;
  if (!graphs_->replayable(B)) return false;
  int64_t new_pages = 0;
  for (const Request* r : reqs) {
    const SamplingParams& sp = job_of(r).req.sampling;
    // After this step's token: output o + 1 and length total + 1. It must not finish by length
    // then (process_row's rule), or it would be gone from the next step.
    const int64_t o = int64_t(r->output.size()) + 1, total = r->total_len() + 1;
    if (o >= sp.max_new_tokens || total >= cfg_.context_len) return false;
    // The next step computes position total - 1: pages for `total` tokens.
    if (pool_->pages_for(total) > int64_t(r->pages.size())) ++new_pages;
  }
  return new_pages <= pool_->num_free();  // so schedule() neither evicts nor preempts
}

Tensor Engine::launch_ahead(const std::vector<Request*>& reqs, const Tensor& ids,
                            const DeviceSampling& ds) {
  sched_->schedule(ahead_plan_);
  bool same = ahead_plan_.preempted.empty() && ahead_plan_.chunks.size() == reqs.size();
  for (size_t i = 0; same && i < reqs.size(); ++i) {
    const ScheduledChunk& c = ahead_plan_.chunks[i];
    same = c.req == reqs[i] && c.num_tokens == 1 && c.sample && c.start == reqs[i]->total_len() - 1;
  }
  if (!same)
    GYRE_THROW(internal,
               "decode look-ahead: the scheduler planned {} chunks ({} preempted) where {} decode "
               "tokens of the running requests were expected",
               ahead_plan_.chunks.size(), ahead_plan_.preempted.size(), reqs.size());
  build_step_batch(
      ahead_plan_, cfg_.page_size, [](const Request*) -> int64_t { return -1; }, ahead_batch_);
  Tensor logits = graphs_->run(ahead_batch_, DecodeGraphs::Mode::replay_or_eager, {}, &ids);
  if (!logits.defined()) GYRE_THROW(internal, "decode look-ahead: the graph replay gave no logits");
  sched_->commit(ahead_plan_);
  return launch_device_sampling(logits, ds);
}

void Engine::run_decode_burst(std::vector<Request*> reqs, Tensor results) {
  ops::UseBf16WeightCache use_cache(&weight_cache_);
  int slot = 0;
  readback_[slot].start(results);
  Timer timer;
  double t_last = 0;
  // Reads back the step in `slot` and processes its rows; `pending`: their tokens fill the
  // placeholders of a launched successor. `gone[i]`: row i's request finished earlier (its row is
  // dropped); set for the rows that finish now. Returns whether any row finished now.
  std::vector<char> gone(reqs.size(), 0);
  auto collect = [&](int from, bool pending) {
    const int64_t R = int64_t(reqs.size());
    const double t0 = timer.elapsed();
    const auto* host = static_cast<const int32_t*>(readback_[from].wait());
    const double t1 = timer.elapsed();
    const std::vector<SampleResult> res = unpack_samples(host, R);
    bool finished = false;
    int64_t decoded = 0;
    int64_t dropped = 0;
    for (int64_t i = 0; i < R; ++i) {
      if (gone[size_t(i)]) {
        ++dropped;
        continue;
      }
      Request* r = reqs[size_t(i)];
      ++decoded;
      if (process_row(r, job_of(r), res[size_t(i)], pending)) gone[size_t(i)] = 1, finished = true;
    }
    const double t2 = timer.elapsed();
    {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.sample_seconds += t1 - t0;
      stats_.finish_seconds += t2 - t1;
      stats_.look_ahead_dropped_rows += dropped;
    }
    update_stats(t2 - t_last, decoded);
    t_last = t2;
    return finished;
  };
  while (true) {
    // 1. The next step, launched before this one's tokens are known when it is predictable.
    bool ahead = false;
    std::string failed;  // the look-ahead's launch failed after its plan was made: why
    if (can_look_ahead(reqs)) {
      for (Request* r : reqs) r->output.push_back(kPendingToken);
      DeviceSampling ds;
      if (device_sampling({reqs.begin(), reqs.end()}, vocab_, ds)) {
        const double t0 = timer.elapsed();
        try {
          Tensor next = launch_ahead(reqs, results.narrow(0, int64_t(reqs.size())), ds);
          results = std::move(next);
          readback_[slot ^ 1].start(results);
          ahead = true;
        } catch (const std::exception& e) {
          failed = e.what();
        }
        std::lock_guard<std::mutex> lk(mu_);
        stats_.forward_seconds += timer.elapsed() - t0;
        if (ahead) ++stats_.look_ahead_steps;
      }
      if (!ahead && failed.empty())
        for (Request* r : reqs) r->output.pop_back();  // nothing was planned: undo
    }
    // 2. This step's tokens (over the placeholders when the next step was planned).
    const bool finished = collect(slot, ahead || !failed.empty());
    if (!failed.empty()) {
      // Like a failed forward in run_step: the planned step's requests end with the error.
      log::error("engine step failed: {}", failed);
      for (size_t i = 0; i < reqs.size(); ++i)
        if (!gone[i])
          finish(reqs[i], {FinishType::abort, {}, {}, fmt::format("engine error: {}", failed)});
      return;
    }
    if (!ahead) return;
    slot ^= 1;
    if (finished) {
      // A request stopped: the in-flight step is read back (its row dropped) and the burst ends,
      // as the next step's requests differ.
      collect(slot, false);
      return;
    }
  }
}

}  // namespace gyre::infer
