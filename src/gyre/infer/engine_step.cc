// Engine step: pack the scheduled chunks into one Batch, run the model through the paged attention
// context with logits only for the rows that need them, sample (in parallel over rows: each row
// depends only on its own logits, seed and counter), then update, stream and finish requests.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "gyre/backend/ops.h"
#include "gyre/backend/sampling_ops.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/thread_pool.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_job.h"
#include "gyre/infer/paged_attention_context.h"
#include "gyre/model/causal_lm.h"

namespace gyre::infer {

void Engine::run_step() {
  Timer timer;
  sched_->schedule(plan_);
  for (Request* v : plan_.preempted)
    log::debug("preempted {} ({} tokens generated) for lack of KV pages", v->rid, v->output.size());
  if (plan_.chunks.empty()) return;
  if (follower_state_ == Followers::lost) {  // the tp group cannot run a forward any more
    fail_plan(followers_error_);
    return;
  }
  build_step_batch(
      plan_, cfg_.page_size,
      [](const Request* r) -> int64_t {
        return r->logprob_start_len >= 0 ? std::max(0, r->logprob_start_len - 1) : -1;
      },
      batch_);
  model::Batch b;
  b.ids = borrow_i32(batch_.ids);
  b.positions = borrow_i32(batch_.positions);
  b.cu_seqlens = borrow_i32(batch_.cu_seqlens_q);
  std::vector<int32_t> one_row = {0};  // the model needs >= 1 logits row; ignored when unused
  const double t_scheduled = timer.elapsed();
  model::ForwardOptions opt;
  opt.logits_rows = borrow_i32(batch_.logits_rows.empty() ? one_row : batch_.logits_rows);
  opt.gather_vocab = true;  // tensor parallelism: sample from the full [rows, V] logits
  Tensor logits;
  bool replayed = false;   // the step ran through a decode graph
  bool plan_sent = false;  // the followers received this step's plan and are inside its forward
  try {
    // bf16 weights converted once, then kept up to date in place by update_weights (not per
    // decode step; ops::Bf16WeightCache). Only autocast linears on the GPU consult it.
    ops::UseBf16WeightCache use_cache(model_.device() == Device::cuda ? &weight_cache_ : nullptr);
    if (graphs_ && graphs_->eligible(batch_)) {
      // Tensor-parallel leader: the plan goes out once the graph runner validated the step, saying
      // whether this rank captures or replays, so the followers' forward issues the same
      // collectives (DecodeGraphs::Mode).
      auto send = [&](bool capturing) {
        if (follower_state_ != Followers::engaged) return;
        send_to_followers(capturing ? StepOp::graph_capture : StepOp::graph_replay, {},
                          batch_.logits_rows);
        plan_sent = true;
      };
      try {
        logits = graphs_->run(batch_, DecodeGraphs::Mode::automatic, send);
        replayed = logits.defined();
        if (!logits.defined()) {
          // The capture failed (on every tp rank alike: they agreed on it); this step and the
          // later ones run eagerly — the followers do the same with the plan they already have.
          log::warn("engine: CUDA graph capture failed ({}); decoding without graphs",
                    graphs_->failure());
          graphs_.reset();
        }
      } catch (const Error& e) {
        // Past the plan, the followers are inside this forward: a failed forward (below); so is
        // a plan that could not be sent (followers lost).
        if (plan_sent || follower_state_ == Followers::lost) throw;
        // A model whose forward cannot be captured (it synchronises the host somewhere): decode
        // eagerly from now on rather than fail requests.
        log::warn("engine: CUDA graph capture failed ({}); decoding without graphs", e.what());
        graphs_.reset();
      }
    }
    if (!logits.defined()) {
      // Validates the step's page table once (a bad one fails the plan like a failed forward).
      PagedAttentionContext ctx(*kv_, batch_);
      // Tensor-parallel leader: the plan goes to the followers only once it passed the checks
      // above, so they never start a forward the leader refuses; then every rank runs it.
      if (follower_state_ == Followers::engaged && !plan_sent) {
        send_to_followers(StepOp::forward, {},
                          batch_.logits_rows.empty() ? one_row : batch_.logits_rows);
        plan_sent = true;
      }
      opt.attention = &ctx;
      logits = model_.forward(b, opt);
      opt.attention = nullptr;
    }
  } catch (const std::exception& e) {
    if (plan_sent && follower_state_ == Followers::engaged) {
      // The followers are inside this forward's collectives, which the leader left: the next
      // broadcast would meet them there (mismatched collectives). The group is out of lockstep for
      // good; later steps and release_followers() fail at once with this reason.
      follower_state_ = Followers::lost;
      followers_error_ =
          fmt::format("the leader's forward failed after its plan was sent: {}", e.what());
      log::error("engine: tensor-parallel followers lost: {}", followers_error_);
    }
    fail_plan(e.what());
    return;
  }
  sched_->commit(plan_);
  // A decode graph's step that samples on the device may become the first of a look-ahead burst
  // (engine_look_ahead.cc): its sampling is launched and read back asynchronously there.
  if ((replayed || eager_look_ahead_step()) && cfg_.decode_look_ahead &&
      follower_state_ == Followers::none) {
    for (const ScheduledChunk& c : plan_.chunks)  // as below: the prompt's log-probs are complete
      if (c.req->num_computed >= int64_t(c.req->prompt.size())) c.req->logprob_start_len = -1;
    std::vector<Request*> reqs;
    bool fresh = true;  // no row finishes without a sample (max_new_tokens 0)
    for (const LogitsRow& row : batch_.rows) {
      Request* r = plan_.chunks[size_t(row.chunk)].req;
      fresh =
          fresh && row.sample && int64_t(r->output.size()) < job_of(r).req.sampling.max_new_tokens;
      reqs.push_back(r);
    }
    DeviceSampling ds;
    if (fresh && device_sampling({reqs.begin(), reqs.end()}, logits.size(1), ds)) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        stats_.schedule_seconds += t_scheduled;
        stats_.forward_seconds += timer.elapsed() - t_scheduled;
      }
      Tensor results;
      {
        ops::UseBf16WeightCache use_cache(model_.device() == Device::cuda ? &weight_cache_
                                                                          : nullptr);
        results = launch_device_sampling(logits, ds);
      }
      run_decode_burst(std::move(reqs), std::move(results));
      return;
    }
  }
  // A GPU model's logits: sample on the device when every row allows it (device_results, one
  // small copy of tokens and log-probs), else copy the [rows, V] logits to the host sampler.
  std::vector<SampleResult> device_results = sample_on_device(logits);
  if (device_results.empty() && logits.device() != Device::cpu) logits = logits.to(Device::cpu);
  const double t_forward = timer.elapsed();
  const int64_t V = logits.size(1);
  const float* L = device_results.empty() ? logits.f32() : nullptr;

  // Prompt log-prob rows (cheap, serial) and the list of sampling rows.
  std::vector<size_t> sample_rows;
  for (size_t i = 0; i < batch_.rows.size(); ++i) {
    const LogitsRow& row = batch_.rows[i];
    Request* r = plan_.chunks[size_t(row.chunk)].req;
    Job& job = job_of(r);
    if (!row.sample) {
      int64_t idx = row.pos + 1 - job.req.logprob_start_len;
      const float* x = L + int64_t(i) * V;
      int32_t target = r->prompt[size_t(row.pos + 1)];
      job.input_logprobs[size_t(idx)] = token_logprob(x, V, job.req.sampling.temperature, target);
      if (!job.input_top.empty())
        job.input_top[size_t(idx)] =
            top_logprobs(x, V, job.req.sampling.temperature, job.req.top_logprobs_num);
      continue;
    }
    sample_rows.push_back(i);
  }
  // The prompt's log-probs are complete once its last row ran: stop asking for them (and stop
  // limiting radix matches) if the request is ever re-prefilled after a preemption.
  for (const ScheduledChunk& c : plan_.chunks)
    if (c.req->num_computed >= int64_t(c.req->prompt.size())) c.req->logprob_start_len = -1;

  std::vector<SampleResult> results(sample_rows.size());
  std::vector<char> skip(sample_rows.size(), 0);
  std::vector<std::vector<int32_t>> masks(sample_rows.size());
  for (size_t k = 0; k < sample_rows.size(); ++k) {
    Request* r = plan_.chunks[size_t(batch_.rows[sample_rows[k]].chunk)].req;
    Job& job = job_of(r);
    if (int64_t(r->output.size()) >= job.req.sampling.max_new_tokens) skip[k] = 1;  // max_new 0
    if (int64_t(r->output.size()) < job.req.sampling.min_new_tokens) masks[k] = job.stop_ids;
  }
  if (!device_results.empty()) results = std::move(device_results);  // rows == sample_rows
  if (L)
    parallel_for(int64_t(sample_rows.size()), 1, [&](int64_t k0, int64_t k1) {
      thread_local Sampler sampler;
      for (int64_t k = k0; k < k1; ++k) {
        if (skip[size_t(k)]) continue;
        size_t i = sample_rows[size_t(k)];
        Request* r = plan_.chunks[size_t(batch_.rows[i].chunk)].req;
        Job& job = job_of(r);
        SampleInput in;
        in.logits = L + int64_t(i) * V;
        in.vocab = V;
        in.params = &job.req.sampling;
        in.prompt = r->prompt;
        in.output = r->output;
        in.seed = job.seed;
        in.masked_ids = masks[size_t(k)];
        in.top_logprobs_num = job.req.top_logprobs_num;
        results[size_t(k)] = sampler.sample(in);
      }
    });
  const double t_sampled = timer.elapsed();
  int64_t decoded = 0;
  for (size_t k = 0; k < sample_rows.size(); ++k) {
    Request* r = plan_.chunks[size_t(batch_.rows[sample_rows[k]].chunk)].req;
    if (skip[k]) {
      finish(r, {FinishType::length, {}, {}, {}});
      continue;
    }
    process_row(r, job_of(r), results[k]);
    ++decoded;
  }
  const double t_end = timer.elapsed();
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.schedule_seconds += t_scheduled;
    stats_.forward_seconds += t_forward - t_scheduled;
    stats_.sample_seconds += t_sampled - t_forward;
    stats_.finish_seconds += t_end - t_sampled;
  }
  update_stats(t_end, decoded);
}

