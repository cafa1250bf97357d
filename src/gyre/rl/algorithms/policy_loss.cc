// Policy, value and SFT losses with per-token gradients (formulas and sources in policy_loss.h).
#include "gyre/rl/algorithms/policy_loss.h"

#include <algorithm>
#include <cmath>

#include "gyre/core/error.h"
#include "gyre/rl/algorithms/importance_sampling.h"
#include "gyre/rl/algorithms/kl.h"

namespace gyre::rl {
namespace {

void check_shape(const BatchTokenValues& x, const BatchTokenValues& masks, const char* what,
                 const char* why) {
  if (x.size() != masks.size())
    GYRE_THROW(invalid_argument, "loss: {} has {} samples, loss_masks has {}{}", what, x.size(),
               masks.size(), why);
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].size() != masks[i].size())
      GYRE_THROW(invalid_argument,
                 "loss: sample {}: {} has {} tokens but the loss mask has {} (one value per "
                 "response token)",
                 i, what, x[i].size(), masks[i].size());
}

BatchTokenValues zeros_like(const BatchTokenValues& m) {
  BatchTokenValues z(m.size());
  for (size_t i = 0; i < m.size(); ++i) z[i].assign(m[i].size(), 0.0f);
  return z;
}

double mask_total(const TokenValues& m) {
  double s = 0;
  for (float v : m) s += v;
  return s;
}

}  // namespace

TokenLoss ppo_clip_token(double ratio, double a, double eps_clip, double eps_clip_high,
                         const double* eps_clip_c) {
  const double lo = 1.0 - eps_clip, hi = 1.0 + eps_clip_high;
  const double clamped = std::clamp(ratio, lo, hi);
  const bool in_range = ratio >= lo && ratio <= hi;
  const double l1 = -ratio * a, l2 = -clamped * a;
  const double c1 = std::max(l1, l2);
  // d max(L1, L2) / d ratio: L1 contributes -A; L2 contributes -A only inside the clamp range.
  // Inside the range L1 == L2 and torch splits evenly, which sums to -A again.
  double g = 0;
  if (l1 > l2)
    g = -a;
  else if (l1 == l2)
    g = 0.5 * (-a) + 0.5 * (in_range ? -a : 0.0);
  TokenLoss t{c1, l2 > l1 ? 1.0 : 0.0, g};
  if (eps_clip_c && a < 0) {
    const double l3 = -(*eps_clip_c) * a;
    if (l3 < c1)
      t.loss = l3, t.grad_ratio = 0;
    else if (l3 == c1)
      t.grad_ratio *= 0.5;
  }
  return t;
}

TokenLoss cispo_token(double ratio, double a, double logp, double eps_clip, double eps_clip_high) {
  const double clamped = std::clamp(ratio, 1.0 - eps_clip, 1.0 + eps_clip_high);
  // The truncated ratio is a stop-gradient weight: the gradient flows through logp only.
  return {-clamped * a * logp, clamped != ratio ? 1.0 : 0.0, -clamped * a};
}

