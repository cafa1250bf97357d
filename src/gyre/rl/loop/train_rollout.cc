// The rollout side of `gyre train` (see train_rollout.h).
#include "gyre/rl/loop/train_rollout.h"

#include <unistd.h>

#include <filesystem>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/dist/step_channel_comm.h"
#include "gyre/rl/loop/components.h"
#include "gyre/rl/trainer/phase_timer.h"

namespace gyre::rl {
namespace fs = std::filesystem;

namespace {

RewardHook timed(RewardHook hook, std::shared_ptr<RewardClock> clock) {
  if (!hook) return hook;
  return [hook = std::move(hook), clock](SampleGroup& group) {
    Timer t;
    const double cpu0 = thread_cpu_seconds();
    hook(group);
    const double wall = t.elapsed(), cpu = thread_cpu_seconds() - cpu0;
    std::lock_guard<std::mutex> lk(clock->mu);
    clock->wall += wall;
    clock->cpu += cpu;
  };
}

infer::SamplingParams rollout_sampling(const TrainConfig& cfg) {
  infer::SamplingParams p;
  p.temperature = float(cfg.rollout_temperature);
  p.top_p = float(cfg.rollout_top_p);
  p.top_k = int32_t(cfg.rollout_top_k);
  p.stop = cfg.rollout_stop;
  for (auto id : cfg.rollout_stop_token_ids) p.stop_token_ids.push_back(int32_t(id));
  p.max_new_tokens = int32_t(cfg.rollout_max_response_len);
  p.no_stop_trim = true;                                    // slime always passes no_stop_trim
  p.skip_special_tokens = cfg.rollout_skip_special_tokens;  // slime default: keep them
  return p;
}

}  // namespace

void RewardClock::take(std::map<std::string, double>& m) {
  std::lock_guard<std::mutex> lk(mu);
  m["perf/reward_time"] = wall;
  if (wall > 0) m["perf/reward_cpu_util"] = cpu / (wall * machine_cores());
  wall = cpu = 0;
}

void TrainRollout::generation_phase(const std::function<void()>& work) {
  if (follower) {
    const infer::EngineFollower::Outcome out = follower->run();
    if (out.exit == infer::EngineFollower::Exit::stopped)
      GYRE_THROW(io, "tensor-parallel rollout: rank 0's engine stopped during generation: {}",
                 out.message);
    return;
  }
  if (leader) leader->engage_followers();
  work();
  if (leader) leader->release_followers();
}

bool share_bf16_weight_copies(TrainRollout& rollout, TrainModels& models) {
  // Under data parallelism the trainer steps through dist::DataParallelOptimizer (the AdamW below
  // never steps): it writes the copies in its final unflatten of the all-gathered parameters
  // (ZeRO-1) or through its inner AdamW (all_reduce). Only a rank that holds a colocated engine
  // (or a tp follower of one) has copies to attach; the others attach nothing.
  if ((!models.dp_optimizer && !models.optimizer) || !models.actor ||
      models.actor->device() != Device::cuda)
    return false;
  std::shared_ptr<ops::Bf16WeightCache> copies;
  if (auto* engine = dynamic_cast<infer::Engine*>(rollout.engine.get()))
    // Aliasing the engine's owner: the optimizer's weak_ptr expires with the engine.
    copies = std::shared_ptr<ops::Bf16WeightCache>(rollout.engine, &engine->weight_cache());
  else if (rollout.follower)
    copies = rollout.follower->weight_cache();
  if (!copies) return false;  // remote engines, or a rank that does not roll out
  if (models.dp_optimizer)
    models.dp_optimizer->set_bf16_copies(copies);
  else
    models.optimizer->set_bf16_copies(copies);
  return true;
}

TrainRollout make_train_rollout(const TrainConfig& cfg, const TrainDistributed& distributed,
                                std::shared_ptr<model::CausalLM> actor,
                                std::shared_ptr<const tokenizer::Tokenizer> tok,
                                int64_t resume_weight_version) {
  TrainRollout r;
  const bool main_rank = distributed.main_rank();
  const bool sft = cfg.algo.loss_type == LossType::sft_loss;
  // Remote engines (--rollout-external-engine-addrs / --sglang-router-ip) or the colocated one;
  // with data parallelism only rank 0 rolls out.
  const std::vector<std::string> remote_urls = remote_engine_urls(cfg);
  const bool tp_rollout =
      distributed.tp_size() > 1 && remote_urls.empty() && !sft && !cfg.debug_train_only;
  r.remote = !remote_urls.empty() && !sft && !cfg.debug_train_only;
  if (tp_rollout && distributed.world->rank() < distributed.tp_size()) {  // replica 0
    r.tp_channel = dist::make_step_channel(*distributed.groups.tp);
    if (!main_rank)
      r.follower = std::make_unique<infer::EngineFollower>(*actor, colocated_engine_config(cfg),
                                                           *r.tp_channel);
  }
  if (!sft && !cfg.debug_train_only && main_rank) {
    if (!remote_urls.empty()) {
      r.client = make_remote_rollout_client(remote_urls);
      std::string dir = cfg.update_weight_dir;
      if (dir.empty())
        dir = cfg.save.empty()
                  ? (fs::temp_directory_path() / ("gyre_weight_sync_" + std::to_string(::getpid())))
                        .string()
                  : cfg.save + "/weight_sync";
      r.pusher = std::make_unique<RemoteWeightPusher>(dir, DType::f32);
      const std::string transport = resolve_weight_transport(cfg);
      if (transport == "nccl")
        r.pusher->use_nccl(nccl_push_options(cfg, remote_urls),
                           cfg.update_weight_transport == "nccl");
      log::info("rolling out on {}; weights reach the engines through {}", r.client->describe(),
                transport == "nccl"
                    ? "NCCL (SGLang's weight-update group; disk fallback: " + dir + ")"
                    : dir);
    } else {
      r.engine = make_colocated_engine(actor, tok, cfg, r.tp_channel.get());
      r.client = std::make_unique<infer::InProcessRolloutClient>(r.engine);
      if (tp_rollout) {
        r.leader = dynamic_cast<infer::Engine*>(r.engine.get());
        log::info(
            "tensor parallel: {} ranks; the rollout engine runs the sharded policy (rank 0 "
            "schedules and samples, tp ranks 1..{} of replica 0 follow its steps)",
            distributed.tp_size(), distributed.tp_size() - 1);
      }
    }
    r.reward = make_reward_hook(cfg);
  }
  // A resumed run continues the weight versions (rollout/weight_version, Sample::weight_versions):
  // a fresh engine counts from 0, and colocated syncs are version bumps, so bump it up to the
  // checkpoint's version before the first rollout.
  if (r.client)
    while (r.client->weight_version() < resume_weight_version) r.client->sync_weights(nullptr, "");
  r.gctx.client = r.client.get();
  r.gctx.tokenizer = tok;
  r.gctx.sampling = rollout_sampling(cfg);
  r.gctx.max_context_len = cfg.rollout_max_context_len.value_or(0);
  r.gctx.mask_offpolicy_in_partial_rollout = cfg.mask_offpolicy_in_partial_rollout;
  RolloutOptions ro;
  ro.rollout_batch_size = cfg.rollout_batch_size;
  ro.n_samples_per_prompt = cfg.n_samples_per_prompt;
  ro.over_sampling_batch_size = cfg.over_sampling_batch_size.value_or(0);
  ro.partial_rollout = cfg.partial_rollout;
  ro.concurrency = cfg.rollout_concurrency;
  ro.reward_key = cfg.reward_key;
  ro.deterministic = cfg.deterministic_inference;
  ro.rollout_seed = uint64_t(cfg.rollout_seed);
  ro.base_seed = uint64_t(cfg.seed);
  if (r.client)
    r.manager = std::make_unique<RolloutManager>(
        ro, r.gctx, load_generate_function(cfg.custom_generate_function_path),
        timed(r.reward, r.reward_clock),
        load_dynamic_filter(cfg.dynamic_sampling_filter_path, cfg.reward_key));
  return r;
}

}  // namespace gyre::rl
