// TIS / IcePop / MIS importance weights (see importance_sampling.h).
#include "gyre/rl/algorithms/importance_sampling.h"

#include <algorithm>
#include <cmath>

#include "gyre/core/error.h"

namespace gyre::rl {
namespace {

constexpr double kSafetyBound = 20.0;  // mis.py clamps log ratios to avoid exp overflow

double masked_sum(const TokenValues& x, const TokenValues& m) {
  double s = 0;
  for (size_t t = 0; t < x.size(); ++t) s += double(x[t]) * m[t];
  return s;
}
double msum(const TokenValues& m) {
  double s = 0;
  for (float v : m) s += v;
  return s;
}
double masked_mean(const TokenValues& x, const TokenValues& m) {
  return masked_sum(x, m) / std::max(msum(m), 1.0);
}

struct Metrics {
  std::map<std::string, BatchTokenValues>* out;
  void add(const std::string& key, TokenValues v) { (*out)[key].push_back(std::move(v)); }
  void add_const(const std::string& key, double v, size_t n) { add(key, TokenValues(n, float(v))); }
};

TokenValues log_ratio_at_level(const TokenValues& raw, const TokenValues& m, MisLevel level) {
  if (level == MisLevel::token) return raw;
  const double v = level == MisLevel::sequence ? masked_sum(raw, m) : masked_mean(raw, m);
  return TokenValues(raw.size(), float(v));
}

TokenValues safe_exp(const TokenValues& lr) {
  TokenValues w(lr.size());
  for (size_t t = 0; t < lr.size(); ++t)
    w[t] = float(std::exp(std::clamp(double(lr[t]), -kSafetyBound, kSafetyBound)));
  return w;
}

void ppl_metrics(const TokenValues& train, const TokenValues& rollout, const TokenValues& m,
                 Metrics& mt) {
  const size_t n = train.size();
  const double mean_train = masked_mean(train, m), mean_rollout = masked_mean(rollout, m);
  mt.add_const("training_log_ppl", -mean_train, n);
  mt.add_const("training_ppl", std::exp(-mean_train), n);
  mt.add_const("rollout_log_ppl", -mean_rollout, n);
  mt.add_const("rollout_ppl", std::exp(-mean_rollout), n);
  TokenValues kl(n), k3(n), lr(n), rho2(n);
  for (size_t t = 0; t < n; ++t) {
    lr[t] = train[t] - rollout[t];
    kl[t] = rollout[t] - train[t];
    k3[t] = float(std::exp(double(lr[t])) - lr[t] - 1.0);
    const double rho = std::exp(std::clamp(double(lr[t]), -kSafetyBound, kSafetyBound));
    rho2[t] = float(rho * rho);
  }
  mt.add("kl", kl);
  mt.add("k3_kl", k3);
  const double diff = mean_rollout - mean_train;
  mt.add_const("log_ppl_diff", diff, n);
  mt.add_const("log_ppl_abs_diff", std::abs(diff), n);
  mt.add_const("ppl_ratio", std::exp(diff), n);
  mt.add_const("chi2_token", masked_mean(rho2, m) - 1.0, n);
  const double s = std::clamp(masked_sum(lr, m), -kSafetyBound, kSafetyBound);
  mt.add_const("chi2_seq", std::exp(2.0 * s) - 1.0, n);
}

// mis.py mask(): fractions outside [lo, hi]; returns weights*mask and mask*in_range.
void mis_mask(TokenValues* w, TokenValues* mask_io, const TokenValues& loss_mask, double lo,
              double hi, const std::string& prefix, Metrics& mt, bool zero_weights_at_padding) {
  const size_t n = w->size();
  TokenValues low(n), high(n);
  for (size_t t = 0; t < n; ++t) {
    const double v = (*w)[t];
    low[t] = v < lo;
    high[t] = v > hi;
    (*mask_io)[t] = float((*mask_io)[t] * double(v >= lo && v <= hi));
    if (zero_weights_at_padding) (*w)[t] = float(v * loss_mask[t]);
  }
  mt.add(prefix + "mask_fraction_low", low);
  mt.add(prefix + "mask_fraction_high", high);
}

ImportanceWeights mis_weights(const AlgorithmConfig& c, const BatchTokenValues& train,
                              const BatchTokenValues& rollout, const BatchTokenValues& masks) {
  const MisConfig& mc = c.mis;
  ImportanceWeights r;
  std::map<std::string, BatchTokenValues> metrics;
  Metrics mt{&metrics};
  const double tis_lo = mc.tis_lower_bound ? *mc.tis_lower_bound : 1.0 / mc.tis_upper_bound;
  const double rs_lo = mc.rs_lower_bound ? *mc.rs_lower_bound : tis_lo;
  const double rs_hi = mc.rs_upper_bound ? *mc.rs_upper_bound : mc.tis_upper_bound;
  for (size_t i = 0; i < train.size(); ++i) ppl_metrics(train[i], rollout[i], masks[i], mt);
  r.modified_masks = masks;
  if (!c.use_tis) {
    for (auto& [k, v] : metrics) r.metrics["mis_" + k] = std::move(v);
    return r;
  }
  r.has_weights = true;
  for (size_t i = 0; i < train.size(); ++i) {
    const TokenValues& m = masks[i];
    const size_t n = m.size();
    TokenValues raw(n);
    for (size_t t = 0; t < n; ++t) raw[t] = train[i][t] - rollout[i][t];
    TokenValues modified = m;
    const TokenValues lr_tis = log_ratio_at_level(raw, m, mc.tis_level);
    TokenValues w = safe_exp(lr_tis);
    mt.add("tis_weight_before_bound", w);
    switch (mc.tis_mode) {
      case MisMode::truncate: {
        TokenValues frac(n);
        for (size_t t = 0; t < n; ++t) {
          frac[t] = w[t] > mc.tis_upper_bound;
          w[t] = float(std::clamp(double(w[t]), 0.0, mc.tis_upper_bound) * m[t]);
        }
        mt.add("tis_truncate_fraction", frac);
        break;
      }
      case MisMode::clip: {
        TokenValues low(n), high(n);
        for (size_t t = 0; t < n; ++t) {
          low[t] = w[t] < tis_lo;
          high[t] = w[t] > mc.tis_upper_bound;
          w[t] = float(std::clamp(double(w[t]), tis_lo, mc.tis_upper_bound) * m[t]);
        }
        mt.add("tis_clip_fraction_low", low);
        mt.add("tis_clip_fraction_high", high);
        break;
      }
      case MisMode::mask:
        mis_mask(&w, &modified, m, tis_lo, mc.tis_upper_bound, "tis_", mt, true);
        break;
    }
    mt.add("tis_weight_after_bound", w);
    if (mc.use_rs) {
      TokenValues rs_w =
          safe_exp(mc.rs_level == mc.tis_level ? lr_tis : log_ratio_at_level(raw, m, mc.rs_level));
      TokenValues mask_in = modified;
      mis_mask(&rs_w, &modified, mask_in, rs_lo, rs_hi, "rs_", mt, false);
      if (mc.rs_veto_threshold) {
        // Any loss token whose raw ratio is below the threshold rejects the whole sequence.
        const double log_thr = std::log(*mc.rs_veto_threshold);
        TokenValues cat(n);
        bool any = false;
        for (size_t t = 0; t < n; ++t) {
          cat[t] = (raw[t] < log_thr) && m[t] != 0;
          any = any || cat[t] != 0;
        }
        mt.add("rs_catastrophic_token_fraction", cat);
        mt.add_const("rs_catastrophic_seq_fraction", any ? 1.0 : 0.0, n);
        if (any) std::fill(modified.begin(), modified.end(), 0.0f);
      }
    }
    mt.add("is_ratio_mean_after_tis_rs", w);
    r.weights.push_back(std::move(w));
    r.modified_masks[i] = std::move(modified);
  }
  if (mc.tis_batch_normalize && !train.empty()) {
    double mean = 0;
    if (mc.tis_level == MisLevel::token) {
      double ws = 0, ms = 0;
      for (size_t i = 0; i < train.size(); ++i) {
        ws += masked_sum(r.weights[i], masks[i]);
        ms += msum(masks[i]);
      }
      mean = ws / std::max(ms, 1.0);
    } else {
      for (size_t i = 0; i < train.size(); ++i) mean += masked_mean(r.weights[i], masks[i]);
      mean /= double(train.size());
    }
    for (auto& w : r.weights) {
      if (mean > 1e-8)
        for (auto& v : w) v = float(v / mean);
      mt.add_const("batch_norm_factor", mean > 1e-8 ? mean : 1.0, w.size());
    }
  }
  for (size_t i = 0; i < train.size(); ++i) {
    const TokenValues& w = r.weights[i];
    const TokenValues& m = masks[i];
    double lo = 0, hi = 0;
    bool first = true;
    for (size_t t = 0; t < w.size(); ++t)
      if (m[t] != 0) {
        lo = first ? w[t] : std::min(lo, double(w[t]));
        hi = first ? w[t] : std::max(hi, double(w[t]));
        first = false;
      }
    mt.add_const("is_ratio_mean_final", masked_mean(w, m), w.size());
    mt.add_const("is_ratio_min_final", lo, w.size());
    mt.add_const("is_ratio_max_final", hi, w.size());
  }
  for (auto& [k, v] : metrics) r.metrics["mis_" + k] = std::move(v);
  return r;
}

}  // namespace

ImportanceWeights compute_importance_weights(const AlgorithmConfig& config,
                                             const BatchTokenValues& train,
                                             const BatchTokenValues& rollout,
                                             const BatchTokenValues& masks) {
  if (train.size() != masks.size() || rollout.size() != masks.size())
    GYRE_THROW(invalid_argument,
               "importance sampling needs rollout log-probs for every sample: got {} train, {} "
               "rollout log-prob rows for {} samples (did the rollout return log-probs?)",
               train.size(), rollout.size(), masks.size());
  for (size_t i = 0; i < masks.size(); ++i)
    if (train[i].size() != masks[i].size() || rollout[i].size() != masks[i].size())
      GYRE_THROW(invalid_argument,
                 "importance sampling: sample {}: {} train / {} rollout log-probs for {} response "
                 "tokens",
                 i, train[i].size(), rollout[i].size(), masks[i].size());
  if (config.tis_function == TisFunction::mis) return mis_weights(config, train, rollout, masks);

  ImportanceWeights r;
  r.has_weights = true;
  r.modified_masks = masks;
  auto& tis = r.metrics["tis"];
  auto& clipfrac = r.metrics["tis_clipfrac"];
  auto& tis_abs = r.metrics["tis_abs"];
  for (size_t i = 0; i < masks.size(); ++i) {
    const size_t n = masks[i].size();
    TokenValues w(n), raw(n), cf(n), ab(n);
    for (size_t t = 0; t < n; ++t) {
      const double ratio = std::exp(double(train[i][t]) - double(rollout[i][t]));
      double wt;
      if (config.tis_function == TisFunction::vanilla)
        wt = std::clamp(ratio, config.tis_clip_low, config.tis_clip);
      else  // icepop: keep the ratio inside the band, drop the token outside it
        wt = (ratio >= config.tis_clip_low && ratio <= config.tis_clip) ? ratio : 0.0;
      w[t] = float(wt);
      raw[t] = float(ratio);
      cf[t] = wt != ratio;
      ab[t] = float(std::abs(ratio - 1.0));
    }
    r.weights.push_back(std::move(w));
    tis.push_back(std::move(raw));
    clipfrac.push_back(std::move(cf));
    tis_abs.push_back(std::move(ab));
  }
  return r;
}

}  // namespace gyre::rl