LossOutput policy_loss(const AlgorithmConfig& c, const LossBatch& b, double normalizer) {
  const auto& masks = b.loss_masks;
  const size_t n = masks.size();
  check_shape(b.log_probs, masks, "log_probs", "");
  check_shape(b.advantages, masks, "advantages", "");
  // Old policy: rollout log-probs with --use-rollout-logprobs, else the recomputed old log-probs,
  // else the detached current log-probs (slime reuses them; ppo_kl is then exactly 0).
  const BatchTokenValues* old = &b.log_probs;
  if (c.use_rollout_logprobs) {
    check_shape(b.rollout_log_probs, masks, "rollout_log_probs", " (--use-rollout-logprobs)");
    old = &b.rollout_log_probs;
  } else if (!b.old_log_probs.empty()) {
    check_shape(b.old_log_probs, masks, "old_log_probs", "");
    old = &b.old_log_probs;
  }
  const BatchTokenValues& train_lp_for_tis =
      b.old_log_probs.empty() ? b.log_probs : b.old_log_probs;
  const bool gspo = c.advantage_estimator == AdvantageEstimator::gspo;
  const bool cispo = c.advantage_estimator == AdvantageEstimator::cispo;
  const double eps_c = c.eps_clip_c ? *c.eps_clip_c : 0.0;

  // Sequence-level quantities (GSPO ratio and OPSM use the masked sequence mean of old - new).
  std::vector<double> seq_kl(n, 0.0), seq_len(n, 1.0);
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t t = 0; t < masks[i].size(); ++t)
      s += (double((*old)[i][t]) - b.log_probs[i][t]) * masks[i][t];
    seq_len[i] = std::max(mask_total(masks[i]), 1.0);
    seq_kl[i] = s / seq_len[i];
  }

  BatchTokenValues pg(n), clipfrac(n), ppo_kl(n), ratio_b(n), dpg(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t len = masks[i].size();
    pg[i].resize(len), clipfrac[i].resize(len), ppo_kl[i].resize(len), ratio_b[i].resize(len);
    dpg[i].resize(len);
    for (size_t t = 0; t < len; ++t) {
      const double kl = gspo ? seq_kl[i] : double((*old)[i][t]) - b.log_probs[i][t];
      const double ratio = std::exp(-kl);
      const double a = b.advantages[i][t];
      TokenLoss tl = cispo ? cispo_token(ratio, a, b.log_probs[i][t], c.eps_clip, c.eps_clip_high())
                           : ppo_clip_token(ratio, a, c.eps_clip, c.eps_clip_high(),
                                            c.eps_clip_c ? &eps_c : nullptr);
      pg[i][t] = float(tl.loss);
      clipfrac[i][t] = float(tl.clipfrac);
      ppo_kl[i][t] = float(kl);
      ratio_b[i][t] = float(ratio);
      dpg[i][t] = float(tl.grad_ratio);  // d L / d ratio (PPO) or d L / d logp (CISPO)
    }
  }

  // OPSM: per-token mask 0 where A < 0 in a sequence that drifted more than delta.
  double opsm_clipfrac = 0;
  BatchTokenValues token_scale(n);  // constant per-token multipliers of L (OPSM x TIS weights)
  for (size_t i = 0; i < n; ++i) token_scale[i].assign(masks[i].size(), 1.0f);
  if (c.use_opsm) {
    for (size_t i = 0; i < n; ++i) {
      double masked = 0;
      for (size_t t = 0; t < masks[i].size(); ++t)
        if (b.advantages[i][t] < 0 && seq_kl[i] > c.opsm_delta) {
          token_scale[i][t] = 0;
          masked += 1;
        }
      opsm_clipfrac += masked / seq_len[i];
    }
  }

  LossReducer reducer(masks, b.sample_denoms, c.calculate_per_token_loss, normalizer);
  const LossReducer metric_reducer = reducer;
  LossOutput out;
  std::map<std::string, BatchTokenValues> is_metrics;
  if (c.use_tis || c.get_mismatch_metrics) {
    check_shape(b.rollout_log_probs, masks, "rollout_log_probs", " (required by TIS/MIS)");
    ImportanceWeights iw =
        compute_importance_weights(c, train_lp_for_tis, b.rollout_log_probs, masks);
    if (iw.has_weights)
      for (size_t i = 0; i < n; ++i)
        for (size_t t = 0; t < masks[i].size(); ++t) token_scale[i][t] *= iw.weights[i][t];
    reducer = reducer.with_masks(iw.modified_masks);
    is_metrics = std::move(iw.metrics);
    BatchTokenValues ois = ratio_b;  // exp(-ppo_kl)
    out.metrics["train/ois"] = metric_reducer.reduce(ois);
  }

  BatchTokenValues pg_scaled = pg;
  for (size_t i = 0; i < n; ++i)
    for (size_t t = 0; t < masks[i].size(); ++t) pg_scaled[i][t] *= token_scale[i][t];
  const double pg_loss = reducer.reduce(pg_scaled);

  // Gradient of reduce(L * scale) w.r.t. logp.
  out.grad_log_probs = zeros_like(masks);
  for (size_t i = 0; i < n; ++i) {
    double gspo_acc = 0;  // sum_s w_s * dL_s/dratio (every token's ratio depends on all logp)
    for (size_t t = 0; t < masks[i].size(); ++t) {
      const double w = reducer.weight(i, t) * token_scale[i][t];
      if (cispo)
        out.grad_log_probs[i][t] = float(w * dpg[i][t]);
      else if (gspo)
        gspo_acc += w * dpg[i][t];
      else
        out.grad_log_probs[i][t] = float(w * dpg[i][t] * ratio_b[i][t]);  // d ratio/d logp = ratio
    }
    if (gspo && !masks[i].empty()) {
      // ratio = exp(mean_t((logp_t - old_t) m_t)): d ratio / d logp_t = ratio m_t / max(sum m, 1).
      const double r = std::exp(-seq_kl[i]);
      for (size_t t = 0; t < masks[i].size(); ++t)
        out.grad_log_probs[i][t] = float(gspo_acc * r * masks[i][t] / seq_len[i]);
    }
  }

  double loss = pg_loss;
  out.metrics["train/pg_loss"] = pg_loss;
  out.metrics["train/pg_clipfrac"] = reducer.reduce(clipfrac);
  out.metrics["train/ppo_kl"] = reducer.reduce(ppo_kl);

  if (!b.entropy.empty()) {
    check_shape(b.entropy, masks, "entropy", "");
    const double entropy_loss = reducer.reduce(b.entropy);
    out.metrics["train/entropy_loss"] = entropy_loss;
    loss -= c.entropy_coef * entropy_loss;
    out.grad_entropy = zeros_like(masks);
    for (size_t i = 0; i < n; ++i)
      for (size_t t = 0; t < masks[i].size(); ++t)
        out.grad_entropy[i][t] = float(-c.entropy_coef * reducer.weight(i, t));
  } else if (c.entropy_coef != 0) {
    GYRE_THROW(invalid_argument,
               "loss: --entropy-coef {} needs per-token entropy, but the batch has none; compute "
               "entropy in the forward pass",
               c.entropy_coef);
  }

  if (c.use_kl_loss) {
    check_shape(b.ref_log_probs, masks, "ref_log_probs", " (required by --use-kl-loss)");
    BatchTokenValues kl(n);
    for (size_t i = 0; i < n; ++i) {
      kl[i].resize(masks[i].size());
      for (size_t t = 0; t < masks[i].size(); ++t) {
        const double old_lp = (*old)[i][t];
        const KlTerm k = approx_kl_with_grad(b.log_probs[i][t], b.ref_log_probs[i][t],
                                             c.kl_loss_type, c.use_unbiased_kl ? &old_lp : nullptr);
        kl[i][t] = float(k.value);
        out.grad_log_probs[i][t] += float(c.kl_loss_coef * reducer.weight(i, t) * k.grad);
      }
    }
    const double kl_loss = reducer.reduce(kl);
    out.metrics["train/kl_loss"] = kl_loss;
    loss += c.kl_loss_coef * kl_loss;
  }

  if (!b.rollout_log_probs.empty()) {
    check_shape(b.rollout_log_probs, masks, "rollout_log_probs", "");
    const BatchTokenValues& cmp = c.use_rollout_logprobs ? b.log_probs : *old;
    BatchTokenValues diff(n);
    for (size_t i = 0; i < n; ++i) {
      diff[i].resize(masks[i].size());
      for (size_t t = 0; t < masks[i].size(); ++t)
        diff[i][t] = std::abs(cmp[i][t] - b.rollout_log_probs[i][t]);
    }
    out.metrics["train/train_rollout_logprob_abs_diff"] = reducer.reduce(diff);
  }
  for (const auto& [key, values] : is_metrics)
    out.metrics["train/" + key] = metric_reducer.reduce(values);
  if (c.use_opsm) out.metrics["train/opsm_clipfrac"] = opsm_clipfrac / normalizer;
  out.loss = loss;
  out.metrics["train/loss"] = loss;
  return out;
}

