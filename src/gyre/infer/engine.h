// Engine: the rollout engine's step loop (llama.cpp update_slots / SGLang scheduler event loop, as
// one thread): schedule -> pack one Batch of prefill chunks + decode tokens -> model forward with
// logits only for the rows that need them -> sample -> update requests -> stream / finish.
//
// Threading: the public EngineApi methods are thread-safe; they post to an inbox the engine thread
// drains between steps (so no step ever sees a half-applied change). Callbacks run on the engine
// thread and must not block or call back into blocking methods (update_weights, flush_cache).
// Without start(), the owner drives the loop inline with run_until_idle() / step() (tests,
// `gyre generate`, benchmarks).
//
// Invariants: every submitted request gets exactly one on_done (result, abort, or error); the KV
// of a request is only ever read through its own block table; weights change only between steps.
//
// Tensor parallelism (model/tensor_parallel.h): an engine over a sharded model either is driven
// inline on every tp rank with the same requests (every rank schedules identically), or is the
// *leader* of its tp group (attach_followers(), engine_leader.cc; SGLang's scheduler on tp rank 0):
// it alone schedules and samples, and broadcasts each step's plan before the forward so that the
// other ranks (EngineFollower, engine_follower.h) run the same forward in lockstep. Only a leader
// may be start()ed. While its followers are released (release_followers()) it runs no step: the tp
// group's collectives belong to its owner then (training, checkpoints).
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/infer/decode_graph.h"
#include "gyre/infer/kv_pool.h"
#include "gyre/infer/radix_cache.h"
#include "gyre/infer/sampler.h"
#include "gyre/infer/scheduler.h"
#include "gyre/infer/step_batch.h"
#include "gyre/infer/step_channel.h"
#include "gyre/infer/step_message.h"
#include "gyre/infer/types.h"
#include "gyre/infer/validate.h"

namespace gyre::model {
class CausalLM;
}
namespace gyre::tokenizer {
class Tokenizer;
}

namespace gyre::infer {

struct EngineConfig {
  int32_t page_size = 16;
  int64_t num_pages = 2048;  // KV pool size (pages of page_size tokens)
  int32_t max_running_requests = 256;
  int64_t max_num_batched_tokens = 2048;  // per-step token budget (chunked prefill size)
  bool enable_prefix_cache = true;
  bool priority_scheduling = false;
  int64_t context_len = 0;      // 0: the model's max_position_embeddings
  uint64_t random_seed = 0;     // seeds requests that bring none (SGLang --random-seed)
  int32_t stream_interval = 1;  // tokens between streamed chunks
  // SGLang's --kv-cache-dtype: "auto" (bf16 when the model computes in bf16 on the GPU, else f32),
  // "bf16" (GPU only; halves the cache and the decode attention's memory traffic) or "f32".
  std::string kv_cache_dtype = "auto";
  // SGLang's --cuda-graph-max-bs: GPU decode steps of up to this many requests replay CUDA graphs
  // (infer/decode_graph.h); 0 turns graphs off (--disable-cuda-graph). No effect on the CPU.
  int32_t cuda_graph_max_bs = 256;
  // Decode look-ahead (SGLang's overlap scheduler; off = --disable-overlap-schedule): while a
  // CUDA-graph decode step runs, the engine launches the next one with the tokens it is sampling
  // (device-side ids) before it reads them back, so the host's bookkeeping between two steps
  // (readback, stop checks, streaming, scheduling, the next upload and launch) overlaps the GPU
  // instead of idling it. Only pure decode steps of an unchanged running set that sample on the
  // device and replay a captured graph look ahead (engine_look_ahead.cc); the tokens, log-probs
  // and finish reasons are those of stepping one at a time. A request that stops at step n (a stop
  // token or string) has its row of step n + 1 computed and dropped; the other rows go on. (That
  // step's other rows ran in a batch one larger: their log-probs can differ in the last bits where
  // the kernels round a row differently in another batch size.)
  // No effect on the CPU unless decode_look_ahead_eager.
  bool decode_look_ahead = true;
  // Test hook: with decode_look_ahead, a CPU engine looks ahead too, through eager forwards and
  // the host sampler. A CPU step runs synchronously, so nothing overlaps and nothing is gained;
  // the burst's bookkeeping (placeholder tokens, dropped rows, the live rows' ids, when a burst
  // may go on) is the GPU's, so the CPU tests can check it against stepping one at a time on
  // every build (tests/unit/infer/decode_look_ahead_test.cc; the GPU tests cover the graphs).
  bool decode_look_ahead_eager = false;
};

// EngineConfig::kv_cache_dtype -> the KV cache's dtype for `model` (SGLang's --kv-cache-dtype);
// invalid_argument naming the value when it does not fit the model's device or head_dim.
DType resolve_kv_cache_dtype(const std::string& name, const model::CausalLM& model);

class Engine : public EngineApi {
 public:
  // `tokenizer` may be null (token-only mode: no text, stop strings rejected).
  Engine(model::CausalLM& model, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
         EngineConfig cfg);
  ~Engine() override;  // stops the thread; outstanding requests finish as aborted

