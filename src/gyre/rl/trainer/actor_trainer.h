// ActorTrainer: one rollout's worth of training on the policy, slime's MegatronTrainRayActor.train
// for a single rank: ref/old log-prob forwards, advantages, then num_steps_per_rollout optimizer
// steps over packed micro-batches with the configured policy loss and a hand-written backward.
//
// Runtime correctness (DESIGN.md §"Correctness is checked at run time"):
// - Old log-probs are recomputed with exactly the packing of the training micro-batches, so before
//   any weight change the first micro-step must see logp == old_logp bit for bit: ratio exactly 1,
//   train/ppo_kl = 0 and train/pg_clipfrac = 0. Anything else is a bug (non-determinism, stale
//   weights) and aborts the run with a clear message unless check_first_step_ratio is off.
// - Every step logs the rollout-vs-trainer log-prob difference (mean and max) and the loss
//   normaliser it used.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/step_weight_copies.h"
#include "gyre/rl/algorithms/config.h"
#include "gyre/rl/sample.h"
#include "gyre/rl/trainer/critic.h"
#include "gyre/rl/trainer/micro_batches.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {

struct ActorTrainerOptions {
  AlgorithmConfig algo;
  int64_t global_batch_size = 0;  // samples per optimizer step (--global-batch-size)
  MicroBatchOptions micro;
  float temperature = 1.0f;  // --rollout-temperature: training divides logits by it (slime)
  bool check_first_step_ratio = true;  // opt-out: --skip-ratio-check
  // Data parallelism (dist/data_parallel.h); null = one process. When set, every DP rank calls
  // train() with the same samples and trains on its contiguous share of each step's samples; the
  // step normaliser still covers the whole step, old/ref log-probs and loss metrics are summed
  // over the ranks, and data_parallel->step() (reduce + AdamW / ZeRO-1) replaces optimizer.step().
  dist::DataParallelOptimizer* data_parallel = nullptr;
  // --balance-data (slime): with data parallelism, each step's samples are split over the ranks
  // by balanced_partitions (dp_balance.h: equal counts, nearly equal tokens) instead of in
  // contiguous slices. The step's samples, normaliser and gradient are the same either way (up
  // to the order of the float sums); train/dp_tokens_max_over_mean reports the balance.
  bool balance_data = false;
  // --advantage-estimator ppo: the critic (trainer/critic.h). Its values (before any update) feed
  // GAE; it takes one value-loss step per actor step on the same micro-batches and normaliser.
  Critic* critic = nullptr;
};

using Metrics = std::map<std::string, double>;

class ActorTrainer {
 public:
  // `ref` may be null (no --ref-load); it is needed for --use-kl-loss or --kl-coef != 0.
  ActorTrainer(model::CausalLM& actor, model::CausalLM* ref, train::AdamW& optimizer,
               ActorTrainerOptions options);

  // Trains on `samples` (one rollout, groups contiguous) whose post-processed scalar rewards are
  // `rewards` (rl/algorithms post_process_rewards). Modifies the actor's weights in place: the
  // caller must keep the rollout engine idle until it returns and then sync weights. Returns the
  // train/* metrics averaged over the optimizer steps.
  Metrics train(const std::vector<Sample>& samples, const std::vector<float>& rewards);

  // The bf16 copies of the actor's weights that the last train() call's AdamW wrote in its final
  // update (AdamW's, or the data-parallel optimizer's) and that the next call reuses (see
  // train()), or null: none kept — not on CUDA in bf16, colocated (the optimizer writes the
  // rollout engine's copies), or the update did not cover every copy. For tests and memory
  // accounting (2 bytes per cached parameter).
  const ops::Bf16WeightCache* kept_weight_copies() const;
  // Whether the last train() call's passes read the colocated engine's bf16 copies (those its
  // optimizer writes) instead of making their own: from the second call on while the actor's
  // weights_generation() is unchanged (see train()). For tests.
  bool last_call_read_engine_copies() const { return last_call_read_engine_copies_; }

  // Forward-only per-token log-probs of every sample's response under `model` (at the rollout
  // temperature), packed exactly as `schedule` says (lists of sample indices).
  std::vector<std::vector<float>> response_logprobs(
      model::CausalLM& model, const std::vector<Sample>& samples,
      const std::vector<std::vector<int64_t>>& schedule) const;

 private:
  model::CausalLM& actor_;
  model::CausalLM* ref_;
  train::AdamW& optimizer_;
  ActorTrainerOptions opt_;
  // train()'s weight copies carried to the next call (kept_weight_copies()), valid while the
  // actor's weights_generation() still equals kept_generation_.
  std::unique_ptr<model::StepWeightCopies> kept_copies_;
  uint64_t kept_generation_ = 0;
  // Colocated: whether the last call ended without an error with the optimizer writing the
  // engine's copies, and the actor's weights_generation() then (train() reads the engine's
  // copies while it is unchanged).
  bool engine_copies_current_ = false;
  uint64_t engine_copies_generation_ = 0;
  bool last_call_read_engine_copies_ = false;
};

// The samples' loss masks as floats (empty mask = all ones; remove_sample = all zeros).
std::vector<std::vector<float>> loss_masks_of(const std::vector<Sample>& samples);

}  // namespace gyre::rl
