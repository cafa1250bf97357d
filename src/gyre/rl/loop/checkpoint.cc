#include "gyre/rl/loop/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "gyre/core/error.h"

namespace gyre::rl {
namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& save, int64_t rollout_id) {
  return fmt::format("{}/iter_{:07d}", save, rollout_id);
}

namespace {

void write_checkpoint(const std::string& save, int64_t rollout_id, const model::CausalLM& model,
                      DType dtype, const std::string& tokenizer_dir, const train::AdamW& optimizer,
                      const DataBuffer& buffer, const TrainerState& state,
                      const std::string& flags_yaml,
                      const std::function<void(const std::string& tmp_dir)>& write_extra) {
  const std::string final_dir = checkpoint_dir(save, rollout_id);
  const std::string tmp = final_dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp + "/model");
  model.save(tmp + "/model", dtype);
  // The tokenizer travels with the weights so the folder is a complete HF model.
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                        "special_tokens_map.json"}) {
    fs::path src = fs::path(tokenizer_dir) / f;
    if (fs::exists(src))
      fs::copy_file(src, fs::path(tmp) / "model" / f, fs::copy_options::overwrite_existing);
  }
  optimizer.save(tmp);
  buffer.save_state_file(tmp + "/data_buffer.json");
  nlohmann::json j = {{"rollout_id", state.rollout_id},
                      {"weight_version", state.weight_version},
                      {"extra", state.extra}};
  std::ofstream(tmp + "/trainer_state.json") << j.dump(2) << "\n";
  std::ofstream(tmp + "/config.yaml") << flags_yaml;
  if (write_extra) write_extra(tmp);
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir);
  const std::string latest = save + "/latest_checkpointed_iteration.txt";
  {
    std::ofstream f(latest + ".tmp");
    f << rollout_id << "\n";
  }
  fs::rename(latest + ".tmp", latest);
}

}  // namespace

void save_checkpoint(const std::string& save, int64_t rollout_id, const model::CausalLM& model,
                     DType dtype, const std::string& tokenizer_dir, const train::AdamW& optimizer,
                     const DataBuffer& buffer, const TrainerState& state,
                     const std::string& flags_yaml,
                     const std::function<void(const std::string& tmp_dir)>& write_extra) {
  try {
    write_checkpoint(save, rollout_id, model, dtype, tokenizer_dir, optimizer, buffer, state,
                     flags_yaml, write_extra);
  } catch (const fs::filesystem_error& e) {
    // The folder went away, filled up or lost its permissions since the run checked it at start.
    GYRE_THROW(io, "--save {}: cannot write checkpoint {}: {}", save,
               checkpoint_dir(save, rollout_id), e.what());
  }
}

std::optional<std::string> find_latest_checkpoint(const std::string& load) {
  // The error_code form: a folder that cannot be searched (permissions) is an error about --load,
  // not an unlabelled filesystem exception.
  auto exists = [&](const fs::path& p) {
    std::error_code ec;
    const bool found = fs::exists(p, ec);
    if (ec)
      GYRE_THROW(io, "--load {}: cannot read {}: {}; check the folder's permissions", load,
                 p.string(), ec.message());
    return found;
  };
  if (exists(fs::path(load) / "trainer_state.json")) return load;
  const fs::path latest = fs::path(load) / "latest_checkpointed_iteration.txt";
  if (!exists(latest)) return std::nullopt;
  std::ifstream f(latest);
  int64_t it = -1;
  if (!(f >> it) || it < 0)
    GYRE_THROW(invalid_argument, "{} does not hold a rollout number", latest.string());
  std::string dir = checkpoint_dir(load, it);
  if (!exists(fs::path(dir) / "trainer_state.json"))
    GYRE_THROW(not_found, "{} names iteration {} but {} is missing or incomplete", latest.string(),
               it, dir);
  return dir;
}

TrainerState load_trainer_state(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/trainer_state.json";
  std::ifstream f(path);
  if (!f) GYRE_THROW(not_found, "{} not found", path);
  try {
    nlohmann::json j;
    f >> j;
    TrainerState s;
    s.rollout_id = j.at("rollout_id").get<int64_t>();
    s.weight_version = j.at("weight_version").get<int64_t>();
    if (j.contains("extra")) s.extra = j["extra"];
    return s;
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "{}: {}", path, e.what());
  }
}

}  // namespace gyre::rl
