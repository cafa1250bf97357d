// Advantage estimators and reward post-processing (formulas and sources in advantages.h).
#include "gyre/rl/algorithms/advantages.h"

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/rl/algorithms/kl.h"

namespace gyre::rl {
namespace {

bool is_group_normalised(AdvantageEstimator e) {
  return e == AdvantageEstimator::grpo || e == AdvantageEstimator::gspo ||
         e == AdvantageEstimator::cispo || e == AdvantageEstimator::reinforce_plus_plus_baseline;
}

bool divides_by_std(AdvantageEstimator e) {
  return e == AdvantageEstimator::grpo || e == AdvantageEstimator::gspo ||
         e == AdvantageEstimator::cispo;
}

void check_lengths(const BatchTokenValues& xs, const BatchTokenValues& masks, const char* what) {
  if (xs.size() != masks.size())
    GYRE_THROW(invalid_argument, "advantages: {} has {} samples but loss_masks has {}", what,
               xs.size(), masks.size());
  for (size_t i = 0; i < xs.size(); ++i)
    if (xs[i].size() != masks[i].size())
      GYRE_THROW(invalid_argument,
                 "advantages: sample {}: {} has {} tokens but its loss mask has {} (both must "
                 "cover exactly the response tokens)",
                 i, what, xs[i].size(), masks[i].size());
}

TokenValues to_float(const std::vector<double>& v) { return TokenValues(v.begin(), v.end()); }

}  // namespace

std::vector<float> post_process_rewards(const std::vector<double>& raw,
                                        const AlgorithmConfig& config) {
  for (size_t i = 0; i < raw.size(); ++i)
    if (!std::isfinite(raw[i]))
      GYRE_THROW(invalid_argument, "reward of sample {} is {}; rewards must be finite", i, raw[i]);
  std::vector<float> out(raw.begin(), raw.end());
  if (!is_group_normalised(config.advantage_estimator) || !config.rewards_normalization() ||
      raw.empty())
    return out;
  const size_t n = size_t(config.n_samples_per_prompt);
  // slime reshapes to [-1, n] only when the count is exactly rollout_batch_size * n (fan-out or
  // custom rollouts otherwise) and then treats the whole batch as a single group.
  const size_t group =
      (config.rollout_batch_size > 0 && raw.size() == n * config.rollout_batch_size) ? n
                                                                                     : raw.size();
  const bool use_std =
      divides_by_std(config.advantage_estimator) && config.grpo_std_normalization();
  for (size_t g0 = 0; g0 < raw.size(); g0 += group) {
    double mean = 0;
    for (size_t j = 0; j < group; ++j) mean += raw[g0 + j];
    mean /= double(group);
    double denom = 1.0;
    if (use_std) {
      if (group < 2)
        GYRE_THROW(invalid_argument,
                   "GRPO std normalisation of a group of 1 sample (sample {}) is undefined "
                   "(unbiased std); set --n-samples-per-prompt > 1 or pass "
                   "--disable-grpo-std-normalization",
                   g0);
      double ss = 0;
      for (size_t j = 0; j < group; ++j) ss += (raw[g0 + j] - mean) * (raw[g0 + j] - mean);
      denom = std::sqrt(ss / double(group - 1)) + 1e-6;  // torch.std default: unbiased (N-1)
    }
    for (size_t j = 0; j < group; ++j) out[g0 + j] = float((raw[g0 + j] - mean) / denom);
  }
  return out;
}

std::vector<double> discounted_returns(const std::vector<double>& r, double gamma) {
  std::vector<double> g(r.size());
  double next = 0;
  for (size_t t = r.size(); t-- > 0;) next = g[t] = r[t] + gamma * next;
  return g;
}

void gae(const std::vector<double>& r, const std::vector<double>& v, double gamma, double lambd,
         std::vector<double>* adv, std::vector<double>* ret) {
  GYRE_CHECK(r.size() == v.size(), "gae: {} rewards vs {} values", r.size(), v.size());
  adv->assign(r.size(), 0.0);
  ret->assign(r.size(), 0.0);
  double last = 0;
  for (size_t t = r.size(); t-- > 0;) {
    const double next_v = t + 1 < r.size() ? v[t + 1] : 0.0;
    const double delta = r[t] + gamma * next_v - v[t];
    last = delta + gamma * lambd * last;
    (*adv)[t] = last;
    (*ret)[t] = last + v[t];
  }
}

WhitenStats local_whiten_stats(const BatchTokenValues& values, const BatchTokenValues& masks) {
  check_lengths(values, masks, "advantages");
  WhitenStats s;
  for (size_t i = 0; i < values.size(); ++i)
    for (size_t t = 0; t < values[i].size(); ++t) {
      const double a = values[i][t], m = masks[i][t];
      s.sum += a * m;
      s.sum_sq += a * a * m;
      s.count += m;
    }
  return s;
}

void whiten(BatchTokenValues* values, const WhitenStats& s) {
  if (s.count == 0)
    GYRE_THROW(invalid_argument,
               "--normalize-advantages: the loss masks of the whole batch sum to zero, so there "
               "is nothing to whiten; check that responses have trainable tokens");
  const double mean = s.sum / s.count;
  double var = s.sum_sq / s.count - mean * mean;
  if (s.count >= 2) var *= s.count / (s.count - 1);  // Bessel's correction, as slime
  const double inv = 1.0 / std::sqrt(var + 1e-8);
  for (auto& v : *values)
    for (auto& a : v) a = float((a - mean) * inv);
}

AdvantageOutputs compute_advantages_and_returns(const AlgorithmConfig& config,
                                                const AdvantageInputs& in) {
  const auto& masks = in.loss_masks;
  const size_t b = masks.size();
  if (in.rewards.size() != b)
    GYRE_THROW(invalid_argument, "advantages: {} rewards for {} samples (loss_masks)",
               in.rewards.size(), b);
  AdvantageOutputs out;

  // Per-token KL for reward shaping; zeros when kl_coef == 0 (slime then skips the ref model).
  const BatchTokenValues& lp = config.use_rollout_logprobs ? in.rollout_log_probs : in.log_probs;
  out.kl.resize(b);
  if (config.kl_coef == 0 || lp.empty()) {
    for (size_t i = 0; i < b; ++i) out.kl[i].assign(masks[i].size(), 0.0f);
  } else {
    check_lengths(lp, masks, config.use_rollout_logprobs ? "rollout_log_probs" : "log_probs");
    check_lengths(in.ref_log_probs, masks, "ref_log_probs (needed for --kl-coef != 0)");
    for (size_t i = 0; i < b; ++i) {
      out.kl[i].resize(masks[i].size());
      for (size_t t = 0; t < masks[i].size(); ++t)
        out.kl[i][t] = float(approx_kl(lp[i][t], in.ref_log_probs[i][t], config.kl_loss_type));
    }
  }

  out.advantages.resize(b);
  out.returns.resize(b);
  const double kc = config.kl_coef;
  switch (config.advantage_estimator) {
    case AdvantageEstimator::grpo:
    case AdvantageEstimator::gspo:
    case AdvantageEstimator::cispo:
      // The normalised scalar reward broadcast to every response token; kl_coef is ignored.
      for (size_t i = 0; i < b; ++i) out.returns[i].assign(masks[i].size(), in.rewards[i]);
      break;
    case AdvantageEstimator::ppo: {
      check_lengths(in.values, masks, "values (critic, required by ppo)");
      for (size_t i = 0; i < b; ++i) {
        const size_t n = masks[i].size();
        if (n == 0) continue;
        // Token rewards -kl_coef * kl (unmasked, as slime) plus the reward on the last token.
        std::vector<double> r(n), v(in.values[i].begin(), in.values[i].end()), a, ret;
        for (size_t t = 0; t < n; ++t) r[t] = -kc * out.kl[i][t];
        r[n - 1] += in.rewards[i];
        gae(r, v, config.gamma, config.lambd, &a, &ret);
        out.advantages[i] = to_float(a);
        out.returns[i] = to_float(ret);
      }
      break;
    }
    case AdvantageEstimator::reinforce_plus_plus:
      // REINFORCE++ (arXiv 2501.03262): token rewards -kl_coef * kl * mask, scalar reward at the
      // last masked token, discounted return G_t.
      for (size_t i = 0; i < b; ++i) {
        const size_t n = masks[i].size();
        std::vector<double> r(n);
        long last = -1;
        for (size_t t = 0; t < n; ++t) {
          r[t] = -kc * (double(out.kl[i][t]) * masks[i][t]);
          if (masks[i][t] != 0) last = long(t);
        }
        if (last < 0)
          GYRE_THROW(invalid_argument,
                     "reinforce_plus_plus: sample {} is fully masked (its loss mask has no "
                     "trainable token), so its reward has no token to go to; drop the sample",
                     i);
        r[size_t(last)] += in.rewards[i];
        out.returns[i] = to_float(discounted_returns(r, config.gamma));
      }
      break;
    case AdvantageEstimator::reinforce_plus_plus_baseline:
      // (reward - group mean) broadcast, minus kl_coef * kl per token.
      for (size_t i = 0; i < b; ++i) {
        out.returns[i].resize(masks[i].size());
        for (size_t t = 0; t < masks[i].size(); ++t)
          out.returns[i][t] = float(double(in.rewards[i]) - kc * out.kl[i][t]);
      }
      break;
  }
  if (config.advantage_estimator != AdvantageEstimator::ppo) out.advantages = out.returns;

  if (config.use_opd && !lp.empty()) {
    check_lengths(lp, masks, config.use_rollout_logprobs ? "rollout_log_probs" : "log_probs");
    check_lengths(in.teacher_log_probs, masks, "teacher_log_probs (needed by --use-opd)");
    out.opd_reverse_kl.resize(b);
    for (size_t i = 0; i < b; ++i) {
      out.opd_reverse_kl[i].resize(masks[i].size());
      for (size_t t = 0; t < masks[i].size(); ++t) {
        const double rkl = double(lp[i][t]) - in.teacher_log_probs[i][t];
        out.opd_reverse_kl[i][t] = float(rkl);
        out.advantages[i][t] = float(out.advantages[i][t] - config.opd_kl_coef * rkl);
      }
    }
    // slime's reinforce_plus_plus_baseline returns alias the advantages list, so they see the
    // penalty too; the other estimators keep their returns.
    if (config.advantage_estimator == AdvantageEstimator::reinforce_plus_plus_baseline)
      out.returns = out.advantages;
  }

  if (config.normalize_advantages)
    whiten(&out.advantages, local_whiten_stats(out.advantages, masks));
  return out;
}

}  // namespace gyre::rl
