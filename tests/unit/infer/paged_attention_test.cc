// Paged KV write + paged attention: against a float64 reference over scattered pages (GQA, several
// sequences of different lengths, prefill chunks and decode tokens mixed in one call), against the
// dense training kernel (ops::attention_varlen) when everything is new, and bad-index rejection.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"
#include "gyre/infer/paged_attention_context.h"

using namespace gyre;
using namespace gyre::infer;

namespace {

struct Case {
  int64_t Hq = 4, Hkv = 2, D = 8, page_size = 4, num_pages = 64;
  std::vector<int32_t> kv_lens, q_lens;
};

Tensor randn(const Shape& s, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> v(size_t(shape_numel(s)));
  for (float& x : v) x = nd(rng);
  return Tensor::from_vector(v, s);
}

}  // namespace

TEST(PagedAttention, MatchesReferenceOverScatteredPages) {
  std::mt19937 rng(11);
  Case c;
  c.kv_lens = {9, 1, 23, 6};  // prefill-with-prefix, single-token prefill, decode, full prefill
  c.q_lens = {3, 1, 1, 6};
  const int64_t B = 4, D = c.D, G = c.Hq / c.Hkv;
  // Full K/V history per sequence (positions 0..len-1), random.
  std::vector<Tensor> K, V;
  for (int64_t b = 0; b < B; ++b) {
    K.push_back(randn({c.kv_lens[size_t(b)], c.Hkv, D}, rng));
    V.push_back(randn({c.kv_lens[size_t(b)], c.Hkv, D}, rng));
  }
  // Scattered page tables: a random permutation of pages.
  std::vector<int32_t> perm(size_t(c.num_pages));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  StepBatch sb;
  sb.cu_seqlens_q = {0};
  sb.page_indptr = {0};
  size_t next_page = 0;
  KvStorage kv(1, c.num_pages, int32_t(c.page_size), c.Hkv, D);
  std::vector<float> knew, vnew;
  for (int64_t b = 0; b < B; ++b) {
    int64_t L = c.kv_lens[size_t(b)], nq = c.q_lens[size_t(b)];
    std::vector<int32_t> pages;
    for (int64_t p = 0; p < (L + c.page_size - 1) / c.page_size; ++p)
      pages.push_back(perm[next_page++]);
    sb.page_indices.insert(sb.page_indices.end(), pages.begin(), pages.end());
    sb.page_indptr.push_back(int32_t(sb.page_indices.size()));
    sb.kv_lens.push_back(int32_t(L));
    sb.cu_seqlens_q.push_back(sb.cu_seqlens_q.back() + int32_t(nq));
    for (int64_t pos = 0; pos < L; ++pos) {
      int32_t slot =
          pages[size_t(pos / c.page_size)] * int32_t(c.page_size) + int32_t(pos % c.page_size);
      const float* kr = K[size_t(b)].f32() + pos * c.Hkv * D;
      const float* vr = V[size_t(b)].f32() + pos * c.Hkv * D;
      if (pos < L - nq) {  // the cached prefix: written directly
        std::copy(kr, kr + c.Hkv * D, kv.k(0).f32() + slot * c.Hkv * D);
        std::copy(vr, vr + c.Hkv * D, kv.v(0).f32() + slot * c.Hkv * D);
      } else {  // new tokens: written by the context
        sb.slot_mapping.push_back(slot);
        knew.insert(knew.end(), kr, kr + c.Hkv * D);
        vnew.insert(vnew.end(), vr, vr + c.Hkv * D);
      }
    }
  }
  const int64_t T = sb.cu_seqlens_q.back();
  Tensor q = randn({T, c.Hq, D}, rng);
  Tensor k = Tensor::from_vector(knew, {T, c.Hkv, D});
  Tensor v = Tensor::from_vector(vnew, {T, c.Hkv, D});
  Tensor out = Tensor::zeros({T, c.Hq, D});
  const float scale = 1.0f / std::sqrt(float(D));
  PagedAttentionContext ctx(kv, sb);
  ctx.attend(0, q, k, v, scale, out);
  // float64 reference.
  double max_err = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t L = c.kv_lens[size_t(b)], nq = c.q_lens[size_t(b)];
    for (int64_t i = 0; i < nq; ++i) {
      int64_t row = sb.cu_seqlens_q[size_t(b)] + i, pos = L - nq + i;
      for (int64_t h = 0; h < c.Hq; ++h) {
        int64_t g = h / G;
        std::vector<double> s(size_t(pos + 1));
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double d = 0;
          for (int64_t e = 0; e < D; ++e)
            d += double(q.f32()[(row * c.Hq + h) * D + e]) *
                 K[size_t(b)].f32()[(j * c.Hkv + g) * D + e];
          s[size_t(j)] = d * scale;
          m = std::max(m, s[size_t(j)]);
        }
        for (auto& x : s) sum += (x = std::exp(x - m));
        for (int64_t e = 0; e < D; ++e) {
          double o = 0;
          for (int64_t j = 0; j <= pos; ++j)
            o += s[size_t(j)] / sum * V[size_t(b)].f32()[(j * c.Hkv + g) * D + e];
          max_err = std::max(max_err, std::abs(o - out.f32()[(row * c.Hq + h) * D + e]));
        }
      }
    }
  }
  EXPECT_LT(max_err, 1e-5);
}

