// The colocated rollout engine of `gyre train`: an infer::Engine over the trainer's own CausalLM
// (under tensor parallelism: rank 0's shard, leading the EngineFollowers of the other tp ranks).
#include "gyre/core/error.h"
#include "gyre/infer/engine.h"
#include "gyre/rl/loop/components.h"

namespace gyre::rl {

infer::EngineConfig colocated_engine_config(const TrainConfig& cfg) {
  infer::EngineConfig ec;
  ec.page_size = int32_t(cfg.page_size);
  ec.max_running_requests = int32_t(cfg.max_running_requests);
  ec.max_num_batched_tokens = cfg.chunked_prefill_size;
  ec.context_len = cfg.rollout_max_context_len.value_or(0);
  ec.random_seed = uint64_t(cfg.seed);
  ec.kv_cache_dtype = cfg.kv_cache_dtype;
  ec.cuda_graph_max_bs = cfg.disable_cuda_graph ? 0 : int32_t(cfg.cuda_graph_max_bs);
  ec.decode_look_ahead = !cfg.disable_overlap_schedule;
  // KV capacity: --max-total-tokens, else room for every running request at full length
  // (prompt budget + response budget), which is what a rollout can hold at once.
  int64_t tokens = cfg.max_total_tokens;
  if (tokens <= 0) {
    const int64_t prompt_budget = cfg.rollout_max_prompt_len.value_or(256);
    const int64_t running = std::min<int64_t>(
        cfg.max_running_requests, cfg.rollout_batch_size * cfg.n_samples_per_prompt * 2);
    tokens = std::max<int64_t>(running, 1) * (prompt_budget + cfg.rollout_max_response_len);
  }
  ec.num_pages = std::max<int64_t>(64, (tokens + ec.page_size - 1) / ec.page_size);
  return ec;
}

std::shared_ptr<infer::EngineApi> make_colocated_engine(
    std::shared_ptr<model::CausalLM> model, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
    const TrainConfig& cfg, infer::StepChannel* followers) {
  // The engine holds a reference to the model: the deleter keeps the model alive as long as the
  // engine, and stops the engine thread before either goes away.
  auto* engine = new infer::Engine(*model, std::move(tokenizer), colocated_engine_config(cfg));
  // Released until the loop's first generation phase engages them: until then the other tp ranks
  // use their tp group for other collectives, which an idle keep-alive would cut across.
  if (followers) engine->attach_followers(*followers, /*engaged=*/false);
  engine->start();
  return std::shared_ptr<infer::EngineApi>(engine, [model](infer::EngineApi* e) {
    delete e;  // ~Engine stops the thread (outstanding requests finish as aborted)
  });
}

}  // namespace gyre::rl
