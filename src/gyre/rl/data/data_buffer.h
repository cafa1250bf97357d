// DataBuffer: the RL data source with a buffer of returned groups — slime's
// RolloutDataSourceWithBuffer (slime/rollout/data_source.py).
//
// get_samples(n) hands out n prompt groups. Groups given back with add_samples() (aborted or
// partial groups under --partial-rollout) come first, FIFO (slime's default pop_first buffer
// filter); the rest are fresh prompts taken in order from the dataset, each copied
// n_samples_per_prompt times with group_index set per prompt and index set per sample (two running
// counters). At the end of the dataset the next epoch starts; with --rollout-shuffle each epoch
// visits the prompts in a permutation drawn by Fisher-Yates from Philox(seed = --rollout-seed,
// stream = epoch) — a pure function of (seed, epoch), so it is recomputed rather than stored.
//
// state()/load_state() capture everything needed for a resumed run to hand out exactly the same
// groups: epoch, offset, both counters, shuffle settings, dataset size and fingerprint (to refuse a
// different dataset), and the returned groups themselves.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gyre/rl/data/prompt_dataset.h"
#include "gyre/rl/sample.h"

namespace gyre::rl {

using SampleGroup = std::vector<Sample>;

// What the rollout manager talks to (slime's --data-source-path contract), so custom sources can
// replace the built-in buffer.
class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual std::vector<SampleGroup> get_samples(int64_t num_groups) = 0;
  virtual void add_samples(std::vector<SampleGroup> groups) = 0;
  virtual nlohmann::json state() const = 0;
  virtual void load_state(const nlohmann::json& state) = 0;
  virtual int64_t dataset_size() const = 0;
};

struct DataBufferOptions {
  int64_t n_samples_per_prompt = 1;  // --n-samples-per-prompt
  bool shuffle = false;              // --rollout-shuffle
  uint64_t seed = 42;                // --rollout-seed
};

class DataBuffer : public DataSource {
 public:
  DataBuffer(std::shared_ptr<const PromptDataset> dataset, DataBufferOptions options);

  std::vector<SampleGroup> get_samples(int64_t num_groups) override;
  // Takes back whole groups (each of n_samples_per_prompt samples with index and group_index set,
  // as handed out); they are handed out first next time, in the order given.
  void add_samples(std::vector<SampleGroup> groups) override;
  nlohmann::json state() const override;
  // Restores a state() (Error when it does not fit this dataset / options, saying which field).
  void load_state(const nlohmann::json& state) override;
  int64_t dataset_size() const override { return int64_t(dataset_->size()); }

  // Writes state() to `path` atomically (temporary file + rename) / reads it back.
  void save_state_file(const std::string& path) const;
  void load_state_file(const std::string& path);

  int64_t epoch() const { return epoch_; }
  int64_t offset() const { return offset_; }  // position within the epoch's order
  int64_t buffered_groups() const { return int64_t(buffer_.size()); }
  int64_t next_group_index() const { return group_counter_; }
  int64_t next_sample_index() const { return sample_counter_; }
  // The order prompts are visited in during `epoch` (identity without shuffle).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  std::shared_ptr<const PromptDataset> dataset_;
  DataBufferOptions options_;
  int64_t epoch_ = 0, offset_ = 0;
  int64_t group_counter_ = 0, sample_counter_ = 0;
  std::vector<int64_t> order_;  // epoch_order(epoch_)
  std::deque<SampleGroup> buffer_;
};

// Number of rollout steps for --num-epoch when --num-rollout is not given (slime: dataset size //
// rollout_batch_size * num_epoch). Error when the dataset holds fewer prompts than one batch.
int64_t num_rollout_for_epochs(int64_t dataset_size, int64_t rollout_batch_size, int64_t num_epoch);

}  // namespace gyre::rl
