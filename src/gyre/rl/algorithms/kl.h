// Per-token KL estimators between the policy and a base policy (Schulman, "Approximating KL
// divergence", http://joschu.net/blog/kl-approx.html), exactly as slime's compute_approx_kl:
//   log_ratio = logp - logp_base
//   k1 = log_ratio;  k2 = log_ratio^2 / 2;  k3 = exp(-log_ratio) - 1 + log_ratio
//   low_var_kl = clamp(k3 [* importance_ratio], -10, 10)   (the clamp only for low_var_kl)
// With --use-unbiased-kl (DeepSeek-V3.2) the estimate is multiplied by the importance ratio
// exp(logp - old_logp) before the clamp, and that ratio is differentiated too (slime does not
// detach it).
#pragma once
#include "gyre/rl/algorithms/config.h"

namespace gyre::rl {

struct KlTerm {
  double value = 0;
  double grad = 0;  // d value / d logp (logp_base and old_logp are constants)
};

// The plain estimate (used for reward shaping, where no gradient is needed).
double approx_kl(double logp, double logp_base, KlType type);
// The estimate and its derivative w.r.t. logp. `old_logp` non-null = unbiased-KL weighting.
KlTerm approx_kl_with_grad(double logp, double logp_base, KlType type,
                           const double* old_logp = nullptr);

}  // namespace gyre::rl
