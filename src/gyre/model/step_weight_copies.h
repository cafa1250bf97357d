// bf16 copies of a model's weights for one optimizer step (bf16 autocast on CUDA).
//
// Under ops::Bf16Autocast every linear rounds its f32 weight to bf16 on each call — 6 bytes of
// traffic per parameter before the GEMM reads 2 more, and a training step does it several times
// per weight: the old-log-prob pass, then each micro-batch's forward and backward (~0.9 ms per
// pass at 0.5B parameters, ~2.8 ms at 1.5B on an H200). Between two optimizer steps the weights do
// not change, so one copy per weight serves every pass of the step: the first use converts (an
// ops::Bf16WeightCache miss), later uses read the copy. The numbers are identical to per-call
// rounding (the cache's conversion is the same round-to-nearest-even of the same f32 values), so
// the first micro-step's ratio stays exactly 1.
//
// Usage: keep one StepWeightCopies next to the optimizer; install it around the step's passes of
// this model (`ops::UseBf16WeightCache use(copies.cache());`) and call weights_changed() after
// every optimizer step (and after anything else that writes the weights) — the copies are dropped
// and the next pass converts again. Or let the optimizer write them (Megatron's bf16 parameters
// updated with the f32 main ones): train::AdamW::set_bf16_copies(copies.for_optimizer()) writes
// bf16(new value) into every copy in its update, and after_optimizer_step() keeps the copies when
// that covered all of them (the cache's fresh mark), else drops them — the next step's passes then
// convert nothing (rl::ActorTrainer keeps them across its train() calls while the model's
// weights_generation() is unchanged). Inactive (cache() is null: nothing installed, nothing cached)
// unless the model is on CUDA with Precision::bf16. Memory: 2 bytes per parameter while active,
// what Megatron's bf16 parameters next to the f32 main parameters cost.
#pragma once
#include <memory>

#include "gyre/backend/ops.h"
#include "gyre/model/causal_lm.h"

namespace gyre::model {

class StepWeightCopies {
 public:
  explicit StepWeightCopies(const CausalLM& m);
  // The cache to install around this model's passes, or null (inactive).
  ops::Bf16WeightCache* cache() { return cache_.get(); }
  // The weights changed (an optimizer step): drop every copy. No-op when inactive.
  void weights_changed();
  // The cache for train::AdamW::set_bf16_copies (expired when inactive).
  std::weak_ptr<ops::Bf16WeightCache> for_optimizer() const { return cache_; }
  // After a step of an optimizer that writes the copies: keep them if it wrote every one (fresh),
  // else drop them, as weights_changed(). No-op when inactive.
  void after_optimizer_step();

 private:
  std::shared_ptr<ops::Bf16WeightCache> cache_;
};

}  // namespace gyre::model