std::vector<SampleResult> Engine::sample_on_device(const Tensor& logits) const {
  // The device samplers cover greedy, temperature, min-p, top-k and top-p rows over the whole
  // vocabulary (ops::sample_tokens, and ops::sample_tokens_filtered once any row has top-k/top-p:
  // both draw the CPU sampler's Philox numbers and pick its tokens), with log-probs of the chosen
  // tokens at one logprob temperature. Anything else — prompt log-prob rows, penalties, masked
  // stop tokens before min_new_tokens, top log-probs, mixed logprob temperatures or min_p in one
  // batch — takes the host path.
  if (logits.device() == Device::cpu || batch_.rows.empty()) return {};
  std::vector<const Request*> rows;
  rows.reserve(batch_.rows.size());
  for (const LogitsRow& row : batch_.rows) {
    if (!row.sample) return {};
    rows.push_back(plan_.chunks[size_t(row.chunk)].req);
  }
  DeviceSampling ds;
  if (!device_sampling(rows, logits.size(1), ds)) return {};
  const Tensor host = launch_device_sampling(logits, ds).to(Device::cpu);  // one readback
  return unpack_samples(host.i32(), int64_t(rows.size()));
}

bool Engine::device_sampling(const std::vector<const Request*>& rows, int64_t V,
                             DeviceSampling& ds) const {
  const size_t R = rows.size();
  ds.rows = rows;
  ds.temps.assign(R, 0.0f);
  ds.top_ps.assign(R, 1.0f);
  ds.top_ks.assign(R, 0);
  ds.seeds.assign(R, 0);
  ds.steps.assign(R, 0);
  ds.filtered = false;
  for (size_t i = 0; i < R; ++i) {
    const Request* r = rows[i];
    const Job& job = job_of(r);
    const SamplingParams& sp = job.req.sampling;
    if (sp.repetition_penalty != 1.0f || sp.presence_penalty != 0.0f ||
        sp.frequency_penalty != 0.0f || job.req.top_logprobs_num > 0)
      return false;
    if (int64_t(r->output.size()) < sp.min_new_tokens && !job.stop_ids.empty()) return false;
    const bool greedy = sp.temperature < kGreedyTemperature;
    const float row_lp_temp = greedy ? 1.0f : sp.temperature;  // Sampler's logprob temperature
    if (i == 0) {
      ds.min_p = sp.min_p, ds.lp_temp = row_lp_temp;
    } else if (sp.min_p != ds.min_p || row_lp_temp != ds.lp_temp) {
      return false;
    }
    // top_k == 1 is greedy in the Sampler (and in sample_tokens_filtered).
    if ((sp.top_k > 0 && sp.top_k < V) || sp.top_k == 1 || sp.top_p < 1.0f) ds.filtered = true;
    ds.temps[i] = greedy ? 0.0f : sp.temperature;
    ds.top_ks[i] = sp.top_k;
    ds.top_ps[i] = sp.top_p;
    ds.seeds[i] = int64_t(job.seed);  // the uint64 key's bit pattern
    ds.steps[i] = int64_t(r->output.size());
  }
  return R > 0;
}

