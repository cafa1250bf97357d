// Train-inference mismatch correction (reference/slime.md §1.7): per-token importance weights
// between the trainer's old log-probs and the rollout engine's log-probs, applied to the policy
// loss (they are constants for the gradient). Three functions, as slime:
//   vanilla (--use-tis): w = clamp(exp(old - rollout), tis_clip_low, tis_clip)
//     (Yao et al., "Your efficient RL framework secretly brings you off-policy RL training");
//   icepop: w = ratio inside [tis_clip_low, tis_clip], 0 outside;
//   mis (examples/train_infer_mismatch_helper/mis.py): token / sequence / geometric weights with
//     truncate / clip / mask modes, optional rejection sampling (rs_* bounds, veto threshold) that
//     edits the loss masks, optional batch normalisation to mean 1, and perplexity/chi^2 metrics.
// Metrics are per-token values under slime's names ("tis", "tis_clipfrac", "tis_abs";
// "mis_<key>" for MIS), to be reduced with the ORIGINAL loss masks.
#pragma once
#include <map>
#include <string>

#include "gyre/rl/algorithms/advantages.h"

namespace gyre::rl {

struct ImportanceWeights {
  bool has_weights = false;         // false: metrics only (MIS without --use-tis)
  BatchTokenValues weights;         // multiply the per-token policy loss
  BatchTokenValues modified_masks;  // numerator masks for the policy-loss reduction
  std::map<std::string, BatchTokenValues> metrics;
};

ImportanceWeights compute_importance_weights(const AlgorithmConfig& config,
                                             const BatchTokenValues& train_log_probs,
                                             const BatchTokenValues& rollout_log_probs,
                                             const BatchTokenValues& loss_masks);

}  // namespace gyre::rl
