// Forward results of the ops against direct reference formulas (attention as an O(T²) double loop,
// softmax / log-prob / entropy from their definitions, HF RMSNorm and rotate_half RoPE, torch.topk
// tie order), and AdamW against its closed form.
#include <gtest/gtest.h>

#include <cmath>

#include "grad_check.h"
#include "gyre/backend/ops.h"

using namespace gyre;
using gyre::test::random_tensor;
using gyre::test::values;

namespace {
const DType f64 = DType::f64, f32 = DType::f32;

// Direct causal GQA attention in double: out [T, Hq, D], lse [T, Hq].
void naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, const std::vector<int32_t>& cu, int64_t Hq,
                     int64_t Hkv, int64_t D, double scale, std::vector<double>* out,
                     std::vector<double>* lse) {
  const int64_t T = cu.back(), G = Hq / Hkv;
  out->assign(size_t(T * Hq * D), 0.0);
  lse->assign(size_t(T * Hq), 0.0);
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int64_t i = cu[b]; i < cu[b + 1]; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / G;
        std::vector<double> s;
        double m = -INFINITY;
        for (int64_t j = cu[b]; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q[size_t((i * Hq + h) * D + d)] * k[size_t((j * Hkv + g) * D + d)];
          s.push_back(dot * scale);
          m = std::max(m, s.back());
        }
        double z = 0;
        for (double x : s) z += std::exp(x - m);
        (*lse)[size_t(i * Hq + h)] = m + std::log(z);
        for (int64_t j = cu[b]; j <= i; ++j) {
          double p = std::exp(s[size_t(j - cu[b])] - m) / z;
          for (int64_t d = 0; d < D; ++d)
            (*out)[size_t((i * Hq + h) * D + d)] += p * v[size_t((j * Hkv + g) * D + d)];
        }
      }
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

void check_attention_forward(DType dt, double tol) {
  const std::vector<int32_t> cu = {0, 70, 70, 71, 201};  // 70, empty, 1, 130 tokens
  const int64_t T = cu.back(), Hq = 4, Hkv = 2, D = 8;
  Tensor q = random_tensor({T, Hq, D}, 1, dt), k = random_tensor({T, Hkv, D}, 2, dt);
  Tensor v = random_tensor({T, Hkv, D}, 3, dt);
  Tensor cus = Tensor::from_vector(cu, {int64_t(cu.size())});
  const float scale = 1.0f / std::sqrt(float(D));
  Tensor out, lse;
  ops::attention_varlen(q, k, v, cus, scale, out, lse);
  EXPECT_EQ(out.shape(), q.shape());
  EXPECT_EQ(lse.shape(), (Shape{T, Hq}));
  std::vector<double> ro, rl;
  naive_attention(values(q), values(k), values(v), cu, Hq, Hkv, D, scale, &ro, &rl);
  EXPECT_LT(max_abs_diff(values(out), ro), tol);
  EXPECT_LT(max_abs_diff(values(lse), rl), tol);
}
}  // namespace

TEST(OpsForward, AttentionMatchesNaiveLoopF64) { check_attention_forward(f64, 1e-12); }
TEST(OpsForward, AttentionMatchesNaiveLoopF32) { check_attention_forward(f32, 2e-5); }

TEST(OpsForward, AttentionBackwardF32AgreesWithF64) {
  const std::vector<int32_t> cu = {0, 90, 91, 120};
  const int64_t T = cu.back(), Hq = 4, Hkv = 1, D = 16;
  Tensor cus = Tensor::from_vector(cu, {int64_t(cu.size())});
  Tensor q = random_tensor({T, Hq, D}, 5), k = random_tensor({T, Hkv, D}, 6);
  Tensor v = random_tensor({T, Hkv, D}, 7), dout = random_tensor({T, Hq, D}, 8);
  std::vector<double> grads[2][3];
  for (int i = 0; i < 2; ++i) {
    DType dt = i ? f32 : f64;
    Tensor qq = q.to(dt), kk = k.to(dt), vv = v.to(dt), dd = dout.to(dt);
    Tensor out, lse, dq, dk, dv;
    ops::attention_varlen(qq, kk, vv, cus, 0.25f, out, lse);
    ops::attention_varlen_backward(dd, qq, kk, vv, out, lse, cus, 0.25f, dq, dk, dv);
    grads[i][0] = values(dq), grads[i][1] = values(dk), grads[i][2] = values(dv);
  }
  for (int j = 0; j < 3; ++j) EXPECT_LT(max_abs_diff(grads[0][j], grads[1][j]), 1e-4) << j;
}