  void start();  // launches the engine thread
  // Joins the engine thread; a leader whose followers are engaged also tells them to stop (they
  // return from run()), so no follower waits for a leader that is gone.
  void stop();

  // ---- Tensor-parallel leader (engine_leader.cc). `followers` spans the model's tp group with
  // this engine on rank 0; call before start() and before the first step. `engaged`: the followers
  // are in EngineFollower::run() from now on; otherwise they start released (engage_followers()
  // once they are). Weights that change the shards change on every rank while the followers are
  // released (update_weights() on the leader, the shards directly on the followers). A started
  // leader keeps engaged followers alive while idle (an idle message every
  // kFollowerKeepaliveSeconds); an inline-driven one sends only when it steps or is told to.
  void attach_followers(StepChannel& followers, bool engaged = true);
  // Blocks until the engine is between steps, then returns the followers from run(); no step runs
  // (requests wait) until engage_followers(). Throws when the followers were lost (the channel
  // failed), naming why.
  void release_followers();
  // The followers are (about to be) back in run(): steps may run again.
  void engage_followers();
  bool has_followers() const { return followers_ != nullptr; }

  // EngineApi
  void submit(GenerateRequest req, RequestCallbacks cb) override;
  void abort(const std::string& rid) override;
  void abort_all() override;
  void pause() override;
  void resume() override;
  bool flush_cache() override;
  EngineStats stats() const override;
  // Runs `apply` between steps, then bumps the weight version (the radix cache's KV is stale).
  // GPU: the bf16 weight copies and the captured decode graphs survive a sync whose `apply` keeps
  // every parameter in its storage (same tensors before and after, each copy's source one of
  // them): the copies are re-cast in place in one launch (Bf16WeightCache::refresh), or not at all
  // when the trainer's update already wrote them (AdamW's kernel, or under data parallelism the
  // DP optimizer's final unflatten: share_bf16_weight_copies; the cache's fresh mark), and the
  // graphs replay the new values at the same addresses. Parameters replaced by new storage (or an
  // `apply` that throws) drop both, as before. Work the calling thread enqueued on its stream
  // before the call (a train step) is ordered before anything the engine runs after it (a
  // StreamFence, on the device).
  int64_t update_weights(const std::function<void()>& apply) override;
  // What update_weights() did with the bf16 copies so far (engine-thread state: read when no
  // step runs): `fresh` syncs only bumped the version (the copies were written by the trainer),
  // `refreshed` re-cast them in place, `dropped` cleared them and the graphs.
  struct WeightSyncCounts {
    int64_t fresh = 0, refreshed = 0, dropped = 0;
  };
  WeightSyncCounts weight_sync_counts() const { return sync_counts_; }
  // The bf16 weight copies of GPU decode (for a trainer that writes them in its update, and
  // tests). Engine-thread state, like the weights: touch it only while no step runs.
  ops::Bf16WeightCache& weight_cache() { return weight_cache_; }
  int64_t weight_version() const override { return weight_version_.load(); }
  // CUDA graphs captured for decode steps so far (0 on the CPU or with cuda_graph_max_bs = 0).
  // Engine-thread state: read it when no step runs (e.g. after generate()).
  int64_t num_cuda_graphs() const { return graphs_ ? graphs_->num_graphs() : 0; }

