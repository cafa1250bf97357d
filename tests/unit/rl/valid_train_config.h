// A TrainConfig that passes TrainConfig::derive_and_validate: the flags' defaults (registering
// them writes each default), a model, a reward and a run length. The flag tests edit one field of
// it and expect the error to name that flag.
#pragma once
#include <string>

#include "gyre/core/flags.h"
#include "gyre/rl/loop/train_config.h"

namespace gyre::rl::test_support {

inline TrainConfig valid_train_config() {
  TrainConfig c;
  FlagSet flags;
  c.register_flags(flags);
  c.hf_checkpoint = std::string("m");  // (not = "m": GCC 12 -Wrestrict false positive)
  c.rm_type = std::string("math");
  c.num_rollout = 3;
  c.rollout_batch_size = 4;  // required flags
  c.n_samples_per_prompt = 2;
  return c;
}

}  // namespace gyre::rl::test_support
