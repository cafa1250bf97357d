// CPU reference of the vocabulary-chunked log-prob ops (ops.h logprob_chunk_*): per-row online
// softmax statistics folded chunk by chunk, their finish into logp / entropy / lse, and the
// per-chunk gradient. One task per row, sums in double, so results are bitwise independent of the
// thread count and agree with token_logprobs over the whole row to ~1e-7 relative.
#include <algorithm>
#include <cmath>
#include <limits>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
int64_t rows_per_task(int64_t C) {
  return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(C, 1));
}
template <typename T>
bool any_nan(const T* x, int64_t C) {
  for (int64_t j = 0; j < C; ++j)
    if (std::isnan(x[j])) return true;
  return false;
}
}  // namespace

template <typename T>
void logprob_chunk_stats(const T* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                         T temperature, bool accumulate, T* stats) {
  const T mul = T(1) / temperature;
  parallel_for(n, rows_per_task(C), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* xr = x + t * C;
      T* st = stats + t * 4;
      // This chunk alone: mc = max z (mul > 0, so max(x·mul) = max(x)·mul exactly),
      // sc = Σ exp(z - mc), wc = Σ exp(z - mc)(z - mc).
      const T mc = vec::row_max(xr, C) * mul;
      double wc = 0;
      // A chunk whose logits are all -inf (masked) holds no mass: (mc, 0, 0), which the fold
      // below skips (exp(-inf - -inf) would be NaN). row_max skips NaN, so a chunk of -inf and
      // NaN also lands here: its s is NaN, as a NaN anywhere else in a chunk makes it, so the
      // row's result is NaN whatever the chunking.
      const double sc = mc == -std::numeric_limits<T>::infinity()
                            ? (any_nan(xr, C) ? std::numeric_limits<double>::quiet_NaN() : 0.0)
                            : vec::exp_sum<T>(xr, C, mul, mc, nullptr, &wc);
      const int64_t j = int64_t(targets[t]) - v0;
      const bool has_target = j >= 0 && j < C;
      if (!accumulate) {
        st[0] = mc, st[1] = T(sc), st[2] = T(wc), st[3] = has_target ? xr[j] * mul : T(0);
        continue;
      }
      // Fold (m1, s1, w1) and (mc, sc, wc) into the larger max M. Rebasing a triple from m to M:
      // exp(z - M) = a·exp(z - m) with a = exp(m - M), and (z - M) = (z - m) + (m - M), so
      // s' = a·s and w' = a·(w + (m - M)·s). A triple with s = 0 (nothing folded yet, or a masked
      // chunk) adds 0; a NaN s (a NaN logit) is folded, so the row's s stays NaN whatever the
      // chunking.
      const double m1 = double(st[0]), s1 = double(st[1]), w1 = double(st[2]);
      const double M = std::max(m1, double(mc));
      double s = 0, w = 0;
      if (s1 != 0) {
        const double a = std::exp(m1 - M);
        s += a * s1, w += a * (w1 + (m1 - M) * s1);
      }
      if (sc != 0) {
        const double a = std::exp(double(mc) - M);
        s += a * sc, w += a * (wc + (double(mc) - M) * sc);
      }
      st[0] = T(M), st[1] = T(s), st[2] = T(w);
      if (has_target) st[3] = xr[j] * mul;
    }
  });
}

template <typename T>
void logprob_chunk_finish(const T* stats, const int32_t* targets, int64_t n, T* logp, T* entropy,
                          T* lse) {
  for (int64_t t = 0; t < n; ++t) {
    const T* st = stats + t * 4;
    const double log_s = std::log(double(st[1]));
    // log p_target = (z_target - m) - log s; H = -Σ p (z - m - log s) = log s - w / s.
    logp[t] = targets[t] < 0 ? T(0) : T(double(st[3] - st[0]) - log_s);
    if (entropy) entropy[t] = T(log_s - double(st[2]) / double(st[1]));
    if (lse) lse[t] = T(double(st[0]) + log_s);
  }
}

template <typename T>
void logprob_chunk_bwd(const T* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                       T temperature, const T* lse, const T* entropy, const T* dlogp,
                       const T* dentropy, T* dx) {
  const T mul = T(1) / temperature;
  parallel_for(n, rows_per_task(C), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* xr = x + t * C;
      T* d = dx + t * C;  // may be xr: each element is read before it is written
      const int64_t tg = targets[t] < 0 ? -1 : int64_t(targets[t]) - v0;
      const T g_lp = targets[t] < 0 ? T(0) : dlogp[t];
      const T g_h = dentropy ? dentropy[t] : T(0);
      const T h = g_h != T(0) ? entropy[t] : T(0);
      const T L = lse[t], k = mul;
      // ∂logp/∂z_j = 1[j = target] - p_j;  ∂H/∂z_j = -p_j (log p_j + H);  ∂z/∂logits = 1/τ;
      // log p_j = z_j - lse.
      for (int64_t j = 0; j < C; ++j) {
        const T lp = xr[j] * k - L;
        const T p = vec::exp<T>(lp);
        const T ent = p > T(0) ? g_h * p * (lp + h) : T(0);  // p = 0: limit 0, not 0 · -inf
        d[j] = (-g_lp * p - ent) * k;
      }
      if (tg >= 0 && tg < C) d[tg] += g_lp * k;
    }
  });
}

#define GYRE_INSTANTIATE(T)                                                                    \
  template void logprob_chunk_stats<T>(const T*, const int32_t*, int64_t, int64_t, int64_t, T, \
                                       bool, T*);                                              \
  template void logprob_chunk_finish<T>(const T*, const int32_t*, int64_t, T*, T*, T*);        \
  template void logprob_chunk_bwd<T>(const T*, const int32_t*, int64_t, int64_t, int64_t, T,   \
                                     const T*, const T*, const T*, const T*, T*);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