TEST(OpsForward, SoftmaxRowsSumToOneAndLogSoftmaxIsItsLog) {
  Tensor x = random_tensor({6, 37}, 11, f32, 4.0);
  x.data<float>()[5] = 80.0f;  // a large logit must not overflow
  Tensor p, lp;
  ops::softmax_rows(x, p);
  ops::log_softmax_rows(x, lp);
  auto xv = values(x);
  for (int64_t r = 0; r < 6; ++r) {
    double m = -INFINITY, z = 0, sum = 0;
    for (int64_t c = 0; c < 37; ++c) m = std::max(m, xv[size_t(r * 37 + c)]);
    for (int64_t c = 0; c < 37; ++c) z += std::exp(xv[size_t(r * 37 + c)] - m);
    for (int64_t c = 0; c < 37; ++c) {
      double ref = std::exp(xv[size_t(r * 37 + c)] - m) / z;
      double got = p.data<float>()[r * 37 + c];
      sum += got;
      EXPECT_NEAR(got, ref, 1e-6 * std::max(ref, 1e-3)) << r << "," << c;
      EXPECT_NEAR(lp.data<float>()[r * 37 + c], std::log(ref), 2e-5) << r << "," << c;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

TEST(OpsForward, TokenLogprobsEqualLogSoftmaxAtTemperature) {
  const int64_t T = 5, V = 1000;
  const float tau = 0.7f;
  Tensor logits = random_tensor({T, V}, 21, f32, 3.0);
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, 999, -100, 512, 7}, {T});
  Tensor logp, ent = Tensor::empty({T}, f32);
  ops::token_logprobs(logits, targets, tau, logp, ent);
  auto lv = values(logits);
  for (int64_t t = 0; t < T; ++t) {
    double m = -INFINITY, z = 0, h = 0;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, lv[size_t(t * V + j)] / tau);
    for (int64_t j = 0; j < V; ++j) z += std::exp(lv[size_t(t * V + j)] / tau - m);
    for (int64_t j = 0; j < V; ++j) {
      double lpj = lv[size_t(t * V + j)] / tau - m - std::log(z);
      h -= std::exp(lpj) * lpj;
    }
    int32_t tg = targets.i32()[t];
    double ref = tg < 0 ? 0.0 : lv[size_t(t * V + tg)] / tau - m - std::log(z);
    EXPECT_NEAR(logp.f32()[t], ref, 1e-5) << t;
    EXPECT_NEAR(ent.f32()[t], h, 1e-5) << t;
  }
  EXPECT_EQ(logp.f32()[2], 0.0f);  // negative target: skipped, written as 0
}

TEST(OpsForward, MoeRouteTopkTiesAndNormalisation) {
  // Row 0: experts 1 and 2 tie for first: torch.topk gives 1 then 2. Row 1: 0 and 3 tie below 2.
  Tensor logits = Tensor::from_vector(std::vector<float>{0, 2, 2, -1, 1, 0, 3, 1}, {2, 4});
  Tensor probs, idx, w;
  ops::moe_route(logits, 2, /*norm_topk=*/false, probs, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx.i32(), idx.i32() + 4), (std::vector<int32_t>{1, 2, 2, 0}));
  double z0 = 1 + 2 * std::exp(2.0) + std::exp(-1.0);
  EXPECT_NEAR(w.f32()[0], std::exp(2.0) / z0, 1e-7);
  EXPECT_NEAR(w.f32()[1], std::exp(2.0) / z0, 1e-7);
  for (int64_t r = 0; r < 2; ++r) {
    double s = 0;
    for (int64_t e = 0; e < 4; ++e) s += probs.f32()[r * 4 + e];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  Tensor p2, i2, w2;
  ops::moe_route(logits, 2, /*norm_topk=*/true, p2, i2, w2);
  EXPECT_NEAR(w2.f32()[0], 0.5, 1e-7);
  EXPECT_NEAR(w2.f32()[2] + w2.f32()[3], 1.0, 1e-7);
  EXPECT_NEAR(w2.f32()[2], std::exp(3.0) / (std::exp(3.0) + std::exp(1.0)), 1e-6);
}

