// KL estimators and their derivatives (see kl.h for the formulas and their source).
#include "gyre/rl/algorithms/kl.h"

#include <algorithm>
#include <cmath>

namespace gyre::rl {

KlTerm approx_kl_with_grad(double logp, double logp_base, KlType type, const double* old_logp) {
  const double lr = logp - logp_base;
  KlTerm t;
  switch (type) {
    case KlType::k1: t = {lr, 1.0}; break;
    case KlType::k2: t = {lr * lr / 2.0, lr}; break;
    case KlType::k3:
    case KlType::low_var_kl: {
      // slime negates the log ratio first: kl = exp(-lr) - 1 - (-lr).
      const double e = std::exp(-lr);
      t = {e - 1.0 + lr, 1.0 - e};
      break;
    }
  }
  if (old_logp) {
    const double w = std::exp(logp - *old_logp);  // d w / d logp = w
    t = {w * t.value, w * t.value + w * t.grad};
  }
  if (type == KlType::low_var_kl) {
    // torch.clamp passes the gradient where min <= x <= max (inclusive), zero outside.
    if (t.value > 10.0) t = {10.0, 0.0};
    if (t.value < -10.0) t = {-10.0, 0.0};
  }
  return t;
}

double approx_kl(double logp, double logp_base, KlType type) {
  return approx_kl_with_grad(logp, logp_base, type).value;
}

}  // namespace gyre::rl
