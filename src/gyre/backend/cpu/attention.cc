// Causal GQA attention over packed variable-length sequences, CPU kernels (forward and
// FlashAttention-style backward recomputing P from the saved log-sum-exp).
//
// Work is cut into blocks of up to kBlockQ query rows of one (sequence, query head): the block's
// scores against its causal key range are one GEMM (Q_blk K^T), the softmax runs on those rows, and
// the output is one more GEMM (P V). Only one [kBlockQ, L] score block per worker is alive at a
// time. Blocks are handed out dynamically, most expensive first, so sequences of different lengths
// balance across workers; every output element is written by exactly one block, so results do not
// depend on the thread count. GEMMs run single-threaded inside the workers (SerialBlas).
//
// Backward (Dao et al., FlashAttention-2, Alg. 2): P = exp(S·scale - lse), dV = P^T dO,
// dP = dO V^T, D_i = rowsum(dO ∘ O), dS = P ∘ (dP - D_i), dQ = scale dS K, dK = scale dS^T Q. A
// work item is one (sequence, query head); with GQA each item writes its dK/dV into a
// per-query-head scratch and the heads sharing a kv head are summed afterwards in head order
// (deterministic).
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
constexpr int64_t kBlockQ = 64;

struct Block {
  int64_t b, h, q0, nq;
  int64_t cost;
};

int64_t max_seq_len(const int32_t* cu, int64_t B) {
  int64_t m = 0;
  for (int64_t b = 0; b < B; ++b) m = std::max<int64_t>(m, cu[b + 1] - cu[b]);
  return m;
}

// Softmax of the causal prefix [0, valid) of a score row in place; zeroes [valid, n). Returns lse.
template <typename T>
T causal_softmax_row(T* row, int64_t valid, int64_t n) {
  T m = vec::row_max(row, valid);
  double s = vec::exp_sum<T>(row, valid, T(1), m, row, nullptr);
  T inv = T(1.0 / s);
  for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
  std::fill(row + valid, row + n, T(0));
  return T(double(m) + std::log(s));
}
}  // namespace

template <typename T>
void attention_fwd(const T* q, const T* k, const T* v, const int32_t* cu, int64_t B, int64_t Hq,
                   int64_t Hkv, int64_t D, T scale, T* out, T* lse) {
  const int64_t G = Hq / Hkv, ldq = Hq * D, ldk = Hkv * D;
  std::vector<Block> blocks;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = cu[b], len = cu[b + 1] - cu[b];
    for (int64_t q0 = start; q0 < start + len; q0 += kBlockQ) {
      const int64_t nq = std::min(kBlockQ, start + len - q0);
      for (int64_t h = 0; h < Hq; ++h) blocks.push_back({b, h, q0, nq, nq * (q0 - start + nq)});
    }
  }
  std::stable_sort(blocks.begin(), blocks.end(),
                   [](const Block& a, const Block& c) { return a.cost > c.cost; });
  const int64_t max_len = max_seq_len(cu, B);
  WorkQueue queue(int64_t(blocks.size()));
  SerialBlas serial;
  parallel_workers(int64_t(blocks.size()), [&](int64_t) {
    std::unique_ptr<T[]> scores(new T[size_t(kBlockQ * max_len)]);
    int64_t item;
    while (queue.pop(&item)) {
      const Block& w = blocks[size_t(item)];
      const int64_t start = cu[w.b], g = w.h / G;
      const int64_t kend = w.q0 - start + w.nq;  // keys [start, start + kend) are visible
      T* S = scores.get();
      gemm<T>(false, true, w.nq, kend, D, scale, q + w.q0 * ldq + w.h * D, ldq,
              k + start * ldk + g * D, ldk, T(0), S, kend);
      for (int64_t i = 0; i < w.nq; ++i) {
        const int64_t valid = w.q0 - start + i + 1;
        lse[(w.q0 + i) * Hq + w.h] = causal_softmax_row(S + i * kend, valid, kend);
      }
      gemm<T>(false, false, w.nq, D, kend, T(1), S, kend, v + start * ldk + g * D, ldk, T(0),
              out + w.q0 * ldq + w.h * D, ldq);
    }
  });
}

