// Deferred zeros (Tensor::zero_deferred, which Gradients::zero uses on the GPU): a device tensor
// reads as zeros from the call on, but the memset runs only when something touches the data — or
// never, when the first op that writes it claims the zeros (Tensor::claim_pending_zero) and
// overwrites every element (the dW GEMM's beta 0 instead of 1).
//
// Checked here:
//  - the mechanism: reads see zeros, a claim succeeds once and only on a tensor that spans its
//    storage, views and host tensors are zeroed at once, address() and zero() write nothing;
//  - every claiming op (linear_backward, linear_group_backward, linear_group_backward_packed and
//    linear_token_logprobs_backward under Bf16Autocast) gives the dW of the same op on an eagerly
//    zeroed gradient, consumes the claim, and accumulates on its second call. The linear cases use
//    small integers (gputest::small_ints), whose products and sums are exact in f32 whatever
//    order a GEMM algorithm takes, so the beta-0 GEMM (its own plan) must match bit for bit; the
//    log-prob head's dz is not integral, so it is held to the f32 reordering bound below.
//  - an empty product (M = 0) does not claim: the gradient still reads as zeros.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/linear_group_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::small_ints;

Tensor gpu_full(const Shape& s, float v) { return gpu(Tensor::full(s, v)); }

void expect_all(const Tensor& t, float v, const char* what) {
  const std::vector<float> got = t.to_vector();
  int64_t bad = 0;
  for (float g : got) bad += g != v;
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ from " << v;
}

void expect_bitwise(const Tensor& got, const Tensor& want, const char* what) {
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) bad += std::memcmp(&g[i], &w[i], sizeof(float)) != 0;
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements differ";
}

Tensor twice(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  for (float& e : v) e *= 2.0f;  // exact (no overflow at these sizes)
  return Tensor::from_vector(v, t.shape());
}

TEST(DeferredZeroCuda, ReadsAsZerosAndTheClaimIsTakenOnce) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor t = gpu_full({64, 33}, 3.0f);
  t.zero_deferred();
  EXPECT_TRUE(t.storage()->zero_pending());
  const Tensor alias = t;  // shares the storage: shares the pending zeros
  expect_all(alias, 0.0f, "read through an alias");
  EXPECT_FALSE(t.storage()->zero_pending()) << "a read writes the zeros";
  EXPECT_FALSE(t.claim_pending_zero()) << "nothing to claim after a read";

  t.copy_from(Tensor::full({64, 33}, 3.0f));  // the read left zeros: put other values back
  t.zero_deferred();
  Tensor alias2 = t;
  EXPECT_TRUE(alias2.claim_pending_zero());
  EXPECT_FALSE(t.claim_pending_zero()) << "a claim is taken once";
  // The claimer owns the write: the old values are still there (no memset ran).
  expect_all(t, 3.0f, "claimed, not written");
}

TEST(DeferredZeroCuda, AddressAndZeroWriteNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor t = gpu_full({128}, 1.5f);
  const void* before = t.address();
  t.zero_deferred();
  EXPECT_EQ(t.address(), before);
  t.zero();  // reads as zeros already: nothing to do
  EXPECT_TRUE(t.storage()->zero_pending()) << "address() and zero() must leave the zeros pending";
  EXPECT_EQ(t.raw(), before);  // raw() writes them
  EXPECT_FALSE(t.storage()->zero_pending());
  expect_all(t, 0.0f, "after raw()");
}

TEST(DeferredZeroCuda, ViewsAndHostTensorsAreZeroedAtOnce) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor t = gpu_full({10, 4}, 2.0f);
  Tensor rows = t.narrow(2, 3);
  rows.zero_deferred();
  EXPECT_FALSE(t.storage()->zero_pending()) << "a view of part of a storage zeroes now";
  const std::vector<float> v = t.to_vector();
  for (int64_t i = 0; i < 40; ++i)
    EXPECT_EQ(v[size_t(i)], (i >= 8 && i < 20) ? 0.0f : 2.0f) << "element " << i;

  // A pending storage is claimed only through a tensor spanning it; a view then reads zeros.
  t.zero_deferred();
  Tensor part = t.narrow(0, 5);
  EXPECT_FALSE(part.claim_pending_zero());
  expect_all(part, 0.0f, "view of a pending storage");

  Tensor host = Tensor::full({7}, 4.0f);
  host.zero_deferred();
  EXPECT_FALSE(host.claim_pending_zero());
  expect_all(host, 0.0f, "host tensor");
}

struct LinearCase {
  int64_t M, N, K;
};

