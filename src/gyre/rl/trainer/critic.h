// Critic for --advantage-estimator ppo: slime's critic model (a copy of the policy architecture
// whose output layer is a scalar value head, trained with the clipped value loss) for one rank.
//
// Value head: v_t = w · z_t + b over the trunk's output logits z_t = U h_t (U the unembedding).
// This is a linear head on the final hidden state h_t factored as (Uᵀw) · h_t, trainable end to
// end, so the critic reuses the CausalLM forward/backward unchanged. Initialised w = 0, b = 0
// (every value 0 at the start, as a zero-initialised linear head) unless the --critic-load folder
// holds value_head.safetensors.
//
// Alignment (slime): the value of response token k is read at the row that predicts token k (the
// state before emitting it), the same rows as the policy's log-probs. Invariant: values() and
// train() pack micro-batches exactly as the schedule says, so the old values of the first
// micro-step equal the trained forward bit for bit.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/model/causal_lm.h"
#include "gyre/rl/algorithms/config.h"
#include "gyre/rl/sample.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {

using TokenValuesF = std::vector<std::vector<float>>;  // [sample][response token]

class Critic {
 public:
  // Loads the trunk from `dir` (an HF folder: --critic-load, or the actor's --hf-checkpoint) and
  // the head from <dir>/value_head.safetensors when present. Errors name the file.
  Critic(const std::string& dir, train::AdamWConfig adam, train::LrSchedule schedule);

  // Per-token values of every sample's response, packed as `schedule` says (lists of sample
  // indices, every sample once).
  TokenValuesF values(const std::vector<Sample>& samples,
                      const std::vector<std::vector<int64_t>>& schedule);

  // One optimizer step over the micro-batches `step_mbs` (sample indices) with slime's clipped
  // value loss (algo.value_clip) against `returns`, `old_values` from values() before any update.
  // normalizer / sample_denoms: the actor's step normaliser (loss_reducer.h), indexed by sample.
  // Returns train/value_loss, train/value_clipfrac, train/critic_grad_norm.
  std::map<std::string, double> train_step(
      const AlgorithmConfig& algo, const std::vector<Sample>& samples,
      const std::vector<std::vector<int64_t>>& step_mbs, const TokenValuesF& returns,
      const TokenValuesF& old_values, const std::vector<std::vector<float>>& masks,
      const std::vector<double>& sample_denoms, double normalizer);

  // <dir>/model (HF folder), <dir>/value_head.safetensors, <dir>/optimizer.*; load() restores
  // what save() wrote (a resumed run continues the critic bit for bit).
  void save(const std::string& dir, DType dtype) const;
  void load(const std::string& dir);

  model::CausalLM& trunk() { return *trunk_; }
  const Tensor& head_weight() const { return head_w_; }
  const Tensor& head_bias() const { return head_b_; }

 private:
  void load_head(const std::string& path);

  std::unique_ptr<model::CausalLM> trunk_;
  Tensor head_w_;  // f32 [vocab]
  Tensor head_b_;  // f32 [1]
  train::AdamW optimizer_;
};

}  // namespace gyre::rl
