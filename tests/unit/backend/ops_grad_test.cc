// Finite-difference checks (float64, central differences) of every op that has a backward: the
// analytic gradient from ops::*_backward must match d(Σ out ∘ R)/d(input) for a fixed random R.
#include <gtest/gtest.h>

#include "grad_check.h"
#include "gyre/backend/ops.h"

using namespace gyre;
using gyre::test::expect_grad;
using gyre::test::random_tensor;
using gyre::test::weighted_sum;

namespace {
const DType f64 = DType::f64;
}

TEST(OpsGrad, LinearWithBiasAccumulates) {
  const int64_t M = 5, N = 4, K = 3;
  Tensor x = random_tensor({M, K}, 1), w = random_tensor({N, K}, 2), b = random_tensor({N}, 3);
  Tensor r = random_tensor({M, N}, 4);
  auto loss = [&] {
    Tensor y;
    ops::linear(x, w, b, y);
    return weighted_sum(y, r);
  };
  // Parameter gradients accumulate: start from non-zero values and subtract them afterwards.
  Tensor dw0 = random_tensor({N, K}, 5), db0 = random_tensor({N}, 6);
  Tensor dw = dw0.clone(), db = db0.clone(), dx;
  dx = Tensor::zeros({M, K}, f64);
  ops::linear_backward(r, x, w, dx, dw, db);
  for (int64_t i = 0; i < dw.numel(); ++i) dw.data<double>()[i] -= dw0.data<double>()[i];
  for (int64_t i = 0; i < db.numel(); ++i) db.data<double>()[i] -= db0.data<double>()[i];
  expect_grad("linear dx", loss, x, dx);
  expect_grad("linear dw", loss, w, dw);
  expect_grad("linear db", loss, b, db);
  // accumulate_dx adds to what is there.
  Tensor dx2 = dx.clone(), none;
  ops::linear_backward(r, x, w, dx2, none, none, /*accumulate_dx=*/true);
  for (int64_t i = 0; i < dx.numel(); ++i)
    EXPECT_NEAR(dx2.data<double>()[i], 2 * dx.data<double>()[i], 1e-12);
}

TEST(OpsGrad, RmsNorm) {
  const int64_t R = 4, H = 6;
  Tensor x = random_tensor({2, R / 2, H}, 11), w = random_tensor({H}, 12, f64, 0.5, 1.0);
  Tensor r = random_tensor({2, R / 2, H}, 13);
  const float eps = 1e-2f;  // large enough that eps matters in the check
  auto loss = [&] {
    Tensor y, rstd;
    ops::rms_norm(x, w, eps, y, rstd);
    return weighted_sum(y, r);
  };
  Tensor y, rstd, dx;
  ops::rms_norm(x, w, eps, y, rstd);
  Tensor dw = Tensor::zeros({H}, f64);
  ops::rms_norm_backward(r, x, w, rstd, dx, dw);
  expect_grad("rms_norm dx", loss, x, dx);
  expect_grad("rms_norm dw", loss, w, dw);
}

TEST(OpsGrad, RopeInverseIsTheBackward) {
  const int64_t T = 5, H = 3, D = 8, P = 16;
  Tensor x = random_tensor({T, H, D}, 21), r = random_tensor({T, H, D}, 22);
  Tensor cos = Tensor::empty({P, D / 2}, f64), sin = Tensor::empty({P, D / 2}, f64);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      double ang = p * std::pow(10000.0, -2.0 * i / D);
      cos.data<double>()[p * D / 2 + i] = 1.2 * std::cos(ang);  // YaRN-style mscale folded in
      sin.data<double>()[p * D / 2 + i] = 1.2 * std::sin(ang);
    }
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{0, 3, 1, 15, 7}, {T});
  auto loss = [&] {
    Tensor y = x.clone();
    ops::rope_(y, pos, cos, sin);
    return weighted_sum(y, r);
  };
  Tensor dx = r.clone();
  ops::rope_(dx, pos, cos, sin, /*inverse=*/true);
  expect_grad("rope dx", loss, x, dx);
}

TEST(OpsGrad, SiluMul) {
  Tensor g = random_tensor({3, 7}, 31, f64, 2.0), u = random_tensor({3, 7}, 32);
  Tensor r = random_tensor({3, 7}, 33);
  auto loss = [&] {
    Tensor out;
    ops::silu_mul(g, u, out);
    return weighted_sum(out, r);
  };
  Tensor dg, du;
  ops::silu_mul_backward(r, g, u, dg, du);
  expect_grad("silu_mul dgate", loss, g, dg);
  expect_grad("silu_mul dup", loss, u, du);
}

namespace {
// FD check of attention on one packing; `sample` > 0 checks that many random elements per input.
void check_attention_grad(const std::vector<int32_t>& cu, int64_t Hq, int64_t Hkv, int64_t D,
                          uint64_t seed, int sample = 0) {
  const int64_t T = cu.back();
  Tensor q = random_tensor({T, Hq, D}, seed), k = random_tensor({T, Hkv, D}, seed + 1);
  Tensor v = random_tensor({T, Hkv, D}, seed + 2), r = random_tensor({T, Hq, D}, seed + 3);
  Tensor cus = Tensor::from_vector(cu, {int64_t(cu.size())});
  const float scale = 0.7f;
  auto loss = [&] {
    Tensor out, lse;
    ops::attention_varlen(q, k, v, cus, scale, out, lse);
    return weighted_sum(out, r);
  };
  Tensor out, lse, dq, dk, dv;
  ops::attention_varlen(q, k, v, cus, scale, out, lse);
  ops::attention_varlen_backward(r, q, k, v, out, lse, cus, scale, dq, dk, dv);
  auto pick = [&](const Tensor& t, uint64_t s) {
    std::vector<int64_t> idx;
    std::mt19937_64 rng(s);
    for (int i = 0; i < sample; ++i) idx.push_back(int64_t(rng() % uint64_t(t.numel())));
    return idx;
  };
  expect_grad("attention dq", loss, q, dq, 1e-6, pick(q, seed + 7));
  expect_grad("attention dk", loss, k, dk, 1e-6, pick(k, seed + 8));
  expect_grad("attention dv", loss, v, dv, 1e-6, pick(v, seed + 9));
}
}  // namespace

