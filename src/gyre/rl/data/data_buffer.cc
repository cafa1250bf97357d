// DataBuffer: prompt groups, returned-group buffer, epochs with Philox shuffles, checkpoint state.
#include "gyre/rl/data/data_buffer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "gyre/core/error.h"
#include "gyre/core/philox.h"

namespace gyre::rl {

namespace {

using json = nlohmann::json;
constexpr int kStateVersion = 1;

// Uniform integer in [0, bound) without modulo bias (Lemire's multiply-shift with rejection on
// 64-bit draws made of two Philox words).
uint64_t uniform_below(PhiloxStream& rng, uint64_t bound) {
  while (true) {
    uint64_t x = (uint64_t(rng.next_u32()) << 32) | rng.next_u32();
    __uint128_t m = __uint128_t(x) * bound;
    uint64_t low = uint64_t(m);
    if (low >= bound || low >= (-bound) % bound) return uint64_t(m >> 64);
  }
}

template <typename T>
T field(const json& s, const char* key) {
  auto it = s.find(key);
  if (it == s.end())
    GYRE_THROW(invalid_argument,
               "data buffer state: missing field '{}' (not a gyre data-buffer "
               "checkpoint?)",
               key);
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    GYRE_THROW(invalid_argument, "data buffer state: field '{}' has the wrong type: {}", key,
               it->dump());
  }
}

}  // namespace

DataBuffer::DataBuffer(std::shared_ptr<const PromptDataset> dataset, DataBufferOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) GYRE_THROW(invalid_argument, "DataBuffer needs a dataset");
  if (options_.n_samples_per_prompt < 1)
    GYRE_THROW(invalid_argument, "--n-samples-per-prompt must be >= 1, got {}",
               options_.n_samples_per_prompt);
  order_ = epoch_order(0);
}

std::vector<int64_t> DataBuffer::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(dataset_->size());
  std::iota(order.begin(), order.end(), int64_t(0));
  if (options_.shuffle && order.size() > 1) {
    PhiloxStream rng(options_.seed, uint64_t(epoch));
    for (size_t i = order.size() - 1; i > 0; --i)
      std::swap(order[i], order[uniform_below(rng, i + 1)]);
  }
  return order;
}

std::vector<SampleGroup> DataBuffer::get_samples(int64_t num_groups) {
  if (num_groups < 0) GYRE_THROW(invalid_argument, "get_samples: negative count {}", num_groups);
  std::vector<SampleGroup> out;
  out.reserve(size_t(num_groups));
  while (int64_t(out.size()) < num_groups && !buffer_.empty()) {
    out.push_back(std::move(buffer_.front()));
    buffer_.pop_front();
  }
  if (int64_t(out.size()) < num_groups && dataset_->empty())
    GYRE_THROW(invalid_argument,
               "the prompt dataset '{}' is empty (all lines malformed or filtered?); check "
               "--prompt-data, --input-key and --rollout-max-prompt-len",
               dataset_->source());
  while (int64_t(out.size()) < num_groups) {
    if (offset_ >= int64_t(order_.size())) {
      ++epoch_;
      offset_ = 0;
      order_ = epoch_order(epoch_);
    }
    const Sample& prompt = (*dataset_)[size_t(order_[size_t(offset_++)])];
    SampleGroup group;
    group.reserve(size_t(options_.n_samples_per_prompt));
    for (int64_t k = 0; k < options_.n_samples_per_prompt; ++k) {
      Sample s = prompt;
      s.group_index = group_counter_;
      s.index = sample_counter_++;
      group.push_back(std::move(s));
    }
    ++group_counter_;
    out.push_back(std::move(group));
  }
  return out;
}

void DataBuffer::add_samples(std::vector<SampleGroup> groups) {
  for (size_t g = 0; g < groups.size(); ++g) {
    if (int64_t(groups[g].size()) != options_.n_samples_per_prompt)
      GYRE_THROW(invalid_argument,
                 "add_samples: group {} has {} samples, expected --n-samples-per-prompt = {} "
                 "(return whole groups)",
                 g, groups[g].size(), options_.n_samples_per_prompt);
    for (const auto& s : groups[g])
      if (!s.index || !s.group_index)
        GYRE_THROW(invalid_argument,
                   "add_samples: group {} holds a sample without index/group_index (only groups "
                   "handed out by get_samples can be returned)",
                   g);
  }
  for (auto& g : groups) buffer_.push_back(std::move(g));
}

json DataBuffer::state() const {
  json buffer = json::array();
  for (const auto& g : buffer_) {
    json group = json::array();
    for (const auto& s : g) group.push_back(s.to_json());
    buffer.push_back(std::move(group));
  }
  char fp[17];
  std::snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)dataset_->fingerprint());
  return {{"version", kStateVersion},
          {"epoch_id", epoch_},
          {"sample_offset", offset_},
          {"sample_group_index", group_counter_},
          {"sample_index", sample_counter_},
          {"shuffle", options_.shuffle},
          {"seed", options_.seed},
          {"n_samples_per_prompt", options_.n_samples_per_prompt},
          {"dataset_size", dataset_->size()},
          {"dataset_fingerprint", fp},
          {"buffer", std::move(buffer)}};
}