TEST(OpsForward, RmsNormMatchesHfFormula) {
  const int64_t R = 3, H = 300;
  Tensor x = random_tensor({R, H}, 31, f32, 2.0), w = random_tensor({H}, 32, f32, 0.3, 1.0);
  Tensor y, rstd;
  ops::rms_norm(x, w, 1e-6f, y, rstd);
  auto xv = values(x), wv = values(w);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < H; ++c) ss += xv[size_t(r * H + c)] * xv[size_t(r * H + c)];
    double rs = 1.0 / std::sqrt(ss / H + 1e-6);
    EXPECT_NEAR(rstd.f32()[r], rs, 1e-6 * rs);
    for (int64_t c = 0; c < H; ++c)
      EXPECT_NEAR(y.f32()[r * H + c], wv[size_t(c)] * xv[size_t(r * H + c)] * rs, 2e-6);
  }
}

TEST(OpsForward, RopeRotateHalfConvention) {
  const int64_t T = 2, H = 1, D = 4;
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}, {T, H, D});
  Tensor cos = Tensor::from_vector(std::vector<float>{1, 1, 0.5f, 0.25f}, {2, 2});
  Tensor sin = Tensor::from_vector(std::vector<float>{0, 0, 2, 3}, {2, 2});
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{1, 0}, {T});
  ops::rope_(x, pos, cos, sin);
  // token 0 at position 1: x'[i] = x[i] c - x[i+2] s, x'[i+2] = x[i+2] c + x[i] s
  std::vector<float> expect = {
      1 * 0.5f - 3 * 2, 2 * 0.25f - 4 * 3, 3 * 0.5f + 1 * 2, 4 * 0.25f + 2 * 3, 5, 6, 7, 8};
  EXPECT_EQ(x.to_vector(), expect);
}

TEST(OpsForward, LinearAndElementwise) {
  Tensor x = random_tensor({2, 3, 5}, 41, f32), w = random_tensor({4, 5}, 42, f32);
  Tensor b = random_tensor({4}, 43, f32);
  Tensor y;
  ops::linear(x, w, b, y);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
  auto xv = values(x), wv = values(w), bv = values(b);
  for (int64_t m = 0; m < 6; ++m)
    for (int64_t n = 0; n < 4; ++n) {
      double ref = bv[size_t(n)];
      for (int64_t k = 0; k < 5; ++k) ref += xv[size_t(m * 5 + k)] * wv[size_t(n * 5 + k)];
      EXPECT_NEAR(y.f32()[m * 4 + n], ref, 1e-5);
    }
  Tensor g = random_tensor({7}, 44, f32, 3.0), u = random_tensor({7}, 45, f32), s;
  ops::silu_mul(g, u, s);
  for (int64_t i = 0; i < 7; ++i) {
    double gi = g.f32()[i];
    EXPECT_NEAR(s.f32()[i], gi / (1 + std::exp(-gi)) * u.f32()[i], 1e-6);
  }
  Tensor a = Tensor::from_vector(std::vector<float>{1, -2, 3}, {3});
  Tensor c = Tensor::from_vector(std::vector<float>{0.5f, 0.5f, 0.5f}, {3});
  Tensor sum;
  ops::add(a, c, sum);
  EXPECT_EQ(sum.to_vector(), (std::vector<float>{1.5f, -1.5f, 3.5f}));
  ops::add_(a, c);
  ops::scale_(a, 2.0f);
  EXPECT_EQ(a.to_vector(), (std::vector<float>{3, -3, 7}));
  EXPECT_DOUBLE_EQ(ops::sum_squares(a), 9 + 9 + 49);
  Tensor d = Tensor::empty({3}, f32);
  ops::copy(a, d);
  EXPECT_EQ(d.to_vector(), a.to_vector());
}

