// Engine: construction, thread loop, inbox, the thread-safe EngineApi surface and request
// admission. The step itself (forward, sampling, finishing) is in engine_step.cc.
#include "gyre/infer/engine.h"

#include <chrono>
#include <exception>
#include <future>
#include <tuple>

#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine_job.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

DType resolve_kv_cache_dtype(const std::string& name, const model::CausalLM& m) {
  const bool gpu = m.device() == Device::cuda;
  const int64_t D = m.config().head_dim;
  if (name == "auto")
    return gpu && m.precision() == model::Precision::bf16 &&
                   ops::paged_kv_dtype_supported(DType::bf16, Device::cuda, D)
               ? DType::bf16
               : DType::f32;
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") {
    if (!gpu)
      GYRE_THROW(invalid_argument,
                 "engine: kv_cache_dtype bf16 needs the model on a CUDA device (the CPU engine's "
                 "cache is f32); use auto or f32");
    if (!ops::paged_kv_dtype_supported(DType::bf16, Device::cuda, D))
      GYRE_THROW(invalid_argument,
                 "engine: kv_cache_dtype bf16 needs head_dim 64 or 128, the model has {}; use f32",
                 D);
    return DType::bf16;
  }
  GYRE_THROW(invalid_argument,
             "engine: kv_cache_dtype '{}' is not supported; use auto, bf16 or f32", name);
}

Engine::Engine(model::CausalLM& model, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
               EngineConfig cfg)
    : model_(model), tok_(std::move(tokenizer)), cfg_(cfg) {
  const model::ModelConfig& mc = model_.config();
  vocab_ = mc.vocab_size;
  if (cfg_.context_len <= 0) cfg_.context_len = mc.max_position_embeddings;
  if (cfg_.context_len <= 0)
    GYRE_THROW(invalid_argument,
               "engine: context length unknown (config.json has no "
               "max_position_embeddings); pass a context length");
  if (cfg_.stream_interval < 1) cfg_.stream_interval = 1;
  if (cfg_.cuda_graph_max_bs < 0)
    GYRE_THROW(invalid_argument,
               "engine: cuda_graph_max_bs is {}; use a batch size >= 1, or 0 to decode without "
               "CUDA graphs",
               cfg_.cuda_graph_max_bs);
  eos_ids_ = mc.eos_token_ids;
  if (tok_ && tok_->eos_token_id() &&
      std::find(eos_ids_.begin(), eos_ids_.end(), *tok_->eos_token_id()) == eos_ids_.end())
    eos_ids_.push_back(*tok_->eos_token_id());
  pool_ = std::make_unique<PagePool>(cfg_.num_pages, cfg_.page_size);
  // Under tensor parallelism this rank caches only its own kv heads (the model's local count);
  // every tp rank runs the same forward steps in lockstep (the same engine driven inline on every
  // rank, or this engine as the leader of EngineFollowers).
  const model::TpLayout* tp = model_.tensor_parallel();
  const int64_t kv_heads = tp ? tp->local.num_key_value_heads : mc.num_key_value_heads;
  // The KV cache lives with the weights: a model on the GPU decodes against a GPU cache.
  kv_ = std::make_unique<KvStorage>(mc.num_hidden_layers, cfg_.num_pages, cfg_.page_size, kv_heads,
                                    mc.head_dim, model_.device(),
                                    resolve_kv_cache_dtype(cfg_.kv_cache_dtype, model_));
  // MoE layers copy their E+1 expert offsets to the host (a sync, not capturable): those models
  // decode eagerly. So does a tensor-parallel model whose collectives wait on the host (MPI);
  // over NCCL they are stream-ordered device work and the graphs capture them (decode_graph.h).
  const bool capturable = !tp || (tp->comm && tp->comm->graph_capturable());
  if (model_.device() == Device::cuda && capturable && cfg_.cuda_graph_max_bs > 0 &&
      mc.num_experts == 0)
    graphs_ = std::make_unique<DecodeGraphs>(model_, *kv_, cfg_.page_size, cfg_.context_len,
                                             cfg_.cuda_graph_max_bs);
  cache_ = std::make_unique<RadixCache>(*pool_);
  SchedulerConfig sc;
  sc.max_running_requests = cfg_.max_running_requests;
  sc.max_num_batched_tokens = cfg_.max_num_batched_tokens;
  sc.priority = cfg_.priority_scheduling;
  sc.enable_prefix_cache = cfg_.enable_prefix_cache;
  sched_ = std::make_unique<Scheduler>(*pool_, cache_.get(), sc);
  limits_ = {vocab_, cfg_.context_len, cfg_.num_pages * cfg_.page_size};
  stats_.total_pages = cfg_.num_pages;
  stats_.free_pages = cfg_.num_pages;
  stats_.page_size = cfg_.page_size;
}

