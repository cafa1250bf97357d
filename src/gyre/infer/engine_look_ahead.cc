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
// Invariants (why the outputs are those of one step at a time):
// - Step n + 1 runs the same requests in the same order (can_look_ahead), each one token further:
//   a placeholder stands for step n's token in Request::output until step n is read back and
//   process_row(pending) writes the real token over it. Scheduling, positions, pages and the
//   sampler's draw counter (output.size()) therefore see what they would have seen after step n.
//   The placeholder's id never reaches the model: the graph's ids come from step n's device ids.
// - No request finishes by length at step n (checked before looking ahead), so the only way a
//   request of step n + 1 is gone by the time step n + 1 is read back is a stop (token or string)
//   found at step n. Its row of step n + 1 computed the KV of its last token (correct, and cached
//   with the request's pages like any computed token) and a sample that is dropped. The burst goes
//   on with the others: step n + 2 runs the live rows of step n + 1 (their ids gathered on the
//   device), as the scheduler would plan it — unless the freed room would admit a queued request.
//   The one difference: step n + 1's other rows ran in a batch one row larger than without
//   look-ahead, so where a backend rounds a row differently in another batch size (the CPU's
//   GEMMs; a GPU graph bucket past the GEMV's rows) their log-probs differ in the last bits.
//
// The CPU looks ahead only as a test hook (EngineConfig::decode_look_ahead_eager): eager_decode_
// forward and sample_rows_on_host stand in for the graph replay and the device samplers, so the
// bookkeeping above runs, and is checked against stepping one at a time, on every build.
// - Nothing changes the engine between the steps of a burst: it continues only while the inbox is
//   empty (submits, aborts, weight updates, pause and flush wait for the burst's end, a step or
//   two), and no request can be admitted or preempted (checked). Every launched step is read back
//   before the burst returns, so between run_step() calls nothing is in flight.
#include <algorithm>
#include <cstring>
#include <exception>
#include <string>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_job.h"
#include "gyre/infer/paged_attention_context.h"
#include "gyre/infer/sampler.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

namespace {

// What Request::output holds for a token still being sampled on the device. Any id of the
// vocabulary would do: the host checks of the step accept it and the model never reads it.
constexpr int32_t kPendingToken = 0;

}  // namespace

bool Engine::eager_look_ahead_step() const {
  if (!cfg_.decode_look_ahead_eager || graphs_ || model_.device() != Device::cpu) return false;
  if (plan_.chunks.empty() || batch_.rows.size() != plan_.chunks.size()) return false;
  for (size_t i = 0; i < plan_.chunks.size(); ++i) {
    const ScheduledChunk& c = plan_.chunks[i];
    if (c.num_tokens != 1 || !c.sample || batch_.rows[i].chunk != int32_t(i)) return false;
  }
  return true;
}

bool Engine::can_look_ahead(const std::vector<Request*>& reqs) const {
  // The GPU looks ahead through a captured decode graph; the CPU only as the test hook.
  const bool eager = cfg_.decode_look_ahead_eager && model_.device() == Device::cpu;
  if ((!graphs_ && !eager) || !cfg_.decode_look_ahead || follower_state_ != Followers::none)
    return false;
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
  if (graphs_ && !graphs_->replayable(B)) return false;
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
  Tensor logits = graphs_
                      ? graphs_->run(ahead_batch_, DecodeGraphs::Mode::replay_or_eager, {}, &ids)
                      : eager_decode_forward(ahead_batch_, ids);
  if (!logits.defined()) GYRE_THROW(internal, "decode look-ahead: the graph replay gave no logits");
  sched_->commit(ahead_plan_);
  return launch_device_sampling(logits, ds);
}

Tensor Engine::eager_decode_forward(StepBatch& batch, const Tensor& ids) {
  const int64_t B = int64_t(batch.ids.size());
  if (ids.device() != Device::cpu || ids.dtype() != DType::i32 || ids.numel() != B ||
      int64_t(batch.logits_rows.size()) != B)
    GYRE_THROW(internal,
               "decode look-ahead (eager): {} ids for a step of {} tokens and {} logits rows",
               ids.numel(), B, batch.logits_rows.size());
  const int32_t* p = ids.i32();
  std::copy(p, p + B, batch.ids.begin());  // over the placeholders' ids
  PagedAttentionContext ctx(*kv_, batch);  // validates the step's page table
  model::Batch b;
  b.ids = borrow_i32(batch.ids);
  b.positions = borrow_i32(batch.positions);
  b.cu_seqlens = borrow_i32(batch.cu_seqlens_q);
  model::ForwardOptions opt;
  opt.logits_rows = borrow_i32(batch.logits_rows);
  opt.gather_vocab = true;
  opt.attention = &ctx;
  return model_.forward(b, opt);
}

