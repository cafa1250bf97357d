// The train loop's reward hook over rl/rewards: builds one RewardFunction from the flags and scores
// each finished group (the whole group in one call, which --group-rm functions need and per-sample
// functions simply map over).
#include <mutex>

#include "gyre/core/error.h"
#include "gyre/rl/loop/components.h"
#include "gyre/rl/rewards/reward.h"

namespace gyre::rl {

RewardHook make_reward_hook(const TrainConfig& cfg) {
  if (cfg.rm_type.empty() && cfg.custom_rm_path.empty())
    GYRE_THROW(invalid_argument,
               "no reward: pass --rm-type (math, deepscaler, dapo, f1, gpqa, exact_match, "
               "remote_rm, random) or --custom-rm-path");
  rewards::RewardConfig rc;
  rc.rm_type = cfg.rm_type;
  rc.custom_rm_path = cfg.custom_rm_path;
  rc.rm_url = cfg.rm_url;
  if (!cfg.reward_key.empty()) rc.reward_key = cfg.reward_key;
  rc.group_rm = cfg.group_rm;
  rc.custom_rm_timeout_s = cfg.rm_timeout;
  rc.seed = uint64_t(cfg.seed);
  std::shared_ptr<rewards::RewardFunction> fn = rewards::make_reward_function(rc);
  auto mu = std::make_shared<std::mutex>();  // reward functions may keep a process / connection
  return [fn, mu](SampleGroup& group) {
    std::vector<rewards::RewardInput> in;
    for (auto& s : group) {
      rewards::RewardInput r;
      r.prompt = s.prompt.is_string() ? s.prompt.get<std::string>() : s.prompt.dump();
      r.response = s.response;
      r.label = s.label;
      r.metadata = s.metadata;
      r.index = s.index.value_or(-1);
      in.push_back(std::move(r));
    }
    std::vector<rewards::Reward> out;
    {
      std::lock_guard<std::mutex> lk(*mu);
      out = fn->score(in);
    }
    if (out.size() != group.size())
      GYRE_THROW(internal, "reward function returned {} rewards for {} samples", out.size(),
                 group.size());
    for (size_t i = 0; i < group.size(); ++i) {
      if (!out[i].ok())
        GYRE_THROW(invalid_argument, "reward of sample {} failed: {}", group[i].index.value_or(-1),
                   out[i].error);
      group[i].reward = out[i].value;
    }
  };
}

}  // namespace gyre::rl