Tensor Engine::launch_device_sampling(const Tensor& logits, const DeviceSampling& ds) const {
  const int64_t R = int64_t(ds.temps.size());
  const Device dev = logits.device();
  if (dev == Device::cpu) return sample_rows_on_host(logits, ds);  // eager look-ahead only
  // The sampled ids (i32) and their log-probs (f32) are written side by side into one device
  // buffer, so ONE readback (one stream synchronisation, or one event) brings both to the host.
  // A second readback was another round trip after the step's last kernel, with the GPU idle
  // (issue 7: batch-1 decode, where every host microsecond between two steps adds to the step).
  Tensor results = Tensor::empty({2 * R}, DType::i32, dev);
  Tensor tokens = results.narrow(0, R), none;
  Tensor logp = Tensor::borrow(results.narrow(R, R).raw(), {R}, DType::f32, dev,
                               std::make_shared<Tensor>(results));
  const Tensor rows = logits.narrow(0, R);
  if (ds.filtered)
    ops::sample_tokens_filtered(rows, Tensor::from_vector(ds.temps, {R}).to(dev),
                                Tensor::from_vector(ds.top_ks, {R}).to(dev),
                                Tensor::from_vector(ds.top_ps, {R}).to(dev),
                                Tensor::from_vector(ds.seeds, {R}).to(dev),
                                Tensor::from_vector(ds.steps, {R}).to(dev), ds.min_p, tokens);
  else
    ops::sample_tokens(rows, Tensor::from_vector(ds.temps, {R}).to(dev),
                       Tensor::from_vector(ds.seeds, {R}).to(dev),
                       Tensor::from_vector(ds.steps, {R}).to(dev), ds.min_p, tokens);
  ops::KnownIndices known;  // the samplers draw ids in [0, V): no host check of the targets
  known.add_range(tokens, 0, logits.size(1));
  ops::token_logprobs(rows, tokens, ds.lp_temp, logp, none);
  return results;
}