TEST(OpsGrad, AttentionGqaVarlenWithEmptyAndSingleTokenSequences) {
  // Lengths 3, 0 (empty), 1, 5; 4 query heads over 2 kv heads.
  check_attention_grad({0, 3, 3, 4, 9}, 4, 2, 3, 41);
}

TEST(OpsGrad, AttentionMultiHeadNoGqa) { check_attention_grad({0, 4, 6}, 2, 2, 4, 51); }

TEST(OpsGrad, AttentionLongSequenceCrossesQueryBlocks) {
  // 150 tokens span three query blocks; a sample of elements keeps the test fast.
  check_attention_grad({0, 150, 157}, 2, 1, 4, 61, /*sample=*/25);
}

TEST(OpsGrad, TokenLogprobsWithTemperatureAndEntropy) {
  const int64_t T = 4, V = 7;
  Tensor logits = random_tensor({T, V}, 71, f64, 2.0);
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{3, -1, 0, 6}, {T});
  Tensor a = random_tensor({T}, 72), b = random_tensor({T}, 73);
  const float tau = 0.7f;
  auto loss = [&] {
    Tensor logp, ent = Tensor::empty({T}, f64);
    ops::token_logprobs(logits, targets, tau, logp, ent);
    return weighted_sum(logp, a) + weighted_sum(ent, b);
  };
  Tensor dl;
  ops::token_logprobs_backward(logits, targets, tau, a, b, dl);
  expect_grad("token_logprobs dlogits (logp + entropy)", loss, logits, dl);
  // Without the entropy gradient.
  auto loss_lp = [&] {
    Tensor logp, none;
    ops::token_logprobs(logits, targets, tau, logp, none);
    return weighted_sum(logp, a);
  };
  Tensor dl2, none;
  ops::token_logprobs_backward(logits, targets, tau, a, none, dl2);
  expect_grad("token_logprobs dlogits (logp only)", loss_lp, logits, dl2);
}

namespace {
void check_moe_grad(bool norm_topk) {
  const int64_t T = 5, E = 6, k = 2;
  Tensor logits = random_tensor({T, E}, norm_topk ? 81 : 82, f64, 1.5);
  Tensor r = random_tensor({T, k}, 83);
  auto loss = [&] {
    Tensor probs, idx, w;
    ops::moe_route(logits, k, norm_topk, probs, idx, w);
    return weighted_sum(w, r);
  };
  Tensor probs, idx, w, dl;
  ops::moe_route(logits, k, norm_topk, probs, idx, w);
  ops::moe_route_backward(r, probs, idx, norm_topk, dl);
  expect_grad(norm_topk ? "moe_route (norm_topk)" : "moe_route", loss, logits, dl);
}
}  // namespace

TEST(OpsGrad, MoeRouteNormTopk) { check_moe_grad(true); }
TEST(OpsGrad, MoeRouteNoNorm) { check_moe_grad(false); }

TEST(OpsGrad, EmbeddingScatterAccumulatesDuplicates) {
  const int64_t V = 5, H = 3;
  Tensor table = random_tensor({V, H}, 91);
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{4, 1, 4, 0, 4}, {5});
  Tensor r = random_tensor({5, H}, 92);
  auto loss = [&] {
    Tensor out;
    ops::embedding(ids, table, out);
    return weighted_sum(out, r);
  };
  Tensor d0 = random_tensor({V, H}, 93);
  Tensor dt = d0.clone();
  ops::embedding_backward(ids, r, dt);
  for (int64_t i = 0; i < dt.numel(); ++i) dt.data<double>()[i] -= d0.data<double>()[i];
  expect_grad("embedding dtable", loss, table, dt);
}

TEST(OpsGrad, GatherScatterRowDotAreEachOthersAdjoints) {
  // The MoE layer's backward composes these: check scatter_add_rows' src/scale gradients, which
  // the model obtains through gather_rows and row_dot.
  const int64_t R = 4, H = 3, n = 6;
  Tensor src = random_tensor({n, H}, 101), scale = random_tensor({n}, 102);
  Tensor idx = Tensor::from_vector(std::vector<int32_t>{2, 0, 2, 3, 1, 2}, {n});
  Tensor r = random_tensor({R, H}, 103);
  auto loss = [&] {
    Tensor out = Tensor::zeros({R, H}, f64);
    ops::scatter_add_rows(src, idx, scale, out);
    return weighted_sum(out, r);
  };
  Tensor g;  // d/d src[i] = scale[i] * r[idx[i]]
  ops::gather_rows(r, idx, g);
  Tensor dscale;  // d/d scale[i] = <src[i], r[idx[i]]>
  ops::row_dot(src, g, dscale);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < H; ++c) g.data<double>()[i * H + c] *= scale.data<double>()[i];
  expect_grad("scatter_add_rows dsrc", loss, src, g);
  expect_grad("scatter_add_rows dscale", loss, scale, dscale);
}
