// `gyre train`: the RL (and SFT) loop, colocated in one process — slime's train.py as one native
// loop. Per rollout step: data buffer -> rollout manager (engine, rewards, dynamic filter) ->
// reward post-processing -> ActorTrainer (old/ref log-probs, advantages, policy loss, AdamW) ->
// weight sync (a version bump: the engine serves the same tensors) -> metrics, eval, checkpoint.
//
// Checkpoints (--save, every --save-interval rollouts and at the end):
//   <save>/iter_<rollout:07d>/model/        HF folder (config.json, model.safetensors, tokenizer)
//   <save>/iter_<rollout:07d>/optimizer.*   AdamW moments and iteration
//   <save>/iter_<rollout:07d>/data_buffer.json, trainer_state.json
//   <save>/latest_checkpointed_iteration.txt
// --load <save> resumes from the latest one and continues the same run bit for bit (same data
// order, same per-sample sampling seeds, same weights and optimizer state, weight version
// continued; tests/e2e/rl/loop_replay_test.cc). Caveat: the CPU engine's batched forward is not
// batch-invariant, so the engine's own log-probs (rollout_log_probs, the rollout-vs-trainer diff
// metric) move by ~1e-6 with which requests share a step; with --rollout-concurrency 1 the whole
// run, those included, is bitwise reproducible. Under --advantage-estimator ppo the critic
// (trainer/critic.h) is saved under <save>/iter_*/critic/ and restored with the rest.
#pragma once
#include "gyre/rl/loop/train_config.h"

namespace gyre::rl {

// Runs the loop; returns the process exit code. Errors are gyre::Error (bad config or data).
int run_train(TrainConfig& cfg, const std::string& resolved_flags_yaml);

}  // namespace gyre::rl
