// Policy / value / SFT losses in the form the trainer's backward needs: the scalar loss, and for
// every response token d loss / d logp (the model's backward starts from per-token log-prob
// gradients, ops::token_logprobs_backward) and d loss / d entropy (entropy bonus), plus the metrics
// slime logs, under slime's names with the "train/" prefix.
//
// Exactly slime's policy_loss_function (reference/slime.md §1.5-1.7, slime/utils/ppo_utils.py):
//   ppo_kl = old_logp - logp per token; GSPO (Zheng et al. 2025, arXiv 2507.18071): the masked
//   sequence mean of (old - new), broadcast to every token of the sequence.
//   ratio = exp(-ppo_kl); L1 = -ratio A; L2 = -clamp(ratio, 1-eps_clip, 1+eps_clip_high) A;
//   L = max(L1, L2), clipfrac = L2 > L1; dual-clip (Ye et al. 2019, arXiv 1912.09729) for A < 0:
//   L = min(-eps_clip_c A, max(L1, L2)).
//   CISPO (MiniMax-M1, arXiv 2506.13585): L = -stopgrad(clamp(ratio)) A logp; clipfrac =
//   clamp(ratio) != ratio.
//   OPSM: zero the tokens with A < 0 of sequences whose masked mean (old - new) > opsm_delta.
//   TIS/MIS weights multiply L (importance_sampling.h); the reducer is rebuilt with their masks.
//   loss = reduce(L) - entropy_coef reduce(entropy) [+ kl_loss_coef reduce(kl(logp, ref))].
// Gradients follow torch's conventions at ties (max/min split the gradient evenly; clamp passes it
// on the closed interval). Old, rollout and reference log-probs are constants.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "gyre/rl/algorithms/config.h"
#include "gyre/rl/algorithms/loss_reducer.h"

namespace gyre::rl {

struct LossBatch {
  BatchTokenValues loss_masks;         // [sample][token], defines response lengths
  BatchTokenValues log_probs;          // current policy log-probs (the differentiated input)
  BatchTokenValues old_log_probs;      // recomputed old policy; empty = detached log_probs
  BatchTokenValues rollout_log_probs;  // engine log-probs (TIS, --use-rollout-logprobs, metrics)
  BatchTokenValues ref_log_probs;      // reference policy (--use-kl-loss)
  BatchTokenValues entropy;            // per-token entropy; empty = not computed (entropy_coef 0)
  BatchTokenValues advantages;
  // value loss only
  BatchTokenValues values;      // current critic values (the differentiated input)
  BatchTokenValues old_values;  // critic values at rollout time
  BatchTokenValues returns;
  // slime's rollout_mask_sums (loss_reducer.h); empty = each sample's own mask sum
  std::vector<double> sample_denoms;
};

struct LossOutput {
  double loss = 0;
  BatchTokenValues grad_log_probs;  // d loss / d logp (policy and SFT losses)
  BatchTokenValues grad_entropy;    // d loss / d entropy (policy loss with entropy)
  BatchTokenValues grad_values;     // d loss / d value (value loss)
  std::map<std::string, double> metrics;
};

// normalizer: the step normalizer of loss_reducer.h (1 = slime's raw micro-batch quantities).
// All three throw gyre::Error naming the field and sample when an input is missing or misshaped.
LossOutput policy_loss(const AlgorithmConfig& config, const LossBatch& batch,
                       double normalizer = 1.0);
// PPO value loss: clip = old + clamp(v - old, +-value_clip); L = max((clip - R)^2, (v - R)^2).
LossOutput value_loss(const AlgorithmConfig& config, const LossBatch& batch,
                      double normalizer = 1.0);
// SFT: L = -reduce(logp).
LossOutput sft_loss(const AlgorithmConfig& config, const LossBatch& batch, double normalizer = 1.0);
// Dispatch on config.loss_type.
LossOutput compute_loss(const AlgorithmConfig& config, const LossBatch& batch,
                        double normalizer = 1.0);

// ---- per-token primitives (slime's compute_policy_loss / compute_cispo_loss) --------------------
struct TokenLoss {
  double loss = 0;
  double clipfrac = 0;
  double grad_ratio = 0;  // d loss / d ratio (PPO); for CISPO: d loss / d logp
};
TokenLoss ppo_clip_token(double ratio, double advantage, double eps_clip, double eps_clip_high,
                         const double* eps_clip_c);
TokenLoss cispo_token(double ratio, double advantage, double logp, double eps_clip,
                      double eps_clip_high);

}  // namespace gyre::rl