Tensor Engine::sample_rows_on_host(const Tensor& logits, const DeviceSampling& ds) const {
  // What run_step's host path does for these rows (device_sampling() admitted them: no penalties,
  // no masked stop ids, no top log-probs), packed like launch_device_sampling's device results.
  const int64_t R = int64_t(ds.rows.size()), V = logits.size(1);
  if (logits.dtype() != DType::f32 || logits.size(0) < R)
    GYRE_THROW(internal, "host sampling: {} logits rows for {} requests", logits.size(0), R);
  const float* L = logits.f32();
  std::vector<int32_t> packed(size_t(2 * R));
  Sampler sampler;
  for (int64_t i = 0; i < R; ++i) {
    const Request* r = ds.rows[size_t(i)];
    const Job& job = job_of(r);
    SampleInput in;
    in.logits = L + i * V;
    in.vocab = V;
    in.params = &job.req.sampling;
    in.prompt = r->prompt;
    in.output = r->output;  // its size is the draw counter (placeholders included)
    in.seed = job.seed;
    const SampleResult s = sampler.sample(in);
    packed[size_t(i)] = s.token;
    std::memcpy(&packed[size_t(R + i)], &s.logprob, sizeof(float));
  }
  return Tensor::from_vector(packed, {2 * R});
}

namespace {

// The sampled ids of a step's rows that are still live (gone[i] == 0), in row order: the next
// step's ids. `results` is the step's [2R] sampling output (ids first). One device copy per run of
// live rows (all live: a view, no copy).
Tensor live_ids(const Tensor& results, const std::vector<char>& gone) {
  const int64_t R = int64_t(gone.size());
  int64_t live = 0;
  for (char g : gone) live += !g;
  if (live == R) return results.narrow(0, R);
  Tensor out = Tensor::empty({live}, DType::i32, results.device());
  int64_t o = 0;
  for (int64_t a = 0; a < R;) {
    if (gone[size_t(a)]) {
      ++a;
      continue;
    }
    int64_t b = a;
    while (b < R && !gone[size_t(b)]) ++b;
    out.narrow(o, b - a).copy_from(results.narrow(a, b - a));
    o += b - a;
    a = b;
  }
  return out;
}

}  // namespace

void Engine::run_decode_burst(std::vector<Request*> reqs, Tensor results) {
  ops::UseBf16WeightCache use_cache(model_.device() == Device::cuda ? &weight_cache_ : nullptr);
  int slot = 0;
  readback_[slot].start(results);
  Timer timer;
  double t_last = 0;
  // The step being read back: its rows' requests `reqs` (row order) and gone[i] — row i's request
  // finished before this step was read back (it stopped at the previous step, after this one was
  // launched): its row is dropped.
  std::vector<char> gone(reqs.size(), 0);
  // Reads back the step in `from` and processes its live rows; `pending`: their tokens fill the
  // placeholders of a launched successor. Marks the rows that finish now in `gone`.
  auto collect = [&](int from, bool pending) {
    const int64_t R = int64_t(reqs.size());
    const double t0 = timer.elapsed();
    const auto* host = static_cast<const int32_t*>(readback_[from].wait());
    const double t1 = timer.elapsed();
    const std::vector<SampleResult> res = unpack_samples(host, R);
    int64_t decoded = 0, dropped = 0;
    for (int64_t i = 0; i < R; ++i) {
      if (gone[size_t(i)]) {
        ++dropped;
        continue;
      }
      Request* r = reqs[size_t(i)];
      ++decoded;
      if (process_row(r, job_of(r), res[size_t(i)], pending)) gone[size_t(i)] = 2;  // now
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
  };
  while (true) {
    // 1. The next step over the live rows, launched before this step's tokens are known when it
    //    is predictable (the running set is exactly the live rows: can_look_ahead).
    std::vector<Request*> live;
    for (size_t i = 0; i < reqs.size(); ++i)
      if (!gone[i]) live.push_back(reqs[i]);
    bool ahead = false;
    std::string failed;  // the look-ahead's launch failed after its plan was made: why
    Tensor next;
    if (!live.empty() && can_look_ahead(live)) {
      for (Request* r : live) r->output.push_back(kPendingToken);
      DeviceSampling ds;
      const std::vector<const Request*> rows(live.begin(), live.end());
      if (device_sampling(rows, vocab_, ds)) {
        const double t0 = timer.elapsed();
        try {
          next = launch_ahead(live, live_ids(results, gone), ds);
          readback_[slot ^ 1].start(next);
          ahead = true;
        } catch (const std::exception& e) {
          failed = e.what();
        }
        std::lock_guard<std::mutex> lk(mu_);
        stats_.forward_seconds += timer.elapsed() - t0;
        if (ahead) ++stats_.look_ahead_steps;
      }
      if (!ahead && failed.empty())
        for (Request* r : live) r->output.pop_back();  // nothing was planned: undo
    }
    // 2. This step's tokens (over the placeholders when the next step was planned).
    collect(slot, ahead || !failed.empty());
    if (!failed.empty()) {
      // Like a failed forward in run_step: the planned step's requests end with the error.
      log::error("engine step failed: {}", failed);
      for (size_t i = 0; i < reqs.size(); ++i)
        if (!gone[i])
          finish(reqs[i], {FinishType::abort, {}, {}, fmt::format("engine error: {}", failed)});
      return;
    }
    if (!ahead) return;
    // 3. The launched step becomes the one to read back: its rows are `live`, and those whose
    //    request finished just now (a stop at this step) are dropped from it.
    std::vector<char> next_gone;
    for (size_t i = 0; i < reqs.size(); ++i)
      if (gone[i] != 1) next_gone.push_back(gone[i] == 2);
    reqs = std::move(live);
    gone = std::move(next_gone);
    results = std::move(next);
    slot ^= 1;
  }
}

}  // namespace gyre::infer