std::vector<SampleResult> Engine::unpack_samples(const int32_t* host, int64_t R) {
  std::vector<SampleResult> out(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) {
    out[size_t(i)].token = host[i];
    std::memcpy(&out[size_t(i)].logprob, host + R + i, sizeof(float));  // the f32 half's bits
  }
  return out;
}

void Engine::fail_plan(const std::string& message) {
  log::error("engine step failed: {}", message);
  std::vector<Request*> reqs;
  for (const ScheduledChunk& c : plan_.chunks) reqs.push_back(c.req);
  for (Request* r : reqs)
    finish(r, {FinishType::abort, {}, {}, fmt::format("engine error: {}", message)});
}

bool Engine::process_row(Request* r, Job& job, const SampleResult& s, bool pending) {
  if (pending) {
    GYRE_CHECK(!r->output.empty(), "request {}: no placeholder for its pending token", r->rid);
    r->output.back() = s.token;  // the look-ahead's placeholder (engine_look_ahead.cc)
  } else {
    r->output.push_back(s.token);
  }
  job.logprobs.push_back(s.logprob);
  if (job.req.top_logprobs_num > 0) job.top.push_back(s.top_logprobs);
  const SamplingParams& sp = job.req.sampling;
  FinishReason reason;
  if (is_stop_token(s.token, sp, eos_ids_)) {
    reason.type = FinishType::stop;
    reason.matched_token = s.token;
    // SGLang keeps the stop token's text only with no_stop_trim.
    if (sp.no_stop_trim && job.detok) job.stop.feed(job.detok->push(s.token));
  } else {
    if (job.detok && job.stop.feed(job.detok->push(s.token))) {
      reason.type = FinishType::stop;
      reason.matched_str = *job.stop.matched();
    } else if (int64_t(r->output.size()) >= sp.max_new_tokens ||
               r->total_len() >= cfg_.context_len) {
      reason.type = FinishType::length;
    }
  }
  if (reason.type != FinishType::none) {
    finish(r, reason);
    return true;
  }
  stream(r, job, false);
  return false;
}

