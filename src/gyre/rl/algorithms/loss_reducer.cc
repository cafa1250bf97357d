// slime's per-sample / per-rollout / per-token loss reduction (see loss_reducer.h).
#include "gyre/rl/algorithms/loss_reducer.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "gyre/core/error.h"

namespace gyre::rl {
namespace {
double mask_sum(const TokenValues& m) {
  double s = 0;
  for (float v : m) s += v;
  return s;
}
}  // namespace

LossReducer::LossReducer(const BatchTokenValues& masks, const std::vector<double>& sample_denoms,
                         bool per_token, double normalizer)
    : masks_(masks) {
  if (!(normalizer > 0) || !std::isfinite(normalizer))
    GYRE_THROW(invalid_argument, "loss normalizer must be a positive number, got {}", normalizer);
  if (!sample_denoms.empty() && sample_denoms.size() != masks.size())
    GYRE_THROW(invalid_argument, "loss reduction: {} sample denominators for {} samples",
               sample_denoms.size(), masks.size());
  scale_.resize(masks.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    const double d = sample_denoms.empty() ? mask_sum(masks[i]) : sample_denoms[i];
    scale_[i] = per_token ? 1.0 / normalizer : 1.0 / (std::max(d, 1.0) * normalizer);
  }
}

LossReducer LossReducer::with_masks(const BatchTokenValues& masks) const {
  GYRE_CHECK(masks.size() == masks_.size(), "{} vs {} samples", masks.size(), masks_.size());
  LossReducer r;
  r.masks_ = masks;
  r.scale_ = scale_;
  return r;
}

double LossReducer::reduce(const BatchTokenValues& x) const {
  GYRE_CHECK(x.size() == masks_.size(), "reduce: {} samples vs {} masks", x.size(), masks_.size());
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    GYRE_CHECK(x[i].size() == masks_[i].size(), "reduce: sample {} has {} values vs {} mask", i,
               x[i].size(), masks_[i].size());
    double s = 0;
    for (size_t t = 0; t < x[i].size(); ++t) s += double(x[i][t]) * masks_[i][t];
    total += s * scale_[i];
  }
  return total;
}

std::vector<double> rollout_mask_sums(const std::vector<int64_t>& rollout_ids,
                                      const BatchTokenValues& masks) {
  if (rollout_ids.size() != masks.size())
    GYRE_THROW(invalid_argument, "rollout_mask_sums: {} rollout ids for {} samples",
               rollout_ids.size(), masks.size());
  std::unordered_map<int64_t, double> sums;
  for (size_t i = 0; i < masks.size(); ++i) sums[rollout_ids[i]] += mask_sum(masks[i]);
  std::vector<double> out(masks.size());
  for (size_t i = 0; i < masks.size(); ++i) out[i] = sums[rollout_ids[i]];
  return out;
}

double num_loss_tokens(const BatchTokenValues& masks) {
  double n = 0;
  for (const auto& m : masks) n += std::max(mask_sum(m), 1.0);
  return n;
}

}  // namespace gyre::rl
