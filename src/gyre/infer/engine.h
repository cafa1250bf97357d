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
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
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
};

class Engine : public EngineApi {
 public:
  // `tokenizer` may be null (token-only mode: no text, stop strings rejected).
  Engine(model::CausalLM& model, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
         EngineConfig cfg);
  ~Engine() override;  // stops the thread; outstanding requests finish as aborted

  void start();  // launches the engine thread
  void stop();

  // EngineApi
  void submit(GenerateRequest req, RequestCallbacks cb) override;
  void abort(const std::string& rid) override;
  void abort_all() override;
  void pause() override;
  void resume() override;
  bool flush_cache() override;
  EngineStats stats() const override;
  int64_t update_weights(const std::function<void()>& apply) override;
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
  void post(std::function<void()> fn);
  void drain_inbox();
  void loop();
  void admit(GenerateRequest req, RequestCallbacks cb, int32_t index, const std::string& base,
             double submit_time);
  void reject(const GenerateRequest& req, RequestCallbacks& cb, int32_t index,
              const std::string& error);
  void run_step();
  void fail_plan(const std::string& message);
  void process_row(Request* r, Job& job, const SampleResult& s);
  bool check_finish(Request* r, Job& job, int32_t token);
  void finish(Request* r, FinishReason reason);
  void finish_detached(std::unique_ptr<Request> r, FinishReason reason);
  void stream(Request* r, Job& job, bool final);
  GenerateResult make_result(Request* r, Job& job);
  void do_abort(const std::string& rid);
  void update_stats(double step_seconds, int64_t decoded);
  // Samples every logits row on the device (GPU logits; greedy, temperature, min-p, top-k, top-p);
  // empty when the batch needs the host sampler (engine_step.cc says which cases).
  std::vector<SampleResult> sample_on_device(const Tensor& logits) const;

  model::CausalLM& model_;
  ops::Bf16WeightCache weight_cache_;     // bf16 weights for GPU decode; cleared by update_weights
  std::unique_ptr<DecodeGraphs> graphs_;  // CUDA-graph decode steps (GPU only); cleared likewise
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