TEST(DeferredZeroCuda, LinearBackwardOverwritesAClaimedGradientThenAccumulates) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16Autocast autocast;
  for (const LinearCase& c :
       {LinearCase{256, 896, 128}, LinearCase{1024, 128, 896}, LinearCase{37, 19, 24}}) {
    SCOPED_TRACE(testing::Message() << "M " << c.M << " N " << c.N << " K " << c.K);
    const Tensor dy = gpu(small_ints({c.M, c.N}, 11, 4.0f)),
                 x = gpu(small_ints({c.M, c.K}, 12, 4.0f));
    const Tensor w = gpu(small_ints({c.N, c.K}, 13, 4.0f));
    Tensor dx, db_ref = gpu(Tensor::zeros({c.N})), dw_ref = gpu(Tensor::zeros({c.N, c.K}));
    ops::linear_backward(dy, x, w, dx, dw_ref, db_ref);

    Tensor dx2, dw = gpu_full({c.N, c.K}, 5.0f), db = gpu_full({c.N}, 5.0f);
    dw.zero_deferred();
    db.zero_deferred();
    ops::linear_backward(dy, x, w, dx2, dw, db);
    EXPECT_FALSE(dw.storage()->zero_pending());
    expect_bitwise(dw, dw_ref, "dw, first write");
    expect_bitwise(db, db_ref, "db, first write");
    ops::linear_backward(dy, x, w, dx2, dw, db);
    expect_bitwise(dw, twice(cpu(dw_ref)), "dw, accumulated");
    expect_bitwise(db, twice(cpu(db_ref)), "db, accumulated");
  }
}

TEST(DeferredZeroCuda, EmptyProductLeavesTheZerosPending) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16Autocast autocast;
  const Tensor dy = gpu(Tensor::zeros({0, 16})), x = gpu(Tensor::zeros({0, 8}));
  const Tensor w = gpu(randn({16, 8}, 3));
  Tensor dx, dw = gpu_full({16, 8}, 9.0f), db;
  dw.zero_deferred();
  ops::linear_backward(dy, x, w, dx, dw, db);
  expect_all(dw, 0.0f, "dw of an empty product");
}

TEST(DeferredZeroCuda, LinearGroupBackwardOverwritesClaimedGradients) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16Autocast autocast;
  const int64_t M = 300, K = 96;
  const std::vector<int64_t> ns = {96, 32, 32};
  const Tensor x = gpu(small_ints({M, K}, 21, 4.0f));
  std::vector<Tensor> dy, w;
  for (size_t i = 0; i < ns.size(); ++i) {
    dy.push_back(gpu(small_ints({M, ns[i]}, 30 + i, 4.0f)));
    w.push_back(gpu(small_ints({ns[i], K}, 40 + i, 4.0f)));
  }
  auto run = [&](std::vector<Tensor>& dw, std::vector<Tensor>& db) {
    std::vector<ops::LinearGroupMember> members;
    for (size_t i = 0; i < ns.size(); ++i) members.push_back({&dy[i], &w[i], &dw[i], &db[i]});
    Tensor dx;
    ops::linear_group_backward(members, x, dx);
  };
  std::vector<Tensor> dw_ref, db_ref, dw, db;
  for (int64_t n : ns) {
    dw_ref.push_back(gpu(Tensor::zeros({n, K})));
    db_ref.push_back(gpu(Tensor::zeros({n})));
    dw.push_back(gpu_full({n, K}, 7.0f));
    db.push_back(gpu_full({n}, 7.0f));
    dw.back().zero_deferred();
    db.back().zero_deferred();
  }
  run(dw_ref, db_ref);
  run(dw, db);
  for (size_t i = 0; i < ns.size(); ++i) {
    EXPECT_FALSE(dw[i].storage()->zero_pending()) << "member " << i;
    expect_bitwise(dw[i], dw_ref[i], "group dw, first write");
    expect_bitwise(db[i], db_ref[i], "group db, first write");
  }
  run(dw, db);
  for (size_t i = 0; i < ns.size(); ++i)
    expect_bitwise(dw[i], twice(cpu(dw_ref[i])), "group dw, accumulated");
}

