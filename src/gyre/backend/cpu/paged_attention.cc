// Paged KV write and paged causal GQA attention on the CPU (layout in paged_attention.h).
//
// A work item is one (sequence, kv head): its keys and values are gathered page by page into a
// contiguous [L, D] scratch, then each query head of the group runs the same blocked computation as
// the packed training kernel (attention.cc): S = Q_blk K^T (GEMM), causal softmax per row (sums in
// double), O = P V (GEMM). Gathering costs L·D copies against L·D·G·q_len flops, and keeps the
// numerics those of the dense kernel, so rollout log-probs agree with the trainer's recomputation.
// Items run dynamically, most expensive first; each output row is written by exactly one item, so
// results do not depend on the thread count.
#include "gyre/backend/cpu/paged_attention.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
constexpr int64_t kBlockQ = 64;
struct Item {
  int64_t b, g, cost;
};
}  // namespace

void paged_kv_write(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                    int64_t Hkv, int64_t D, float* k_cache, float* v_cache) {
  const int64_t row = Hkv * D;
  parallel_for(T, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t slot = slot_mapping[t];
      if (slot < 0) continue;
      std::memcpy(k_cache + slot * row, k + t * row, size_t(row) * sizeof(float));
      std::memcpy(v_cache + slot * row, v + t * row, size_t(row) * sizeof(float));
    }
  });
}

void paged_attention_fwd(const float* q, const float* k_cache, const float* v_cache,
                         const int32_t* cu_q, const int32_t* kv_lens, const int32_t* page_indptr,
                         const int32_t* page_indices, int64_t B, int64_t Hq, int64_t Hkv, int64_t D,
                         int64_t page_size, float scale, float* out) {
  const int64_t G = Hq / Hkv, ldq = Hq * D, ldkv = Hkv * D;
  std::vector<Item> items;
  int64_t max_len = 0, max_q = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t nq = cu_q[b + 1] - cu_q[b], L = kv_lens[b];
    if (nq == 0) continue;
    max_len = std::max(max_len, L);
    max_q = std::max(max_q, nq);
    for (int64_t g = 0; g < Hkv; ++g) items.push_back({b, g, (nq + 1) * L});
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& c) { return a.cost > c.cost; });
  WorkQueue queue(int64_t(items.size()));
  SerialBlas serial;
  parallel_workers(int64_t(items.size()), [&](int64_t) {
    std::unique_ptr<float[]> kbuf(new float[size_t(max_len * D)]);
    std::unique_ptr<float[]> vbuf(new float[size_t(max_len * D)]);
    std::unique_ptr<float[]> scores(new float[size_t(std::min(kBlockQ, max_q) * max_len)]);
    int64_t idx;
    while (queue.pop(&idx)) {
      const Item& it = items[size_t(idx)];
      const int64_t L = kv_lens[it.b], q0 = cu_q[it.b], nq = cu_q[it.b + 1] - q0;
      const int64_t first_pos = L - nq;  // kv position of the first new query
      const int32_t* pages = page_indices + page_indptr[it.b];
      for (int64_t p = 0; p < L; p += page_size) {
        const int64_t n = std::min(page_size, L - p);
        const int64_t base = int64_t(pages[p / page_size]) * page_size * ldkv + it.g * D;
        for (int64_t s = 0; s < n; ++s) {
          std::memcpy(kbuf.get() + (p + s) * D, k_cache + base + s * ldkv, size_t(D) * 4);
          std::memcpy(vbuf.get() + (p + s) * D, v_cache + base + s * ldkv, size_t(D) * 4);
        }
      }
      for (int64_t h = it.g * G; h < (it.g + 1) * G; ++h) {
        for (int64_t r0 = 0; r0 < nq; r0 += kBlockQ) {
          const int64_t nr = std::min(kBlockQ, nq - r0);
          const int64_t kend = first_pos + r0 + nr;  // keys [0, kend) visible to this block
          float* S = scores.get();
          gemm<float>(false, true, nr, kend, D, scale, q + (q0 + r0) * ldq + h * D, ldq, kbuf.get(),
                      D, 0.0f, S, kend);
          for (int64_t i = 0; i < nr; ++i) {
            float* row = S + i * kend;
            const int64_t valid = first_pos + r0 + i + 1;
            const float m = vec::row_max(row, valid);
            const double s = vec::exp_sum<float>(row, valid, 1.0f, m, row, nullptr);
            const float inv = float(1.0 / s);
            for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
            std::fill(row + valid, row + kend, 0.0f);
          }
          gemm<float>(false, false, nr, D, kend, 1.0f, S, kend, vbuf.get(), D, 0.0f,
                      out + (q0 + r0) * ldq + h * D, ldq);
        }
      }
    }
  });
}

}  // namespace gyre::cpu