Engine::~Engine() {
  stop_thread();
  // Destroyed by an error on this rank (e.g. gyre train failing on rank 0): the followers learn it
  // now instead of at their channel's timeout.
  stop_followers(
      std::uncaught_exceptions() > 0
          ? "the leader's engine was destroyed by an error on its rank (its log names it)"
          : "the leader's engine was destroyed");
  drain_inbox();
  for (auto& r : sched_->abort_all())
    finish_detached(std::move(r), {FinishType::abort, {}, {}, "engine shut down"});
}

void Engine::start() {
  // The tp ranks' engines must take identical steps (the model's collectives run inside forward);
  // a thread fed from an inbox batches requests by arrival time, which differs between ranks.
  const model::TpLayout* tp = model_.tensor_parallel();
  if (tp && !followers_)
    GYRE_THROW(unsupported,
               "engine: the model is tensor-parallel ({} ranks); either attach_followers() (this "
               "engine schedules, EngineFollowers on the other tp ranks run its steps) or drive "
               "the engine inline (generate() / step() without start()) on every tp rank with the "
               "same requests, so all ranks schedule identical steps",
               tp->size);
  std::lock_guard<std::mutex> lk(mu_);
  if (started_) return;
  started_ = true;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  stop_thread();
  stop_followers("the leader's engine stopped (Engine::stop)");
}

void Engine::stop_thread() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!started_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  std::lock_guard<std::mutex> lk(mu_);
  started_ = false;
}

void Engine::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    inbox_.push_back({std::move(fn)});
  }
  cv_.notify_all();
}

void Engine::drain_inbox() {
  std::deque<InboxItem> items;
  {
    std::lock_guard<std::mutex> lk(mu_);
    items.swap(inbox_);
  }
  for (auto& it : items) it.fn();
  // Aborts, flushes and pauses change the page counts and flags stats() reports; refresh them now
  // rather than at the next step, which may be far off (nothing left to run, or paused).
  if (!items.empty()) update_stats(0, 0);
}

bool Engine::can_step() const {
  return !sched_->paused() && sched_->num_running() + sched_->num_queued() > 0 &&
         follower_state_ != Followers::released;
}

void Engine::loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto ready = [&] { return stopping_ || !inbox_.empty() || can_step(); };
      if (follower_state_ == Followers::engaged) {
        // Engaged followers wait in a broadcast bounded by their channel's timeout: wake up in
        // time to tell them the leader is alive when there is nothing to run.
        const double left = follower_last_send_ + kFollowerKeepaliveSeconds - now_seconds();
        cv_.wait_for(lk, std::chrono::duration<double>(std::max(0.0, left)), ready);
      } else {
        cv_.wait(lk, ready);
      }
      if (stopping_) return;
    }
    drain_inbox();
    if (can_step()) run_step();
    keep_followers_alive();
  }
}

bool Engine::step() {
  GYRE_CHECK(!started_, "Engine::step() is for inline driving; the engine thread is running");
  drain_inbox();
  if (!can_step()) return false;
  run_step();
  return true;
}

void Engine::run_until_idle() {
  while (step()) {
  }
}

// ---- EngineApi --------------------------------------------------------------------------------

void Engine::submit(GenerateRequest req, RequestCallbacks cb) {
  double t = now_seconds();
  post([this, req = std::move(req), cb = std::move(cb), t]() mutable {
    std::string base = req.rid.empty() ? fmt::format("req-{}", rid_counter_++) : req.rid;
    int32_t n = req.sampling.n;
    if (n < 1) {
      reject(req, cb, 0, fmt::format("sampling_params.n = {} must be >= 1", n));
      return;
    }
    for (int32_t i = 0; i < n; ++i) {
      GenerateRequest r = req;
      r.rid = n == 1 ? base : fmt::format("{}-{}", base, i);
      if (r.sampling.seed) r.sampling.seed = *r.sampling.seed + uint64_t(i);  // slime: seed + index
      admit(std::move(r), cb, i, base, t);
    }
  });
}