template <typename T>
void attention_bwd(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                   const int32_t* cu, int64_t B, int64_t Hq, int64_t Hkv, int64_t D, T scale, T* dq,
                   T* dk, T* dv) {
  const int64_t G = Hq / Hkv, ldq = Hq * D, ldk = Hkv * D;
  const int64_t total = cu[B];
  std::vector<Block> items;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = cu[b + 1] - cu[b];
    if (len == 0) continue;
    for (int64_t h = 0; h < Hq; ++h) items.push_back({b, h, cu[b], len, len * len});
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Block& a, const Block& c) { return a.cost > c.cost; });
  // With GQA, per-query-head partial dK/dV ([total, Hq, D]); without, write dk/dv directly.
  std::unique_ptr<T[]> dk_part, dv_part;
  if (G > 1) {
    dk_part.reset(new T[size_t(total * ldq)]);
    dv_part.reset(new T[size_t(total * ldq)]);
  }
  T* dk_base = G > 1 ? dk_part.get() : dk;
  T* dv_base = G > 1 ? dv_part.get() : dv;
  const int64_t ld_acc = G > 1 ? ldq : ldk;
  const int64_t max_len = max_seq_len(cu, B);
  WorkQueue queue(int64_t(items.size()));
  {
    SerialBlas serial;
    parallel_workers(int64_t(items.size()), [&](int64_t) {
      std::unique_ptr<T[]> p_buf(new T[size_t(kBlockQ * max_len)]);
      std::unique_ptr<T[]> dp_buf(new T[size_t(kBlockQ * max_len)]);
      int64_t item;
      while (queue.pop(&item)) {
        const Block& w = items[size_t(item)];
        const int64_t start = w.q0, len = w.nq, h = w.h, g = h / G;
        const int64_t acc_col = G > 1 ? h * D : g * D;
        T* dK = dk_base + start * ld_acc + acc_col;
        T* dV = dv_base + start * ld_acc + acc_col;
        for (int64_t t = 0; t < len; ++t) {
          std::fill(dK + t * ld_acc, dK + t * ld_acc + D, T(0));
          std::fill(dV + t * ld_acc, dV + t * ld_acc + D, T(0));
        }
        const T* K = k + start * ldk + g * D;
        const T* V = v + start * ldk + g * D;
        for (int64_t q0 = start; q0 < start + len; q0 += kBlockQ) {
          const int64_t nq = std::min(kBlockQ, start + len - q0);
          const int64_t kend = q0 - start + nq;
          const T* Q = q + q0 * ldq + h * D;
          const T* dO = dout + q0 * ldq + h * D;
          const T* O = out + q0 * ldq + h * D;
          T* P = p_buf.get();
          T* dP = dp_buf.get();
          gemm<T>(false, true, nq, kend, D, scale, Q, ldq, K, ldk, T(0), P, kend);
          for (int64_t i = 0; i < nq; ++i) {
            const int64_t valid = q0 - start + i + 1;
            const T l = lse[(q0 + i) * Hq + h];
            T* row = P + i * kend;
            for (int64_t j = 0; j < valid; ++j) row[j] = vec::exp<T>(row[j] - l);
            std::fill(row + valid, row + kend, T(0));
          }
          gemm<T>(true, false, kend, D, nq, T(1), P, kend, dO, ldq, T(1), dV, ld_acc);
          gemm<T>(false, true, nq, kend, D, T(1), dO, ldq, V, ldk, T(0), dP, kend);
          for (int64_t i = 0; i < nq; ++i) {
            const T di = T(vec::dot(dO + i * ldq, O + i * ldq, D));
            const T* prow = P + i * kend;
            T* row = dP + i * kend;
            for (int64_t j = 0; j < kend; ++j) row[j] = prow[j] * (row[j] - di);
          }
          gemm<T>(false, false, nq, D, kend, scale, dP, kend, K, ldk, T(0), dq + q0 * ldq + h * D,
                  ldq);
          gemm<T>(true, false, kend, D, nq, scale, dP, kend, Q, ldq, T(1), dK, ld_acc);
        }
      }
    });
  }
  if (G == 1) return;
  // Sum the G query heads of each kv head, in head order.
  parallel_for(total, std::max<int64_t>(1, 4096 / std::max<int64_t>(ldq, 1)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   for (int64_t g = 0; g < Hkv; ++g) {
                     T* ok = dk + t * ldk + g * D;
                     T* ov = dv + t * ldk + g * D;
                     const T* pk = dk_part.get() + t * ldq + g * G * D;
                     const T* pv = dv_part.get() + t * ldq + g * G * D;
                     std::copy(pk, pk + D, ok);
                     std::copy(pv, pv + D, ov);
                     for (int64_t j = 1; j < G; ++j)
                       for (int64_t d = 0; d < D; ++d) {
                         ok[d] += pk[j * D + d];
                         ov[d] += pv[j * D + d];
                       }
                   }
                 }
               });
}

#define GYRE_INSTANTIATE(T)                                                                      \
  template void attention_fwd<T>(const T*, const T*, const T*, const int32_t*, int64_t, int64_t, \
                                 int64_t, int64_t, T, T*, T*);                                   \
  template void attention_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*,     \
                                 const int32_t*, int64_t, int64_t, int64_t, int64_t, T, T*, T*,  \
                                 T*);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
