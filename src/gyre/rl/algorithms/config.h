// Configuration of the RL algorithms (advantage estimators, policy / value / SFT losses, KL,
// off-policy correction), one field per slime flag with slime's name (dashes -> underscores) and
// slime's default, so a slime launch script maps line by line (reference/slime.md §1.4-1.7).
//
// Invariants: a config that passed validate() never makes the algorithm functions throw for
// configuration reasons; eps_clip_high() resolves slime's "None means eps_clip".
#pragma once
#include <optional>
#include <string>

namespace gyre::rl {

enum class AdvantageEstimator {
  grpo,
  gspo,
  cispo,
  reinforce_plus_plus,
  reinforce_plus_plus_baseline,
  ppo
};
enum class KlType { k1, k2, k3, low_var_kl };
enum class LossType { policy_loss, value_loss, sft_loss };
// slime's built-in TIS functions: vanilla_tis_function (default), icepop_function, and the MIS
// example (examples/train_infer_mismatch_helper/mis.py) selected with --custom-tis-function-path.
enum class TisFunction { vanilla, icepop, mis };
// MIS aggregation level and weight handling (mis.yaml: tis_level / tis_mode).
enum class MisLevel { token, sequence, geometric };
enum class MisMode { truncate, clip, mask };

AdvantageEstimator parse_advantage_estimator(const std::string& s);
KlType parse_kl_type(const std::string& s);
LossType parse_loss_type(const std::string& s);
TisFunction parse_tis_function(const std::string& s);
MisLevel parse_mis_level(const std::string& s);
MisMode parse_mis_mode(const std::string& s);
const char* name_of(AdvantageEstimator e);
const char* name_of(KlType k);
const char* name_of(LossType t);

// The MIS options of slime's mis.yaml (all optional there; defaults follow mis.py).
struct MisConfig {
  MisLevel tis_level = MisLevel::token;
  MisMode tis_mode = MisMode::truncate;
  std::optional<double> tis_lower_bound;  // None -> 1 / tis_upper_bound
  double tis_upper_bound = 2.0;
  bool use_rs = false;
  MisLevel rs_level = MisLevel::token;
  std::optional<double> rs_lower_bound;  // None -> tis lower bound
  std::optional<double> rs_upper_bound;  // None -> tis_upper_bound
  std::optional<double> rs_veto_threshold;
  bool tis_batch_normalize = false;
};

struct AlgorithmConfig {
  // --- advantages / rewards (slime.md §1.4)
  AdvantageEstimator advantage_estimator = AdvantageEstimator::grpo;
  int n_samples_per_prompt = 1;
  int rollout_batch_size = 0;  // 0 = unknown: the whole batch is one group (slime's fallback)
  bool disable_rewards_normalization = false;
  bool disable_grpo_std_normalization = false;
  bool normalize_advantages = false;
  double gamma = 1.0;
  double lambd = 1.0;
  double kl_coef = 0.0;  // reward shaping (ppo, reinforce++ variants only)
  // On-policy distillation (slime §1.16, --use-opd --opd-kl-coef): A -= coef * (student - teacher)
  bool use_opd = false;
  double opd_kl_coef = 0.0;
  // --- KL loss (§1.5)
  bool use_kl_loss = false;
  double kl_loss_coef = 0.0;
  KlType kl_loss_type = KlType::k1;
  bool use_unbiased_kl = false;
  // --- policy loss
  LossType loss_type = LossType::policy_loss;
  double eps_clip = 0.2;
  std::optional<double> eps_clip_high_opt;  // --eps-clip-high; None -> eps_clip
  std::optional<double> eps_clip_c;         // dual-clip lower bound, must be > 1
  double entropy_coef = 0.0;
  double value_clip = 0.2;
  bool use_opsm = false;
  double opsm_delta = 1e-4;
  // --- off-policy correction (§1.7)
  bool use_tis = false;
  double tis_clip = 2.0;
  double tis_clip_low = 0.0;
  TisFunction tis_function = TisFunction::vanilla;
  bool get_mismatch_metrics = false;
  bool use_rollout_logprobs = false;
  MisConfig mis;
  // --- reduction (§1.6)
  bool calculate_per_token_loss = false;

  double eps_clip_high() const { return eps_clip_high_opt ? *eps_clip_high_opt : eps_clip; }
  bool rewards_normalization() const { return !disable_rewards_normalization; }
  // slime turns GRPO std normalisation off when n_samples_per_prompt == 1 (arguments.py).
  bool grpo_std_normalization() const {
    return !disable_grpo_std_normalization && n_samples_per_prompt != 1;
  }
  // Throws gyre::Error(invalid_argument) naming the flag for every combination slime rejects.
  void validate() const;
};

}  // namespace gyre::rl