void Engine::reject(const GenerateRequest& req, RequestCallbacks& cb, int32_t index,
                    const std::string& error) {
  GenerateResult res;
  res.rid = req.rid;
  res.index = index;
  res.error = error;
  res.finish.type = FinishType::abort;
  res.finish.message = error;
  res.prompt_tokens = int32_t(req.input_ids.size());
  res.weight_version = sched_->weight_version();
  if (cb.on_done) cb.on_done(std::move(res));
}

void Engine::admit(GenerateRequest req, RequestCallbacks cb, int32_t index, const std::string& base,
                   double submit_time) {
  std::string err = validate_request(req, limits_);
  if (err.empty() && !tok_ && !req.sampling.stop.empty())
    err =
        "sampling_params.stop needs a tokenizer (stop strings are matched on text): start the "
        "engine with a tokenizer or use stop_token_ids";
  if (err.empty() && (jobs_.count(req.rid) || sched_->find(req.rid)))
    err = fmt::format("rid '{}' is already in use by a running request; rids must be unique",
                      req.rid);
  if (!err.empty()) {
    log::debug("rejected request {}: {}", req.rid, err);
    reject(req, cb, index, err);
    return;
  }
  auto job = std::make_unique<Job>(req.sampling.stop, req.sampling.no_stop_trim);
  job->base_rid = base;
  job->index = index;
  job->submit_time = submit_time;
  job->seed = req.sampling.seed ? *req.sampling.seed
                                : splitmix64(cfg_.random_seed ^ splitmix64(seed_counter_++));
  job->stop_ids = req.sampling.stop_token_ids;
  if (!req.sampling.ignore_eos)
    job->stop_ids.insert(job->stop_ids.end(), eos_ids_.begin(), eos_ids_.end());
  if (tok_)
    job->detok =
        std::make_unique<tokenizer::IncrementalDetokenizer>(tok_, req.sampling.skip_special_tokens);
  if (req.logprob_start_len >= 0) {
    size_t n = req.input_ids.size() - size_t(req.logprob_start_len);
    job->input_logprobs.assign(n, std::numeric_limits<float>::quiet_NaN());
    if (req.top_logprobs_num > 0) job->input_top.assign(n, {});
  }
  auto r = std::make_unique<Request>();
  r->rid = req.rid;
  r->prompt = req.input_ids;
  r->priority = req.priority;
  r->logprob_start_len = req.logprob_start_len;
  r->user = job.get();
  job->req = std::move(req);
  job->cb = std::move(cb);
  std::string rid = r->rid;
  jobs_.emplace(rid, std::move(job));
  sched_->add(std::move(r));
}

void Engine::do_abort(const std::string& rid) {
  std::vector<std::string> targets;
  for (const auto& [id, job] : jobs_)
    if (id == rid || job->base_rid == rid) targets.push_back(id);
  for (const auto& id : targets)
    if (Request* r = sched_->find(id)) finish(r, {FinishType::abort, {}, {}, "aborted by request"});
}

void Engine::abort(const std::string& rid) {
  post([this, rid] { do_abort(rid); });
}

void Engine::abort_all() {
  post([this] {
    for (auto& r : sched_->abort_all())
      finish_detached(std::move(r), {FinishType::abort, {}, {}, "aborted (abort_all)"});
  });
}

void Engine::pause() {
  post([this] { sched_->pause(); });
}

void Engine::resume() {
  post([this] { sched_->resume(); });
}

bool Engine::flush_cache() {
  if (!started_) {
    drain_inbox();
    return sched_->flush_cache();
  }
  auto p = std::make_shared<std::promise<bool>>();
  auto f = p->get_future();
  post([this, p] { p->set_value(sched_->flush_cache()); });
  return f.get();
}

namespace {

// The model's parameter tensors (what a captured decode graph and the bf16 copies baked the
// addresses of).
std::vector<Tensor> parameter_tensors(const model::CausalLM& m) {
  std::vector<Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.tensor);
  return out;
}

