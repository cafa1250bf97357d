// The rollout side of `gyre train` (train_loop.cc): the rollout client (the colocated engine over
// the actor itself, or remote engines fed by a weight pusher), the reward hook, the rollout
// manager, and under tensor parallelism the leader / follower roles of replica 0's tp ranks.
//
// Tensor parallelism: the colocated engine runs the sharded actor on replica 0's tp ranks (SGLang's
// design): rank 0's engine schedules, samples and broadcasts every step's plan; the other tp ranks
// of replica 0 follow (infer::EngineFollower) with their shards and KV heads. The weights are the
// actor's own on every rank, so a weight sync is a version bump, as in one process. Generation
// takes every tp rank of replica 0 only inside generation_phase(); between phases their tp group is
// free for training and checkpoints.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/infer/rollout_client.h"
#include "gyre/infer/step_channel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/loop/distributed_run.h"
#include "gyre/rl/loop/remote_rollout.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/rl/loop/train_models.h"
#include "gyre/rl/rollout/generate_function.h"
#include "gyre/rl/rollout/rollout_manager.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

// Reward calls run on the rollout workers, concurrently with generation; their time is summed over
// calls (wall and the calling thread's CPU) so the step breakdown can show the reward share of the
// rollout phase (perf/reward_time, perf/reward_cpu_util).
struct RewardClock {
  std::mutex mu;
  double wall = 0, cpu = 0;
  void take(std::map<std::string, double>& m);  // writes the metrics and starts over
};

// What a rank rolls out with. Rank 0 (the main rank) has a client and, unless SFT or
// --debug-train-only, a manager; a tp follower rank of replica 0 has only `follower`; other ranks
// have nothing (they train on rank 0's broadcast samples).
struct TrainRollout {
  // Member order is destruction order reversed: the channel outlives the engine, whose destructor
  // may still tell the followers to stop; the engine outlives the client and manager using it.
  std::unique_ptr<infer::StepChannel> tp_channel;  // TP, replica 0: the leader's link to followers
  std::shared_ptr<infer::EngineApi> engine;        // colocated engine (rank 0)
  std::unique_ptr<infer::RolloutClient> client;    // in-process or HTTP (rank 0)
  RewardHook reward;
  std::shared_ptr<RewardClock> reward_clock = std::make_shared<RewardClock>();
  std::unique_ptr<RemoteWeightPusher> pusher;  // remote engines: disk or NCCL (rank 0 only)
  // Remote engines get the weights by push_weights_to_remote, which every rank calls (set on all
  // ranks, unlike `pusher`). Under TP the other tp ranks of replica 0 need nothing built here to
  // take part: rank 0 announces the transport (and the NCCL bucket plan's inputs) at each push.
  bool remote = false;
  std::unique_ptr<infer::EngineFollower> follower;  // TP: replica 0's tp ranks other than 0
  infer::Engine* leader = nullptr;                  // TP: rank 0's engine (owned by `engine`)
  GenerateContext gctx;
  std::unique_ptr<RolloutManager> manager;

  // Runs `work` (a rollout or an evaluation driven by rank 0) as one generation phase. Under TP
  // it takes every tp rank of replica 0: rank 0's engine engages its followers for `work` and
  // releases them afterwards; a follower rank follows the leader's steps instead of running
  // `work`. Every rank reaches the same phases in the same order (the callers' conditions depend
  // only on flags); a follower whose leader stopped mid-phase (an error on rank 0) fails here
  // with the leader's reason instead of waiting. Without TP it just runs `work`.
  void generation_phase(const std::function<void()>& work);
};

// Colocated GPU rollout: hands the engine's bf16 weight copies (the leader's, or this rank's
// follower's under TP) to the optimizer that steps the actor — the actor's AdamW, which writes
// them in its update kernel (train::AdamW::set_bf16_copies), or under data parallelism
// dist::DataParallelOptimizer, which writes them in the final unflatten of the all-gathered
// parameters (ZeRO-1; all_reduce: in its inner AdamW's kernel) — so the weight sync is a pure
// version bump. Nothing to do for remote engines, CPU actors, or a DP rank without an engine (it
// attaches nothing; its engine-less replica needs no copies). Call once both sides exist (after
// make_train_rollout). Returns whether the copies are now written by the optimizer.
bool share_bf16_weight_copies(TrainRollout& rollout, TrainModels& models);

// Builds this rank's rollout side. `resume_weight_version`: a resumed run's weight version, which
// the fresh client is bumped to before the first rollout (colocated syncs are version bumps).
TrainRollout make_train_rollout(const TrainConfig& cfg, const TrainDistributed& distributed,
                                std::shared_ptr<model::CausalLM> actor,
                                std::shared_ptr<const tokenizer::Tokenizer> tok,
                                int64_t resume_weight_version);

}  // namespace gyre::rl
