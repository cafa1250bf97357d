// Evaluation during training (slime --eval-prompt-data name path --eval-interval N): every prompt
// sampled --n-samples-per-eval-prompt times at --eval-temperature (0 = greedy) with fixed seeds,
// scored by the training reward; logs eval/<name> (mean reward) and eval/<name>/response_len.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "gyre/infer/rollout_client.h"
#include "gyre/rl/data/prompt_dataset.h"
#include "gyre/rl/rollout/rollout_manager.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

struct EvalSet {
  std::string name;
  std::shared_ptr<const PromptDataset> data;
};

std::map<std::string, double> evaluate(const EvalSet& set, infer::RolloutClient& client,
                                       const tokenizer::Tokenizer& tokenizer,
                                       const infer::SamplingParams& sampling, int64_t n_samples,
                                       const RewardHook& reward, const std::string& reward_key);

}  // namespace gyre::rl