LossOutput value_loss(const AlgorithmConfig& c, const LossBatch& b, double normalizer) {
  const auto& masks = b.loss_masks;
  check_shape(b.values, masks, "values", " (value loss)");
  check_shape(b.old_values, masks, "old_values", " (value loss)");
  check_shape(b.returns, masks, "returns", " (value loss)");
  const LossReducer reducer(masks, b.sample_denoms, c.calculate_per_token_loss, normalizer);
  const size_t n = masks.size();
  BatchTokenValues loss(n), clipfrac(n);
  LossOutput out;
  out.grad_values = zeros_like(masks);
  for (size_t i = 0; i < n; ++i) {
    loss[i].resize(masks[i].size());
    clipfrac[i].resize(masks[i].size());
    for (size_t t = 0; t < masks[i].size(); ++t) {
      const double v = b.values[i][t], old = b.old_values[i][t], ret = b.returns[i][t];
      const double d = v - old;
      const bool inside = d >= -c.value_clip && d <= c.value_clip;
      const double clipped = old + std::clamp(d, -c.value_clip, c.value_clip);
      const double s1 = (clipped - ret) * (clipped - ret), s2 = (v - ret) * (v - ret);
      const double g1 = inside ? 2 * (clipped - ret) : 0.0, g2 = 2 * (v - ret);
      loss[i][t] = float(std::max(s1, s2));
      clipfrac[i][t] = std::abs(d) > c.value_clip;
      const double g = s1 > s2 ? g1 : s2 > s1 ? g2 : 0.5 * (g1 + g2);
      out.grad_values[i][t] = float(g * reducer.weight(i, t));
    }
  }
  out.loss = reducer.reduce(loss);
  out.metrics["train/value_loss"] = out.loss;
  out.metrics["train/value_clipfrac"] = reducer.reduce(clipfrac);
  return out;
}

LossOutput sft_loss(const AlgorithmConfig& c, const LossBatch& b, double normalizer) {
  const auto& masks = b.loss_masks;
  check_shape(b.log_probs, masks, "log_probs", " (sft loss)");
  const LossReducer reducer(masks, b.sample_denoms, c.calculate_per_token_loss, normalizer);
  LossOutput out;
  out.loss = -reducer.reduce(b.log_probs);
  out.grad_log_probs = zeros_like(masks);
  for (size_t i = 0; i < masks.size(); ++i)
    for (size_t t = 0; t < masks[i].size(); ++t)
      out.grad_log_probs[i][t] = float(-reducer.weight(i, t));
  out.metrics["train/loss"] = out.loss;
  return out;
}

LossOutput compute_loss(const AlgorithmConfig& c, const LossBatch& b, double normalizer) {
  switch (c.loss_type) {
    case LossType::policy_loss: return policy_loss(c, b, normalizer);
    case LossType::value_loss: return value_loss(c, b, normalizer);
    case LossType::sft_loss: return sft_loss(c, b, normalizer);
  }
  GYRE_THROW(internal, "unknown loss type");
}

}  // namespace gyre::rl
