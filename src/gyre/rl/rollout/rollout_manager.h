// RolloutManager: slime's default generate_rollout for one rollout step. It keeps submitting
// --over-sampling-batch-size prompt groups while fewer than --rollout-batch-size groups are kept or
// in flight, scores each finished group (reward hook), applies the dynamic-sampling filter, stops
// once --rollout-batch-size groups are kept, aborts the surplus (returned to the data buffer with
// their partial responses under --partial-rollout) and returns the kept groups sorted by index.
//
// Concurrency: generate functions are synchronous per sample and run on a bounded pool of
// threads (--rollout-concurrency); the engine batches whatever is in flight. Invariant: generate()
// returns only after every submitted task finished, so no request outlives its rollout.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gyre/rl/data/data_buffer.h"
#include "gyre/rl/rollout/generate_function.h"

namespace gyre::rl {

struct DynamicFilterOutput {
  bool keep = true;
  std::string reason;  // counted as rollout/dynamic_filter/drop_<reason>
};
// remaining: groups kept or still running that may yet be kept; target: --rollout-batch-size.
using DynamicFilter =
    std::function<DynamicFilterOutput(const SampleGroup& group, int64_t remaining, int64_t target)>;
// Built-ins by slime's names: "check_reward_nonzero_std" (keep when the float64 unbiased std of the
// group's rewards > 1e-6; reason zero_std_<first reward rounded to .1>) and
// "check_reward_nonzero_std_with_fallback" (also keeps a rejected group when remaining <= target).
// "path.so[:symbol]" loads a plugin `extern "C" bool symbol(const gyre::rl::SampleGroup*,
// int64_t remaining, int64_t target, std::string* reason)`. "" = no filter.
DynamicFilter load_dynamic_filter(const std::string& spec, const std::string& reward_key);

struct RolloutOptions {
  int64_t rollout_batch_size = 0;
  int64_t n_samples_per_prompt = 1;
  int64_t over_sampling_batch_size = 0;  // 0 = rollout_batch_size
  bool partial_rollout = false;
  int64_t concurrency = 64;  // threads running generate functions
  std::string reward_key;    // --reward-key (for logging raw rewards)
  // Per-group sampling seeds (slime --sglang-enable-deterministic-inference): rollout_seed + i.
  bool deterministic = false;
  uint64_t rollout_seed = 42;
  // Otherwise every sample gets its own seed derived from (base_seed, sample index), so a rollout
  // is reproducible whatever the batch composition (and a resumed run samples what the original
  // did).
  uint64_t base_seed = 1234;
};

// Scores one finished group in place (sets Sample::reward); runs on a worker thread.
using RewardHook = std::function<void(SampleGroup& group)>;

struct RolloutOutput {
  std::vector<Sample> samples;  // kept groups flattened, sorted by index
  std::map<std::string, double> metrics;
};

class RolloutManager {
 public:
  RolloutManager(RolloutOptions options, GenerateContext context, GenerateFunction generate,
                 RewardHook reward, DynamicFilter filter);
  RolloutOutput generate(int64_t rollout_id, DataSource& data);

 private:
  RolloutOptions opt_;
  GenerateContext ctx_;
  GenerateFunction generate_;
  RewardHook reward_;
  DynamicFilter filter_;
};

// rollout/* metrics of a set of samples (raw reward, response lengths, truncation).
std::map<std::string, double> rollout_metrics(const std::vector<Sample>& samples,
                                              const std::string& reward_key);

}  // namespace gyre::rl
