// Factories the train loop is assembled from. Each lives in its own file so the loop reads as the
// data flow of one RL step (DESIGN.md) and each piece can be replaced (e.g. an HTTP rollout client
// instead of the in-process engine).
#pragma once
#include <memory>

#include "gyre/infer/engine.h"
#include "gyre/infer/rollout_client.h"
#include "gyre/infer/step_channel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/rl/rollout/rollout_manager.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

// The colocated engine's configuration (KV pool sized from the rollout flags). Tensor-parallel
// followers are built from the same one: their KV geometry must equal the leader's.
infer::EngineConfig colocated_engine_config(const TrainConfig& cfg);

// The colocated engine: serves `model` itself (shared weights: sync is a version bump). With
// `followers` (a tensor-parallel `model`, tp rank 0) the engine leads the other tp ranks'
// infer::EngineFollowers over that channel.
std::shared_ptr<infer::EngineApi> make_colocated_engine(
    std::shared_ptr<model::CausalLM> model, std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
    const TrainConfig& cfg, infer::StepChannel* followers = nullptr);

// --rm-type / --custom-rm-path / --group-rm → a hook that sets Sample::reward for a finished group.
// Errors (missing label when the reward needs one, non-finite reward) name the sample.
RewardHook make_reward_hook(const TrainConfig& cfg);

}  // namespace gyre::rl
