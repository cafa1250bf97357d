// Reward functions (reference/slime.md §1.8): the rule-based rm_hub (math, deepscaler, dapo, f1,
// gpqa, random, with slime's `boxed_` prefix and per-sample metadata["rm_type"] override), a remote
// reward model over HTTP (remote_rm), and user rewards (--custom-rm-path: a shared library with a
// C ABI, or a command speaking JSON lines). make_reward_function() builds one from flags.
//
// Contract: score(inputs) returns one Reward per input, in order. A Reward holds a JSON number or
// object (dapo and remote RMs return objects; --reward-key picks a field, reward_value()). A
// reward that could not be computed for operational reasons (remote RM down after retries,
// custom process crashed / timed out / replied garbage) comes back with `error` set so the caller
// marks that sample failed; bad data (missing label for a reward that needs one, non-finite
// reward, unknown rm_type) throws gyre::Error naming the sample. score() never hangs: every
// external call has a timeout.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gyre::rl::rewards {

struct RewardInput {
  std::string prompt, response;
  nlohmann::json label;     // null = no label
  nlohmann::json metadata;  // object or null
  int64_t index = -1;       // the sample's index, used in messages (position when -1)
};

struct Reward {
  nlohmann::json value;  // number or object; null when error is set
  std::string error;     // non-empty: this sample's reward failed (mark the sample failed)
  bool ok() const { return error.empty(); }
};

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;
  // With --group-rm, `inputs` is one whole group and group-aware functions see it at once.
  virtual std::vector<Reward> score(const std::vector<RewardInput>& inputs) = 0;
};

struct RewardConfig {
  std::string rm_type;                    // --rm-type (may be overridden by metadata.rm_type)
  std::string custom_rm_path;             // --custom-rm-path: *.so library or a command line
  std::string rm_url;                     // --rm-url for remote_rm
  std::optional<std::string> reward_key;  // --reward-key
  bool group_rm = false;                  // --group-rm
  double rm_timeout_s = 120;              // remote_rm total timeout per attempt (aiohttp's 120 s)
  int rm_max_retries = 10;                // remote_rm attempts (slime: 10)
  double rm_backoff_cap_s = 30;           // backoff min(2^k, cap) + U(0,1) s between attempts
  double custom_rm_timeout_s = 60;        // per request to a custom reward process
  uint64_t seed = 42;                     // --rm-type random
};

std::unique_ptr<RewardFunction> make_reward_function(const RewardConfig& config);

// Throws Error naming `rm_type` (a --rm-type value) and the valid names when it names no built-in
// reward; "" passes (no --rm-type). make_reward_function() checks it, and `gyre train` before it
// loads anything, so a typo fails at once rather than as every sample's error after a rollout.
void check_rm_type(const std::string& rm_type);

// Without --rm-type and --custom-rm-path each sample's reward is picked by its metadata.rm_type
// (slime's dispatch). Throws Error naming prompt `index` of `source` when `metadata` has no usable
// rm_type — one that is missing, not a string, empty or not a built-in reward — and the flags that
// would give it one. `gyre train` runs it on every loaded prompt before the models load: such a
// prompt would fail its samples in every rollout.
void check_metadata_rm_type(const nlohmann::json& metadata, size_t index,
                            const std::string& source);

// The scalar reward of sample `index`: the number itself, or field `reward_key` of an object
// (slime's Sample.get_reward_value). Throws gyre::Error naming the sample for a missing key, a
// non-numeric value, or a NaN/inf reward. Booleans count as 0/1 as in Python.
double reward_value(const nlohmann::json& reward, const std::optional<std::string>& reward_key,
                    int64_t index);

// ---- building blocks (exposed for tests)
// --------------------------------------------------------- One built-in rm_type on one input (the
// `boxed_` prefix and metadata override applied by the caller). Throws gyre::Error for a missing
// label or an unknown type.
nlohmann::json builtin_reward(const std::string& rm_type, const RewardInput& in, int64_t index,
                              uint64_t* rng_state);
// Python str() of a JSON label (42 -> "42", 42.0 -> "42.0", "x" -> "x").
std::string python_str(const nlohmann::json& v);

}  // namespace gyre::rl::rewards