  // Inline driving (only when not started): processes the inbox and runs one step; returns false
  // when there was nothing to run.
  bool step();
  void run_until_idle();
  // Blocking convenience: submits all, drives (inline or via the thread) until all are done.
  std::vector<GenerateResult> generate(std::vector<GenerateRequest> reqs);

  // Internals exposed for tests and benchmarks (engine thread / inline mode only).
  Scheduler& scheduler() { return *sched_; }
  const EngineConfig& config() const { return cfg_; }
  int64_t vocab_size() const { return vocab_; }

 public:
  struct Job;  // engine-private per-request state (engine_job.h)

 private:
  struct InboxItem {
    std::function<void()> fn;
  };
  // A leader with engaged followers sends them an idle message after this long without one.
  static constexpr double kFollowerKeepaliveSeconds = 2.0;
  void stop_thread();
  void post(std::function<void()> fn);
  void drain_inbox();
  // Runs `fn` on the engine thread between steps and waits for it (rethrowing what it throws);
  // inline after the queued tasks when the thread is not started (engine_leader.cc).
  void run_on_engine_thread(const std::function<void()>& fn);
  void loop();
  void admit(GenerateRequest req, RequestCallbacks cb, int32_t index, const std::string& base,
             double submit_time);
  void reject(const GenerateRequest& req, RequestCallbacks& cb, int32_t index,
              const std::string& error);
  void run_step();
  void fail_plan(const std::string& message);
  // Appends the sampled token (or, `pending`, fills the placeholder the look-ahead appended for
  // it), records its log-prob, then finishes or streams the request. Returns whether it finished
  // (the Request is gone then).
  bool process_row(Request* r, Job& job, const SampleResult& s, bool pending = false);
  bool check_finish(Request* r, Job& job, int32_t token);
  void finish(Request* r, FinishReason reason);
  void finish_detached(std::unique_ptr<Request> r, FinishReason reason);
  void stream(Request* r, Job& job, bool final);
  GenerateResult make_result(Request* r, Job& job);
  void do_abort(const std::string& rid);
  void update_stats(double step_seconds, int64_t decoded);
  // Whether a step may run now: work to do, not paused, and (a leader) its followers engaged.
  bool can_step() const;
  // Leader: broadcasts one message to the followers (engine thread, or the inline caller). A
  // failed channel marks the followers lost (every later step fails fast with the reason) and
  // rethrows.
  // `logits_rows`: a forward message's rows (the step's batch_ is the rest of the plan).
  void send_to_followers(StepOp op, std::string_view text = {},
                         std::span<const int32_t> logits_rows = {});
  void stop_followers(const std::string& why);  // sends stop if engaged; never throws
  void keep_followers_alive();                  // idle message when nothing was sent for a while
  // Samples every logits row on the device (GPU logits; greedy, temperature, min-p, top-k, top-p);
  // empty when the batch needs the host sampler (engine_step.cc says which cases).
  std::vector<SampleResult> sample_on_device(const Tensor& logits) const;
  // sample_on_device's parts. DeviceSampling: one step's per-row parameters, filled by
  // device_sampling() for the rows' requests (in row order), false when a row needs the host
  // sampler; launch_device_sampling() enqueues the samplers and the chosen tokens' log-probs and
  // returns them as one i32 [2R] device tensor (ids, then the f32 log-probs' bits), read back in
  // one copy; unpack_samples() decodes the host copy.
  struct DeviceSampling {
    std::vector<const Request*> rows;  // the rows' requests (the CPU's host sampler reads them)
    std::vector<float> temps, top_ps;
    std::vector<int32_t> top_ks;
    std::vector<int64_t> seeds, steps;
    float min_p = 0, lp_temp = 0;
    bool filtered = false;  // some row has top-k or top-p
  };
  bool device_sampling(const std::vector<const Request*>& rows, int64_t vocab,
                       DeviceSampling& ds) const;
  Tensor launch_device_sampling(const Tensor& logits, const DeviceSampling& ds) const;
  static std::vector<SampleResult> unpack_samples(const int32_t* host, int64_t rows);