TEST(DeferredZeroCuda, PackedGroupBackwardOverwritesClaimedGradients) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16Autocast autocast;
  // Two members at columns 0 and 128 of a packed bf16 dy [M, 256] (zeros in unowned columns).
  const int64_t M = 200, K = 64, n0 = 100, n1 = 128, ld = 256;
  std::vector<float> packed(size_t(M * ld), 0.0f);
  const std::vector<float> d0 = small_ints({M, n0}, 51, 4.0f).to_vector();
  const std::vector<float> d1 = small_ints({M, n1}, 52, 4.0f).to_vector();
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t c = 0; c < n0; ++c) packed[size_t(r * ld + c)] = d0[size_t(r * n0 + c)];
    for (int64_t c = 0; c < n1; ++c) packed[size_t(r * ld + 128 + c)] = d1[size_t(r * n1 + c)];
  }
  const Tensor dy = gpu(Tensor::from_vector(packed, {M, ld}).to(DType::bf16));
  const Tensor x = gpu(small_ints({M, K}, 53, 4.0f));
  const Tensor w0 = gpu(small_ints({n0, K}, 54, 4.0f)), w1 = gpu(small_ints({n1, K}, 55, 4.0f));
  auto run = [&](Tensor& dw0, Tensor& dw1) {
    const std::vector<ops::LinearGroupPackedMember> members = {{&w0, &dw0, nullptr, 0},
                                                               {&w1, &dw1, nullptr, 128}};
    Tensor dx;
    ops::linear_group_backward_packed(dy, members, x, dx);
  };
  Tensor r0 = gpu(Tensor::zeros({n0, K})), r1 = gpu(Tensor::zeros({n1, K}));
  run(r0, r1);
  Tensor g0 = gpu_full({n0, K}, 6.0f), g1 = gpu_full({n1, K}, 6.0f);
  g0.zero_deferred();
  g1.zero_deferred();
  run(g0, g1);
  EXPECT_FALSE(g0.storage()->zero_pending());
  EXPECT_FALSE(g1.storage()->zero_pending());
  expect_bitwise(g0, r0, "packed dw 0, first write");
  expect_bitwise(g1, r1, "packed dw 1, first write");
  run(g0, g1);
  expect_bitwise(g0, twice(cpu(r0)), "packed dw 0, accumulated");
  expect_bitwise(g1, twice(cpu(r1)), "packed dw 1, accumulated");
}

TEST(DeferredZeroCuda, LogprobHeadBackwardOverwritesAClaimedGradient) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16Autocast autocast;
  const int64_t T = 96, H = 64, V = 1000, chunk = 256;
  const Tensor h = gpu(randn({T, H}, 61)), w = gpu(randn({V, H}, 62, 0.1f));
  const Tensor targets = gpu(gputest::rand_ids(T, int32_t(V), 64));
  const Tensor dlogp = gpu(randn({T}, 63));
  Tensor logp, entropy, lse;
  ops::linear_token_logprobs(h, w, targets, 1.0f, chunk, logp, entropy, lse);
  const Tensor none;
  Tensor dh, dw_ref = gpu(Tensor::zeros({V, H}));
  ops::linear_token_logprobs_backward(h, w, targets, 1.0f, chunk, lse, entropy, dlogp, none, dh,
                                      dw_ref);
  Tensor dh2, dw = gpu_full({V, H}, 8.0f);
  dw.zero_deferred();
  ops::linear_token_logprobs_backward(h, w, targets, 1.0f, chunk, lse, entropy, dlogp, none, dh2,
                                      dw);
  EXPECT_FALSE(dw.storage()->zero_pending());
  // The same bf16 products summed over T in f32, perhaps in another order (the beta-0 GEMM has
  // its own plan): |Δ| <= 2·γ_T·Σ_t |dz||h| <= 2·(T + 1)·2^-24·Σ_t |dz||h|, bounded here by its
  // per-row maximum: |dz| <= |dlogp|·(1 + 1) (softmax minus one-hot) and |h| as drawn.
  const std::vector<float> got = dw.to_vector(), want = dw_ref.to_vector();
  const std::vector<float> hv = cpu(h).to_vector(), dl = cpu(dlogp).to_vector();
  double s = 0;  // Σ_t 2|dlogp_t|·max_j |h_tj|: a bound on Σ_t |dz_tv||h_tj| for every v, j
  for (int64_t t = 0; t < T; ++t) {
    double hm = 0;
    for (int64_t j = 0; j < H; ++j) hm = std::max(hm, double(std::fabs(hv[size_t(t * H + j)])));
    s += 2.0 * std::fabs(dl[size_t(t)]) * hm * 1.01;  // 1.01: bf16 rounding of dz and h
  }
  const double bound = 2.0 * double(T + 1) * std::ldexp(1.0, -24) * s;
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += !(std::fabs(double(got[i]) - want[i]) <= bound);
  EXPECT_EQ(bad, 0) << "head dw vs the eagerly zeroed one, bound " << bound;
}

}  // namespace
}  // namespace gyre
