// Flag-value parsing and the cross-flag checks slime's arguments.py performs (validate()).
#include "gyre/rl/algorithms/config.h"

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"

namespace gyre::rl {
namespace {

template <typename E, size_t N>
E parse_choice(const std::string& s, const char* flag,
               const std::pair<const char*, E> (&table)[N]) {
  std::string choices;
  for (const auto& [name, value] : table) {
    if (s == name) return value;
    choices += choices.empty() ? "" : ", ";
    choices += name;
  }
  GYRE_THROW(invalid_argument, "--{}: unknown value '{}'; choose one of: {}", flag, s, choices);
}

constexpr std::pair<const char*, AdvantageEstimator> kEstimators[] = {
    {"grpo", AdvantageEstimator::grpo},
    {"gspo", AdvantageEstimator::gspo},
    {"cispo", AdvantageEstimator::cispo},
    {"reinforce_plus_plus", AdvantageEstimator::reinforce_plus_plus},
    {"reinforce_plus_plus_baseline", AdvantageEstimator::reinforce_plus_plus_baseline},
    {"ppo", AdvantageEstimator::ppo},
};
constexpr std::pair<const char*, KlType> kKlTypes[] = {
    {"k1", KlType::k1}, {"k2", KlType::k2}, {"k3", KlType::k3}, {"low_var_kl", KlType::low_var_kl}};
constexpr std::pair<const char*, LossType> kLossTypes[] = {{"policy_loss", LossType::policy_loss},
                                                           {"value_loss", LossType::value_loss},
                                                           {"sft_loss", LossType::sft_loss}};
constexpr std::pair<const char*, TisFunction> kTisFunctions[] = {
    {"vanilla", TisFunction::vanilla}, {"icepop", TisFunction::icepop}, {"mis", TisFunction::mis}};
constexpr std::pair<const char*, MisLevel> kMisLevels[] = {{"token", MisLevel::token},
                                                           {"sequence", MisLevel::sequence},
                                                           {"geometric", MisLevel::geometric}};
constexpr std::pair<const char*, MisMode> kMisModes[] = {
    {"truncate", MisMode::truncate}, {"clip", MisMode::clip}, {"mask", MisMode::mask}};

template <typename E, size_t N>
const char* name_in(E e, const std::pair<const char*, E> (&table)[N]) {
  for (const auto& [name, value] : table)
    if (value == e) return name;
  return "?";
}

}  // namespace

AdvantageEstimator parse_advantage_estimator(const std::string& s) {
  return parse_choice(s, "advantage-estimator", kEstimators);
}
KlType parse_kl_type(const std::string& s) { return parse_choice(s, "kl-loss-type", kKlTypes); }
LossType parse_loss_type(const std::string& s) { return parse_choice(s, "loss-type", kLossTypes); }
TisFunction parse_tis_function(const std::string& s) {
  return parse_choice(s, "custom-tis-function-path", kTisFunctions);
}
MisLevel parse_mis_level(const std::string& s) { return parse_choice(s, "tis-level", kMisLevels); }
MisMode parse_mis_mode(const std::string& s) { return parse_choice(s, "tis-mode", kMisModes); }
const char* name_of(AdvantageEstimator e) { return name_in(e, kEstimators); }
const char* name_of(KlType k) { return name_in(k, kKlTypes); }
const char* name_of(LossType t) { return name_in(t, kLossTypes); }

void AlgorithmConfig::validate() const {
  if (n_samples_per_prompt < 1)
    GYRE_THROW(invalid_argument, "--n-samples-per-prompt must be >= 1, got {}",
               n_samples_per_prompt);
  if (rollout_batch_size < 0)
    GYRE_THROW(invalid_argument, "--rollout-batch-size must be >= 0, got {}", rollout_batch_size);
  if (kl_coef != 0 && kl_loss_coef != 0)
    GYRE_THROW(invalid_argument,
               "only one of --kl-coef ({}) and --kl-loss-coef ({}) can be non-zero (slime rule); "
               "use --kl-coef for reward shaping or --use-kl-loss --kl-loss-coef for a loss term",
               kl_coef, kl_loss_coef);
  if ((advantage_estimator == AdvantageEstimator::reinforce_plus_plus ||
       advantage_estimator == AdvantageEstimator::reinforce_plus_plus_baseline) &&
      !normalize_advantages)
    GYRE_THROW(invalid_argument,
               "--advantage-estimator {} requires advantage normalization: add "
               "--normalize-advantages",
               name_of(advantage_estimator));
  if (use_rollout_logprobs && use_tis)
    GYRE_THROW(invalid_argument, "--use-rollout-logprobs and --use-tis cannot be set together");
  if (get_mismatch_metrics && tis_function != TisFunction::mis)
    GYRE_THROW(invalid_argument,
               "--get-mismatch-metrics needs the MIS function (--custom-tis-function-path mis)");
  if (eps_clip_c && !(*eps_clip_c > 1.0))
    GYRE_THROW(invalid_argument,
               "--eps-clip-c is the lower bound of dual-clip PPO and must be > 1.0, got {}",
               *eps_clip_c);
  if (!(eps_clip >= 0) || !(eps_clip_high() >= 0))
    GYRE_THROW(invalid_argument, "--eps-clip ({}) and --eps-clip-high ({}) must be >= 0", eps_clip,
               eps_clip_high());
  if (!(value_clip >= 0))
    GYRE_THROW(invalid_argument, "--value-clip must be >= 0, got {}", value_clip);
  if (use_tis && tis_function != TisFunction::mis && !(tis_clip_low <= tis_clip))
    GYRE_THROW(invalid_argument, "--tis-clip-low ({}) must be <= --tis-clip ({})", tis_clip_low,
               tis_clip);
  if (tis_function == TisFunction::mis) {
    if (!(mis.tis_upper_bound > 0))
      GYRE_THROW(invalid_argument, "MIS tis_upper_bound must be > 0, got {}", mis.tis_upper_bound);
    double lo = mis.tis_lower_bound ? *mis.tis_lower_bound : 1.0 / mis.tis_upper_bound;
    if (mis.tis_mode != MisMode::truncate && !(lo < mis.tis_upper_bound))
      GYRE_THROW(invalid_argument, "MIS tis_lower_bound ({}) must be < tis_upper_bound ({})", lo,
                 mis.tis_upper_bound);
    if (mis.tis_batch_normalize && mis.tis_level == MisLevel::geometric)
      GYRE_THROW(invalid_argument,
                 "MIS tis_batch_normalize supports tis_level token or sequence, not geometric");
  }
  if (advantage_estimator == AdvantageEstimator::cispo && eps_clip < 1.0)
    log::warn(
        "CISPO is canonically single-sided, but --eps-clip={} keeps the lower clip bound {} "
        "active. Set --eps-clip 1.0 (and tune --eps-clip-high, e.g. 4.0) for the canonical wide "
        "setting.",
        eps_clip, 1.0 - eps_clip);
}

}  // namespace gyre::rl