  // ---- Decode look-ahead (engine_look_ahead.cc; EngineConfig::decode_look_ahead)
  // Runs the decode step `reqs` (already launched: its sampled ids and log-probs in `results`,
  // its plan committed) and, while each step's successor is predictable, launches the successor
  // before reading the step's tokens back. Returns once every launched step was read back and
  // processed: between run_step() calls no step is in flight.
  void run_decode_burst(std::vector<Request*> reqs, Tensor results);
  // Whether the step after the running decode step `reqs` can be launched now, before its tokens
  // are known: the same requests, none finishing by length, pages and budget for one more token
  // each, no admission, nothing in the inbox, a captured graph for the batch.
  bool can_look_ahead(const std::vector<Request*>& reqs) const;
  // Plans, uploads and launches the step after `reqs` (placeholders already appended) with the
  // ids in `ids` (device, [B]), commits it and launches its sampling; the results tensor.
  Tensor launch_ahead(const std::vector<Request*>& reqs, const Tensor& ids,
                      const DeviceSampling& ds);
  // EngineConfig::decode_look_ahead_eager on a CPU model, and plan_ (just run) a pure decode step:
  // one sampled token per request, rows in chunk order — a burst may start from it.
  bool eager_look_ahead_step() const;
  // The CPU's stand-in for a decode graph's replay: an eager forward of `batch` (a pure decode
  // step) with the ids in `ids` (CPU i32 [B]); the logits.
  Tensor eager_decode_forward(StepBatch& batch, const Tensor& ids);
  // The CPU's stand-in for launch_device_sampling: the host Sampler over ds.rows, packed alike.
  Tensor sample_rows_on_host(const Tensor& logits, const DeviceSampling& ds) const;
  StepPlan ahead_plan_;
  StepBatch ahead_batch_;
  ops::AsyncReadback readback_[2];  // a burst's step n and n + 1

  model::CausalLM& model_;
  // bf16 weights for GPU decode; refreshed in place (or cleared) by update_weights
  ops::Bf16WeightCache weight_cache_;
  // CUDA-graph decode steps (GPU only); kept while the copies keep their addresses, else cleared
  std::unique_ptr<DecodeGraphs> graphs_;
  WeightSyncCounts sync_counts_;
  std::shared_ptr<const tokenizer::Tokenizer> tok_;
  EngineConfig cfg_;
  int64_t vocab_ = 0;
  RequestLimits limits_;
  std::vector<int32_t> eos_ids_;

  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<KvStorage> kv_;
  std::unique_ptr<RadixCache> cache_;
  std::unique_ptr<Scheduler> sched_;
  std::unordered_map<std::string, std::unique_ptr<Job>> jobs_;
  StepPlan plan_;
  StepBatch batch_;
  // Tensor-parallel leader state (engine thread, or the inline caller).
  enum class Followers { none, engaged, released, lost };
  StepChannel* followers_ = nullptr;
  Followers follower_state_ = Followers::none;
  std::string followers_error_;  // why they were lost
  uint64_t follower_seq_ = 0;    // messages sent (StepMessage::seq)
  double follower_last_send_ = 0;
  std::vector<uint8_t> follower_wire_;
  uint64_t seed_counter_ = 0, rid_counter_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<InboxItem> inbox_;
  std::thread thread_;
  bool started_ = false, stopping_ = false;
  std::atomic<int64_t> weight_version_{0};
  EngineStats stats_;  // guarded by mu_
};

}  // namespace gyre::infer