void DataBuffer::load_state(const json& s) {
  if (!s.is_object()) GYRE_THROW(invalid_argument, "data buffer state must be a JSON object");
  if (field<int>(s, "version") != kStateVersion)
    GYRE_THROW(unsupported, "data buffer state version {} is not supported (expected {})",
               field<int>(s, "version"), kStateVersion);
  auto size = field<int64_t>(s, "dataset_size");
  if (size != dataset_size())
    GYRE_THROW(invalid_argument,
               "data buffer state was saved for {} prompts but --prompt-data '{}' has {}; resume "
               "with the same data, slice and filters",
               size, dataset_->source(), dataset_size());
  char fp[17];
  std::snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)dataset_->fingerprint());
  if (field<std::string>(s, "dataset_fingerprint") != fp)
    GYRE_THROW(invalid_argument,
               "data buffer state was saved for different prompts than --prompt-data '{}' holds "
               "now (fingerprint {} vs {}); resume with the same data",
               dataset_->source(), field<std::string>(s, "dataset_fingerprint"), fp);
  if (field<int64_t>(s, "n_samples_per_prompt") != options_.n_samples_per_prompt)
    GYRE_THROW(invalid_argument,
               "data buffer state has --n-samples-per-prompt {} but this run uses {}",
               field<int64_t>(s, "n_samples_per_prompt"), options_.n_samples_per_prompt);
  if (field<bool>(s, "shuffle") != options_.shuffle || field<uint64_t>(s, "seed") != options_.seed)
    GYRE_THROW(invalid_argument,
               "data buffer state has --rollout-shuffle {} --rollout-seed {} but this run uses {} "
               "/ {}; the prompt order would differ",
               field<bool>(s, "shuffle"), field<uint64_t>(s, "seed"), options_.shuffle,
               options_.seed);
  int64_t epoch = field<int64_t>(s, "epoch_id"), offset = field<int64_t>(s, "sample_offset");
  if (epoch < 0 || offset < 0 || offset > dataset_size())
    GYRE_THROW(invalid_argument, "data buffer state: epoch {} / offset {} out of range", epoch,
               offset);
  std::deque<SampleGroup> buffer;
  const json& b = s.at("buffer");
  if (!b.is_array()) GYRE_THROW(invalid_argument, "data buffer state: 'buffer' must be a list");
  for (size_t g = 0; g < b.size(); ++g) {
    if (!b[g].is_array())
      GYRE_THROW(invalid_argument, "data buffer state: buffer[{}] must be a list", g);
    SampleGroup group;
    for (size_t i = 0; i < b[g].size(); ++i)
      group.push_back(
          Sample::from_json(b[g][i], fmt::format("data buffer state buffer[{}][{}]", g, i)));
    buffer.push_back(std::move(group));
  }
  epoch_ = epoch;
  offset_ = offset;
  group_counter_ = field<int64_t>(s, "sample_group_index");
  sample_counter_ = field<int64_t>(s, "sample_index");
  order_ = epoch_order(epoch_);
  buffer_ = std::move(buffer);
}

void DataBuffer::save_state_file(const std::string& path) const {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) GYRE_THROW(io, "cannot write data buffer state '{}' (check --save)", tmp);
    out << state().dump(-1, ' ', false, json::error_handler_t::replace);
    if (!out) GYRE_THROW(io, "write to '{}' failed (disk full?)", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) GYRE_THROW(io, "cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

void DataBuffer::load_state_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) GYRE_THROW(not_found, "data buffer state '{}' not found (check --load)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded())
    GYRE_THROW(invalid_argument, "data buffer state '{}' is not valid JSON (truncated?)", path);
  load_state(j);
}

int64_t num_rollout_for_epochs(int64_t dataset_size, int64_t rollout_batch_size,
                               int64_t num_epoch) {
  if (rollout_batch_size <= 0)
    GYRE_THROW(invalid_argument, "--rollout-batch-size must be positive, got {}",
               rollout_batch_size);
  if (num_epoch <= 0)
    GYRE_THROW(invalid_argument, "--num-epoch must be positive, got {}", num_epoch);
  int64_t per_epoch = dataset_size / rollout_batch_size;
  if (per_epoch == 0)
    GYRE_THROW(invalid_argument,
               "--prompt-data has {} prompts, fewer than one --rollout-batch-size ({}); use "
               "--num-rollout or a smaller batch",
               dataset_size, rollout_batch_size);
  return per_epoch * num_epoch;
}

}  // namespace gyre::rl
