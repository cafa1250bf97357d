// AdamW over named f32 parameters (the model's master weights on the CPU backend), with Megatron's
// global-norm gradient clipping and learning-rate schedule. State (m, v, step) is checkpointable.
//
// Invariants: params[i] and grads[i] have the same name and shape for every i; m/v are created
// lazily at the first step (zeros) and keyed by name, so a checkpoint loads into a model with the
// same names.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"

namespace gyre::train {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct AdamWConfig {
  double lr = 1e-6, min_lr = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Megatron defaults (--adam-beta1/2, --adam-eps)
  double weight_decay = 0.0;
  double clip_grad = 1.0;  // <= 0: no clipping
};

// Megatron's OptimizerParamScheduler, the parts slime uses: linear warmup from 0 to lr over
// warmup_iters, then constant / linear / cosine decay from lr to min_lr until decay_iters.
struct LrSchedule {
  std::string decay_style = "constant";  // constant | linear | cosine
  int64_t warmup_iters = 0;
  int64_t decay_iters = 0;  // 0: the whole run (set by the trainer from num_rollout x steps)
  double lr_at(int64_t iteration, double max_lr, double min_lr) const;
};

class AdamW {
 public:
  AdamW(AdamWConfig cfg, LrSchedule schedule) : cfg_(cfg), schedule_(schedule) {}

  // Global L2 norm of the gradients (f64 accumulate).
  static double grad_norm(const NamedTensors& grads);
  // Clips (Megatron: coeff = clip / (norm + 1e-6), applied when < 1), then one AdamW step with the
  // scheduled lr. The clip coefficient is applied as the update reads each gradient
  // (ops::AdamWParams::grad_scale), so `grads` are left as they were (unscaled). Returns
  // {grad_norm before clipping, lr used}. Non-finite grad norm: the step is skipped and an Error
  // thrown naming the first non-finite gradient tensor.
  std::pair<double, double> step(NamedTensors& params, NamedTensors& grads);

  // Σ g² behind the clipping norm; default: over the given tensors. Tensor parallelism replaces it
  // with CausalLM::grad_sum_squares (sharded tensors summed over the tp ranks, replicated ones
  // counted once), so every rank clips by the norm of the full gradient.
  using SumSquares = std::function<double(const NamedTensors& grads)>;
  void set_grad_sum_squares(SumSquares f) { sum_squares_ = std::move(f); }

  // Colocated rollout (rl/loop/train_rollout.h, share_bf16_weight_copies): the rollout engine's
  // bf16 weight copies are written by the update itself — bf16(new value) into each stepped
  // parameter's copy (Bf16WeightCache::copy_to_write), in the same launch, bitwise the cast the
  // engine would make — and the cache is marked fresh when that covered every copy, so the weight
  // sync needs no re-cast. Every step first marks the cache stale, so a step that fails or leaves
  // a copy unwritten is never trusted. Parameters without a copy step as before; the f32 results
  // are identical either way. An expired pointer (the engine is gone) is ignored; null: none.
  void set_bf16_copies(std::weak_ptr<ops::Bf16WeightCache> cache) {
    bf16_copies_ = std::move(cache);
  }
  bool has_bf16_copies() const { return !bf16_copies_.expired(); }
  // The attached cache (null when none or expired).
  std::shared_ptr<ops::Bf16WeightCache> bf16_copies() const { return bf16_copies_.lock(); }

  int64_t iteration() const { return iteration_; }
  const AdamWConfig& config() const { return cfg_; }

  // Checkpoint: <dir>/optimizer.safetensors (m.<name>, v.<name>) + <dir>/optimizer.json
  // (iteration).
  void save(const std::string& dir) const;
  void load(const std::string& dir);

 private:
  AdamWConfig cfg_;
  LrSchedule schedule_;
  int64_t iteration_ = 0;
  std::map<std::string, Tensor> m_, v_;
  // step()'s moments resolved for the parameter list it last saw: the names in order and
  // pointers to their m_ / v_ entries (std::map nodes are stable). A run steps the same list every
  // time, and looking ~300 long, shared-prefix string keys up three times per step cost ~0.3 ms of
  // host time while the GPU sat idle (session 19, CUPTI timeline of the 0.5B training step).
  // Rebuilt when the names differ; cleared by load(), which replaces m_ / v_.
  std::vector<std::string> slot_names_;
  std::vector<std::pair<Tensor*, Tensor*>> slots_;
  SumSquares sum_squares_;
  std::weak_ptr<ops::Bf16WeightCache> bf16_copies_;
};

}  // namespace gyre::train
