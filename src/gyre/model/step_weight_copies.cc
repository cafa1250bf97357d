#include "gyre/model/step_weight_copies.h"

namespace gyre::model {

StepWeightCopies::StepWeightCopies(const CausalLM& m) {
  if (m.device() == Device::cuda && m.precision() == Precision::bf16)
    cache_ = std::make_shared<ops::Bf16WeightCache>();
}

void StepWeightCopies::weights_changed() {
  if (cache_) cache_->clear();
}

void StepWeightCopies::after_optimizer_step() {
  if (cache_ && !cache_->take_fresh()) cache_->clear();
}

}  // namespace gyre::model
