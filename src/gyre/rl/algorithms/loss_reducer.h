// Loss reduction exactly as slime's get_sum_of_sample_mean (reference/slime.md §1.6):
//   default:                     reduce(x) = sum_i sum_t x_it m_it / max(D_i, 1)
//     D_i = rollout_mask_sums[i]: the loss-mask total of every sample sharing sample i's rollout_id
//     (one sample per rollout -> its own mask sum -> per-sample token mean);
//   --calculate-per-token-loss:  reduce(x) = sum_i sum_t x_it m_it.
// The step objective then divides by the step normalizer: the number of rollouts in the step
// (slime's step_global_batch_size; Megatron's num_microbatches / gbs * dp scale cancels the
// averaging over micro-batches and DP ranks) or, per-token, the step's token count
// sum_i max(sum_t m_it, 1) over every micro-batch and DP rank. Passing that normalizer to the loss
// functions makes micro-batch losses, gradients and metrics add up to the step values.
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/rl/algorithms/advantages.h"

namespace gyre::rl {

class LossReducer {
 public:
  // masks: [sample][token]; sample_denoms: empty = each sample's own mask sum; normalizer: the step
  // normalizer described above (1 = slime's raw micro-batch value).
  LossReducer(const BatchTokenValues& masks, const std::vector<double>& sample_denoms,
              bool per_token, double normalizer);
  // sum over samples and tokens of x * weight(i, t)
  double reduce(const BatchTokenValues& x) const;
  // d reduce / d x_it = m_it / max(D_i, 1) / normalizer (per-token: m_it / normalizer)
  double weight(size_t i, size_t t) const { return masks_[i][t] * scale_[i]; }
  size_t num_samples() const { return masks_.size(); }
  const BatchTokenValues& masks() const { return masks_; }
  // A reducer with the same denominators but other numerator masks (slime rebuilds the reducer
  // with TIS/RS-modified masks but keeps rollout_mask_sums as denominators).
  LossReducer with_masks(const BatchTokenValues& masks) const;

 private:
  LossReducer() = default;
  BatchTokenValues masks_;
  std::vector<double> scale_;
};

// D_i for every sample of a step: the sum of loss-mask totals over all samples with the same
// rollout id (slime's rollout_mask_sums; fan-out siblings share one rollout id).
std::vector<double> rollout_mask_sums(const std::vector<int64_t>& rollout_ids,
                                      const BatchTokenValues& masks);
// sum_i max(sum_t m_it, 1): the per-token normalizer contribution of these samples.
double num_loss_tokens(const BatchTokenValues& masks);

}  // namespace gyre::rl