void Engine::stream(Request* r, Job& job, bool final) {
  if (!job.req.stream || !job.cb.on_chunk) return;
  size_t n = r->output.size();
  if (!final && n - job.streamed_ids < size_t(cfg_.stream_interval)) return;
  TokenChunk c;
  c.rid = r->rid;
  c.output_ids.assign(r->output.begin() + long(job.streamed_ids), r->output.end());
  c.output_logprobs.assign(job.logprobs.begin() + long(job.streamed_ids), job.logprobs.end());
  if (!job.top.empty())
    c.output_top_logprobs.assign(job.top.begin() + long(job.streamed_ids), job.top.end());
  c.text = job.stop.take_stream_text();
  job.streamed_ids = n;
  if (!c.output_ids.empty() || !c.text.empty()) job.cb.on_chunk(c);
}

void Engine::finish(Request* r, FinishReason reason) {
  Job& job = job_of(r);
  if (!reason.matched_str && job.detok) {
    // Flush text the detokenizer still held back; it may complete a stop string.
    if (job.stop.feed(job.detok->finish())) {
      reason.type = FinishType::stop;
      reason.matched_token.reset();
      reason.matched_str = *job.stop.matched();
    }
  }
  job.stop.flush();
  stream(r, job, true);
  finish_detached(sched_->finish(r), std::move(reason));
}

void Engine::finish_detached(std::unique_ptr<Request> r, FinishReason reason) {
  auto it = jobs_.find(r->rid);
  GYRE_CHECK(it != jobs_.end(), "no job for request {}", r->rid);
  std::unique_ptr<Job> job = std::move(it->second);
  jobs_.erase(it);
  GenerateResult res;
  res.rid = r->rid;
  res.index = job->index;
  res.output_ids = std::move(r->output);
  res.text = job->stop.text();
  res.output_logprobs = std::move(job->logprobs);
  res.output_top_logprobs = std::move(job->top);
  res.input_logprobs = std::move(job->input_logprobs);
  res.input_top_logprobs = std::move(job->input_top);
  res.finish = std::move(reason);
  res.prompt_tokens = int32_t(r->prompt.size());
  res.completion_tokens = int32_t(res.output_ids.size());
  res.cached_tokens = int32_t(r->cached_tokens);
  res.weight_version = sched_->weight_version();
  res.e2e_latency = now_seconds() - job->submit_time;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.prompt_tokens += res.prompt_tokens;
    stats_.cached_tokens += res.cached_tokens;
  }
  if (job->cb.on_done) job->cb.on_done(std::move(res));
}

void Engine::update_stats(double step_seconds, int64_t decoded) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.running = int32_t(sched_->num_running());
  stats_.queued = int32_t(sched_->num_queued());
  stats_.free_pages = pool_->num_free();
  stats_.generated_tokens += decoded;
  stats_.weight_version = sched_->weight_version();
  stats_.paused = sched_->paused();
  if (step_seconds > 0) {  // exponential moving average over recent steps
    double rate = double(decoded) / step_seconds;
    stats_.gen_tokens_per_s =
        stats_.gen_tokens_per_s == 0 ? rate : 0.9 * stats_.gen_tokens_per_s + 0.1 * rate;
  }
}

}  // namespace gyre::infer