TEST(OpsForward, GatherScatterRowDot) {
  Tensor src = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor idx = Tensor::from_vector(std::vector<int32_t>{2, 0, 2}, {3});
  Tensor g;
  ops::gather_rows(src, idx, g);
  EXPECT_EQ(g.to_vector(), (std::vector<float>{5, 6, 1, 2, 5, 6}));
  Tensor out = Tensor::zeros({3, 2});
  Tensor scale = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  ops::scatter_add_rows(g, idx, scale, out);  // row 2 += 1*[5,6] + 3*[5,6]; row 0 += 2*[1,2]
  EXPECT_EQ(out.to_vector(), (std::vector<float>{2, 4, 0, 0, 20, 24}));
  Tensor dots;
  ops::row_dot(src, src, dots);
  EXPECT_EQ(dots.to_vector(), (std::vector<float>{5, 25, 61}));
}

TEST(OpsForward, AdamWThreeStepsClosedForm) {
  // Constant gradient g: m_t = (1-β1^t) g and v_t = (1-β2^t) g², so the bias-corrected update is
  // lr·g/(|g| + eps) every step, after the decoupled decay p ← p (1 - lr·wd).
  ops::AdamWParams hp;
  hp.lr = 0.01f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f;
  Tensor p = Tensor::from_vector(std::vector<float>{1.0f, -2.0f, 0.5f}, {3});
  Tensor g = Tensor::from_vector(std::vector<float>{0.3f, -0.04f, 2.0f}, {3});
  Tensor m = Tensor::zeros({3}), v = Tensor::zeros({3});
  std::vector<double> ref = {1.0, -2.0, 0.5};
  const double lr = hp.lr, wd = hp.weight_decay, eps = hp.eps;
  const double b1 = hp.beta1, b2 = hp.beta2;
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    ops::adamw_step(p, g, m, v, hp);
    for (size_t i = 0; i < 3; ++i) {
      double gi = g.f32()[i];
      ref[i] = ref[i] * (1 - lr * wd) - lr * gi / (std::abs(gi) + eps);
      EXPECT_NEAR(m.f32()[i], (1 - std::pow(b1, step)) * gi, 1e-6);
      EXPECT_NEAR(v.f32()[i], (1 - std::pow(b2, step)) * gi * gi, 1e-6);
    }
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(p.f32()[i], ref[i], 2e-6) << step << " " << i;
  }
  // Varying gradients, f64: the recurrence by hand.
  Tensor p64 = Tensor::from_vector(std::vector<float>{0.7f}, {1}).to(f64);
  Tensor m64 = Tensor::zeros({1}, f64), v64 = Tensor::zeros({1}, f64);
  double pr = double(0.7f), mr = 0, vr = 0;
  const double gs[3] = {0.5, -1.5, 0.25};
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    Tensor g64 = Tensor::zeros({1}, f64);
    g64.data<double>()[0] = gs[step - 1];
    ops::adamw_step(p64, g64, m64, v64, hp);
    pr *= 1 - lr * wd;
    mr = b1 * mr + (1 - b1) * gs[step - 1];
    vr = b2 * vr + (1 - b2) * gs[step - 1] * gs[step - 1];
    double mhat = mr / (1 - std::pow(b1, step)), vhat = vr / (1 - std::pow(b2, step));
    pr -= lr * mhat / (std::sqrt(vhat) + eps);
    EXPECT_NEAR(p64.data<double>()[0], pr, 1e-12) << step;
  }
}

// An empty inner dimension (K = 0) is a valid product: y is the bias rows (zeros without a bias),
// and the backward leaves dw/db gradients consistent (db still sums dy).
TEST(OpsForward, LinearWithEmptyInnerDimensionIsTheBias) {
  Tensor x = Tensor::zeros({3, 0}), w = Tensor::zeros({2, 0});
  Tensor b = Tensor::from_vector(std::vector<float>{1.5f, -2.0f}, {2});
  Tensor y;
  ops::linear(x, w, b, y);
  ASSERT_EQ(y.shape(), (Shape{3, 2}));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1.5f, -2.0f, 1.5f, -2.0f, 1.5f, -2.0f}));
  Tensor y0;
  ops::linear(x, w, Tensor(), y0);
  EXPECT_EQ(y0.to_vector(), (std::vector<float>(6, 0.0f)));
  Tensor dy = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor dx, dw = Tensor::zeros({2, 0}), db = Tensor::zeros({2});
  ops::linear_backward(dy, x, w, dx, dw, db);
  EXPECT_EQ(db.to_vector(), (std::vector<float>{9, 12}));
}