// Where each parameter lives: storage, first byte, element count, dtype. Not handles, so a
// parameter that apply() replaces can be freed while apply() runs.
using ParamKey = std::tuple<const Storage*, const void*, int64_t, DType>;
std::vector<ParamKey> parameter_keys(const std::vector<Tensor>& ps) {
  std::vector<ParamKey> out;
  for (const Tensor& t : ps) out.emplace_back(t.storage().get(), t.address(), t.numel(), t.dtype());
  return out;
}

}  // namespace

int64_t Engine::update_weights(const std::function<void()>& apply) {
  // Every thread has its own CUDA stream: the caller's work so far (e.g. the AdamW step that wrote
  // the shared weights and their bf16 copies) runs before anything the engine's stream runs after
  // this call — ordered on the device, the host does not wait.
  auto fence = std::make_shared<ops::StreamFence>();
  if (model_.device() == Device::cuda) fence->record();
  // And back: a refresh runs on the engine's stream and reads the f32 weights, so the caller's
  // later work (the next AdamW step writes them and the copies) waits for it on the device.
  auto back = std::make_shared<ops::StreamFence>();
  auto run = [this, &apply, fence, back] {
    fence->wait();
    // Invariant: the bf16 copies and the decode graphs stay only when apply() kept every
    // parameter in its storage (same tensors before and after, so every address a graph baked in
    // is still the weight's) and every copy's source is one of them; then the values changed in
    // place and the copies are brought up to date at the same addresses. Anything else (tensors
    // replaced, e.g. a reload into new storage, or an apply() that throws half-way) drops both,
    // and the next forward re-casts and re-captures.
    auto drop = [this] {
      weight_cache_.clear();
      if (graphs_) graphs_->clear();
      ++sync_counts_.dropped;
    };
    const std::vector<ParamKey> before = parameter_keys(parameter_tensors(model_));
    try {
      apply();
    } catch (...) {
      drop();
      throw;
    }
    const std::vector<Tensor> after = parameter_tensors(model_);
    if (before == parameter_keys(after) && weight_cache_.sources_within(after)) {
      // Fresh: the trainer's AdamW wrote every copy in its update (train::AdamW::set_bf16_copies)
      // and nothing changed a source since (the mark is the writer's promise; apply() must not
      // write weights on an engine whose copies a trainer writes — it would have to mark_stale()).
      if (weight_cache_.take_fresh()) {
        ++sync_counts_.fresh;
      } else {
        weight_cache_.refresh();  // one launch on the engine's stream, no host wait
        back->record();
        ++sync_counts_.refreshed;
      }
    } else {
      drop();
    }
    sched_->bump_weight_version();  // invalidates the radix cache: its KV is stale
    weight_version_ = sched_->weight_version();
    return weight_version_.load();
  };
  if (!started_) {
    drain_inbox();
    return run();
  }
  auto p = std::make_shared<std::promise<int64_t>>();
  auto f = p->get_future();
  post([p, &run] {
    try {
      p->set_value(run());
    } catch (...) {
      p->set_exception(std::current_exception());
    }
  });
  const int64_t version = f.get();
  back->wait();  // no-op unless a refresh was recorded on the engine's stream
  return version;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

std::vector<GenerateResult> Engine::generate(std::vector<GenerateRequest> reqs) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::vector<GenerateResult>> out;
    int64_t pending = 0;
  };
  auto sh = std::make_shared<Shared>();
  sh->out.resize(reqs.size());
  for (auto& r : reqs) sh->pending += std::max(1, r.sampling.n);
  for (size_t i = 0; i < reqs.size(); ++i) {
    sh->out[i].resize(size_t(std::max(1, reqs[i].sampling.n)));
    RequestCallbacks cb;
    cb.on_done = [sh, i](GenerateResult&& res) {
      std::lock_guard<std::mutex> lk(sh->mu);
      sh->out[i][size_t(res.index)] = std::move(res);
      --sh->pending;
      sh->cv.notify_all();
    };
    submit(std::move(reqs[i]), std::move(cb));
  }
  if (started_) {
    std::unique_lock<std::mutex> lk(sh->mu);
    sh->cv.wait(lk, [&] { return sh->pending == 0; });
  } else {
    run_until_idle();
    GYRE_CHECK(sh->pending == 0, "{} requests unfinished after the engine went idle (paused?)",
               sh->pending);
  }
  std::vector<GenerateResult> flat;
  for (auto& v : sh->out)
    for (auto& r : v) flat.push_back(std::move(r));
  return flat;
}

}  // namespace gyre::infer
