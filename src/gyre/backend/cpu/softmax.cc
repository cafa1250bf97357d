// Softmax-family CPU kernels: row softmax / log-softmax, per-token log-prob + entropy of the
// next-token distribution (forward and backward) and the MoE top-k router.
//
// Invariants: one task per row, so outputs are bitwise independent of the thread count; each row
// is processed in place of its inputs/outputs (token_logprobs never materialises a [T, V] buffer:
// it streams a row twice — max, then exp-sum); sums in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(C, 1)); }

// Statistics of softmax(x * mul) for one row: z = x * mul, m = max z, s = Σ exp(z - m),
// wz = Σ exp(z - m) (z - m); log_s = log s.
template <typename T>
struct RowStats {
  T m;
  double s, wz, log_s;
};

template <typename T>
RowStats<T> row_stats(const T* x, int64_t n, T mul, bool need_weighted) {
  RowStats<T> st;
  // mul > 0 (temperature > 0), so max(x * mul) = max(x) * mul exactly (rounding is monotone).
  st.m = vec::row_max(x, n) * mul;
  st.wz = 0;
  st.s = vec::exp_sum<T>(x, n, mul, st.m, nullptr, need_weighted ? &st.wz : nullptr);
  st.log_s = std::log(st.s);
  return st;
}
}  // namespace

template <typename T>
void softmax_rows(const T* x, int64_t R, int64_t C, T* out) {
  parallel_for(R, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      T* o = out + r * C;
      T m = vec::row_max(xr, C);
      double s = vec::exp_sum<T>(xr, C, T(1), m, o, nullptr);
      T inv = T(1.0 / s);
      for (int64_t j = 0; j < C; ++j) o[j] *= inv;
    }
  });
}

template <typename T>
void log_softmax_rows(const T* x, int64_t R, int64_t C, T* out) {
  parallel_for(R, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      T* o = out + r * C;
      T m = vec::row_max(xr, C);
      T log_s = T(std::log(vec::exp_sum<T>(xr, C, T(1), m, nullptr, nullptr)));
      for (int64_t j = 0; j < C; ++j) o[j] = (xr[j] - m) - log_s;
    }
  });
}

template <typename T>
void token_logprobs_fwd(const T* logits, const int32_t* targets, int64_t n, int64_t V,
                        T temperature, T* logp, T* entropy) {
  const T mul = T(1) / temperature;
  parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* x = logits + t * V;
      RowStats<T> st = row_stats(x, V, mul, entropy != nullptr);
      int32_t tg = targets[t];
      // log p_t = (z_t - m) - log s
      logp[t] = tg < 0 ? T(0) : T(double(x[tg] * mul - st.m) - st.log_s);
      // H = -Σ p (z - m - log s) = log s - Σ e (z - m) / s
      if (entropy) entropy[t] = T(st.log_s - st.wz / st.s);
    }
  });
}

template <typename T>
void token_logprobs_bwd(const T* logits, const int32_t* targets, int64_t n, int64_t V,
                        T temperature, const T* dlogp, const T* dentropy, T* dlogits) {
  const T mul = T(1) / temperature;
  parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* x = logits + t * V;
      T* d = dlogits + t * V;
      const bool has_ent = dentropy && dentropy[t] != T(0);
      RowStats<T> st = row_stats(x, V, mul, has_ent);
      const int32_t tg = targets[t];
      const T g_lp = tg < 0 ? T(0) : dlogp[t];
      const T g_h = has_ent ? dentropy[t] : T(0);
      const T log_s = T(st.log_s);
      const T h = T(st.log_s - st.wz / st.s);
      const T inv_s = T(1.0 / st.s), m = st.m, k = mul;  // locals: lets the loop vectorise
      // ∂logp_t/∂z_j = 1[j=t] - p_j;  ∂H/∂z_j = -p_j (log p_j + H);  ∂z/∂logits = 1/τ.
      for (int64_t j = 0; j < V; ++j) {
        T zj = x[j] * k - m;
        T p = vec::exp<T>(zj) * inv_s;
        // p = 0 (z = -inf): the entropy term's limit is 0, not 0 · -inf.
        const T ent = p > T(0) ? g_h * p * ((zj - log_s) + h) : T(0);
        d[j] = (-g_lp * p - ent) * k;
      }
      if (tg >= 0) d[tg] += g_lp * k;
    }
  });
}

