// Train-loop checkpoints: layout in train_loop.h. Writes go to a temporary folder renamed into
// place, so a crash mid-save never leaves a half checkpoint behind `latest`.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gyre/model/causal_lm.h"
#include "gyre/rl/data/data_buffer.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {

// write_extra writes further state (e.g. the PPO critic under critic/) into the temporary folder
// before it is renamed into place, so it is part of the same atomic checkpoint.
struct TrainerState {
  int64_t rollout_id = -1;  // last completed rollout
  int64_t weight_version = 0;
  nlohmann::json extra = nlohmann::json::object();
};

std::string checkpoint_dir(const std::string& save, int64_t rollout_id);
void save_checkpoint(const std::string& save, int64_t rollout_id, const model::CausalLM& model,
                     DType dtype, const std::string& tokenizer_dir, const train::AdamW& optimizer,
                     const DataBuffer& buffer, const TrainerState& state,
                     const std::string& flags_yaml,
                     const std::function<void(const std::string& tmp_dir)>& write_extra = nullptr);
// The folder of the latest checkpoint under `load` (or `load` itself when it is one), or nullopt
// when `load` holds none. Error when latest_checkpointed_iteration.txt is malformed.
std::optional<std::string> find_latest_checkpoint(const std::string& load);
TrainerState load_trainer_state(const std::string& ckpt_dir);

}  // namespace gyre::rl
