// Advantage estimation, exactly as slime (reference/slime.md §1.4):
//   Step A (rollout side, post_process_rewards): group-normalise the scalar rewards.
//   Step B (trainer side, compute_advantages_and_returns): per-token KL vs the reference policy,
//   then the estimator (grpo / gspo / cispo / reinforce_plus_plus / reinforce_plus_plus_baseline /
//   ppo), then the on-policy-distillation penalty (--use-opd: A -= opd_kl_coef * (logp_student -
//   logp_teacher), tinker-cookbook's reverse-KL-as-advantage), then optional masked whitening
//   (--normalize-advantages).
//
// Data is per sample: one vector per sample, each as long as that sample's response (its loss
// mask). Arithmetic is done in double and stored as float (slime computes in float32; results agree
// to float rounding). Invariants: every output vector has the length of the sample's loss mask;
// inputs whose lengths disagree, a missing input an estimator needs, a fully-masked sample under
// reinforce_plus_plus, or an all-masked batch under whitening raise gyre::Error naming the sample.
#pragma once
#include <vector>

#include "gyre/rl/algorithms/config.h"

namespace gyre::rl {

using TokenValues = std::vector<float>;             // one sample's per-token values
using BatchTokenValues = std::vector<TokenValues>;  // [sample][token]

// Step A. Returns the rewards the trainer uses; raw_rewards are the per-sample scalar rewards in
// rollout order (groups of n_samples_per_prompt contiguous). For grpo/gspo/cispo/
// reinforce_plus_plus_baseline with reward normalisation on: reshape to [-1, n] only when the count
// equals rollout_batch_size * n (otherwise one global group, slime's fallback), subtract the group
// mean, and for grpo/gspo/cispo divide by (unbiased std + 1e-6) unless std normalisation is off.
// Other estimators return raw_rewards unchanged.
std::vector<float> post_process_rewards(const std::vector<double>& raw_rewards,
                                        const AlgorithmConfig& config);

struct AdvantageInputs {
  std::vector<float> rewards;          // post-processed scalar reward per sample (Step A)
  BatchTokenValues loss_masks;         // 0/1 per response token; defines each response length
  BatchTokenValues log_probs;          // actor (old) log-probs; needed when kl_coef != 0
  BatchTokenValues rollout_log_probs;  // used instead of log_probs with --use-rollout-logprobs
  BatchTokenValues ref_log_probs;      // needed when kl_coef != 0
  BatchTokenValues values;             // critic values; needed for ppo
  BatchTokenValues teacher_log_probs;  // needed with --use-opd
};

struct AdvantageOutputs {
  BatchTokenValues kl;          // per-token KL used for reward shaping (zeros when kl_coef == 0)
  BatchTokenValues advantages;  // after optional whitening
  BatchTokenValues returns;     // value targets (ppo) / = unwhitened advantages otherwise
  BatchTokenValues opd_reverse_kl;  // student - teacher log-probs (--use-opd only)
};

AdvantageOutputs compute_advantages_and_returns(const AlgorithmConfig& config,
                                                const AdvantageInputs& in);

// ---- primitives (exposed for tests and for distributed callers) --------------------------------

// G_t = r_t + gamma * G_{t+1}, G_T = 0 (serial scan; slime's chunked scan computes the same).
std::vector<double> discounted_returns(const std::vector<double>& rewards, double gamma);

// GAE (Schulman et al. 2016): delta_t = r_t + gamma V_{t+1} - V_t with V_T = 0,
// A_t = delta_t + gamma lambda A_{t+1}; returns R_t = A_t + V_t.
void gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma,
         double lambd, std::vector<double>* advantages, std::vector<double>* returns);

// Masked whitening statistics. Multi-rank callers all-reduce (sum, sum_sq, count) over the DP x CP
// group between local_whiten_stats() and whiten() — exactly slime's distributed_masked_whiten.
struct WhitenStats {
  double sum = 0, sum_sq = 0, count = 0;
};
WhitenStats local_whiten_stats(const BatchTokenValues& values, const BatchTokenValues& masks);
// a' = (a - mean) * rsqrt(var + 1e-8), var = E[a^2] - mean^2 times n/(n-1) when n >= 2.
// Applied to every token (masked ones too, as slime). Error when stats.count == 0.
void whiten(BatchTokenValues* values, const WhitenStats& stats);

}  // namespace gyre::rl