template <typename T>
void moe_route_fwd(const T* logits, int64_t n, int64_t E, int64_t k, bool norm_topk, T* probs,
                   int32_t* indices, T* weights) {
  softmax_rows<T>(logits, n, E, probs);
  parallel_for(n, row_grain(E * 4), [&](int64_t t0, int64_t t1) {
    std::vector<char> taken(static_cast<size_t>(E), 0);
    for (int64_t t = t0; t < t1; ++t) {
      const T* p = probs + t * E;
      int32_t* idx = indices + t * k;
      T* w = weights + t * k;
      std::fill(taken.begin(), taken.end(), 0);
      double sum = 0;
      // torch.topk(sorted=True): descending values, equal values in ascending index order — a
      // strict '>' scan from index 0 keeps the lowest index among ties.
      for (int64_t i = 0; i < k; ++i) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e)
          if (!taken[size_t(e)] && (best < 0 || p[e] > p[best])) best = e;
        taken[size_t(best)] = 1;
        idx[i] = int32_t(best);
        w[i] = p[best];
        sum += double(p[best]);
      }
      // Qwen3-MoE norm_topk_prob: routing_weights /= routing_weights.sum(-1).
      if (norm_topk)
        for (int64_t i = 0; i < k; ++i) w[i] = T(double(w[i]) / sum);
    }
  });
}

template <typename T>
void moe_route_bwd(const T* dweights, const T* probs, const int32_t* indices, int64_t n, int64_t E,
                   int64_t k, bool norm_topk, T* dlogits) {
  parallel_for(n, row_grain(E * 4), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* p = probs + t * E;
      const int32_t* idx = indices + t * k;
      const T* dw = dweights + t * k;
      T* dp = dlogits + t * E;  // holds ∂L/∂probs first, then is turned into ∂L/∂logits
      std::fill(dp, dp + E, T(0));
      if (norm_topk) {
        // w_i = p_i / S, S = Σ_sel p: ∂L/∂p_i = (dw_i - Σ_j dw_j w_j) / S for selected i.
        double sum = 0, c = 0;
        for (int64_t i = 0; i < k; ++i) sum += double(p[idx[i]]);
        for (int64_t i = 0; i < k; ++i) c += double(dw[i]) * (double(p[idx[i]]) / sum);
        for (int64_t i = 0; i < k; ++i) dp[idx[i]] += T((double(dw[i]) - c) / sum);
      } else {
        for (int64_t i = 0; i < k; ++i) dp[idx[i]] += dw[i];
      }
      // softmax backward: dlogit_j = p_j (dp_j - Σ_l dp_l p_l)
      T c = T(vec::dot(dp, p, E));
      for (int64_t e = 0; e < E; ++e) dp[e] = p[e] * (dp[e] - c);
    }
  });
}

#define GYRE_INSTANTIATE(T)                                                                     \
  template void softmax_rows<T>(const T*, int64_t, int64_t, T*);                                \
  template void log_softmax_rows<T>(const T*, int64_t, int64_t, T*);                            \
  template void token_logprobs_fwd<T>(const T*, const int32_t*, int64_t, int64_t, T, T*, T*);   \
  template void token_logprobs_bwd<T>(const T*, const int32_t*, int64_t, int64_t, T, const T*,  \
                                      const T*, T*);                                            \
  template void moe_route_fwd<T>(const T*, int64_t, int64_t, int64_t, bool, T*, int32_t*, T*);  \
  template void moe_route_bwd<T>(const T*, const T*, const int32_t*, int64_t, int64_t, int64_t, \
                                 bool, T*);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