TEST(PagedAttention, EqualsDenseKernelWhenAllTokensAreNew) {
  std::mt19937 rng(5);
  const int64_t Hq = 6, Hkv = 3, D = 16, P = 8;
  std::vector<int32_t> lens = {13, 70, 1};
  StepBatch sb;
  sb.cu_seqlens_q = {0};
  sb.page_indptr = {0};
  int32_t page = 0;
  for (int32_t L : lens) {
    int32_t np = (L + int32_t(P) - 1) / int32_t(P);
    for (int32_t i = 0; i < np; ++i) sb.page_indices.push_back(page + np - 1 - i);  // reversed
    for (int32_t pos = 0; pos < L; ++pos)
      sb.slot_mapping.push_back((page + np - 1 - pos / int32_t(P)) * int32_t(P) + pos % int32_t(P));
    page += np;
    sb.page_indptr.push_back(int32_t(sb.page_indices.size()));
    sb.kv_lens.push_back(L);
    sb.cu_seqlens_q.push_back(sb.cu_seqlens_q.back() + L);
  }
  const int64_t T = sb.cu_seqlens_q.back();
  Tensor q = randn({T, Hq, D}, rng), k = randn({T, Hkv, D}, rng), v = randn({T, Hkv, D}, rng);
  KvStorage kv(2, page, int32_t(P), Hkv, D);
  Tensor out = Tensor::zeros({T, Hq, D}), dense = Tensor::zeros({T, Hq, D});
  Tensor lse = Tensor::zeros({T, Hq});
  PagedAttentionContext ctx(kv, sb);
  ctx.attend(1, q, k, v, 0.25f, out);
  ops::attention_varlen(q, k, v, borrow_i32(sb.cu_seqlens_q), 0.25f, dense, lse);
  auto a = out.to_vector(), b = dense.to_vector();
  double max_err = 0;
  for (size_t i = 0; i < a.size(); ++i) max_err = std::max(max_err, double(std::abs(a[i] - b[i])));
  EXPECT_LT(max_err, 1e-6);
}

TEST(PagedAttention, ParseRejectsBadIndices) {
  KvStorage kv(1, 4, 4, 1, 4);
  Tensor q = Tensor::zeros({1, 1, 4}), out = Tensor::zeros({1, 1, 4});
  std::vector<int32_t> cu = {0, 1}, lens = {1}, ip = {0, 1}, bad_page = {9}, ok_page = {0};
  EXPECT_THROW(ops::paged_attention(q, kv.k(0), kv.v(0), borrow_i32(cu), borrow_i32(lens),
                                    borrow_i32(ip), borrow_i32(bad_page), 1.0f, out),
               Error);
  std::vector<int32_t> long_lens = {5};  // one page of 4 cannot hold 5 tokens
  EXPECT_THROW(ops::paged_attention(q, kv.k(0), kv.v(0), borrow_i32(cu), borrow_i32(long_lens),
                                    borrow_i32(ip), borrow_i32(ok_page), 1.0f, out),
               Error);
  std::vector<int32_t> bad_slot = {16};
  Tensor k = Tensor::zeros({1, 1, 4});
  EXPECT_THROW(ops::paged_kv_write(k, k, borrow_i32(bad_slot), kv.k(0), kv.v(0)), Error);
  try {
    ops::paged_attention(q, kv.k(0), kv.v(0), borrow_i32(cu), borrow_i32(lens), borrow_i32(ip),
                         borrow_i32(bad_page), 1.0f, out);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page_indices[0] = 9"), std::string::npos) << e.what();
  }
}

namespace gyre::infer {
namespace {
// The context validates the whole step once, on the host, before any layer runs.
TEST(PagedAttention, ContextRejectsABadStepBeforeAnyLayer) {
  KvStorage kv(1, 4, 4, 1, 4);
  StepBatch sb;
  sb.ids = {1};
  sb.positions = {0};
  sb.cu_seqlens_q = {0, 1};
  sb.kv_lens = {1};
  sb.page_indptr = {0, 1};
  sb.page_indices = {9};  // the cache has 4 pages
  sb.slot_mapping = {0};
  try {
    PagedAttentionContext ctx(kv, sb);
    ADD_FAILURE() << "a page outside the cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page_indices[0] = 9"), std::string::npos) << e.what();
  }
  sb.page_indices = {0};
  sb.slot_mapping = {16};  // 4 pages x 4 slots
  try {
    PagedAttentionContext ctx(kv, sb);
    ADD_FAILURE() << "a slot outside the cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("slot_mapping[0] = 16"), std::string::npos) << e.what();
  }
  sb.slot_mapping = {0};
  EXPECT_NO_THROW(PagedAttentionContext(kv, sb));
}
}  // namespace
}  // namespace gyre::infer
