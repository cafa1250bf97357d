// Fused decode linears (backend/fused_linear_ops.h) on the CPU: bitwise the unfused composition
// (linear per member; linear, linear, silu_mul; linear then add; the whole MLP as the two fused
// ops and as rms_norm, linear, linear, silu_mul, linear, add), with and without biases, in f32
// and f64, and argument errors that name the argument before any output changes.
#include "gyre/backend/fused_linear_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "test_util.h"

namespace gyre::ops {
namespace {

using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  PhiloxStream r(seed, 5);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal();
  Tensor t = Tensor::from_vector(v, s);
  if (dt == DType::f32) return t;
  Tensor d = Tensor::empty(s, dt);
  for (int64_t i = 0; i < t.numel(); ++i) d.data<double>()[i] = double(t.f32()[i]);
  return d;
}

using test::error_of;

void expect_bitwise(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const size_t bytes = size_t(got.numel()) * (got.dtype() == DType::f64 ? 8 : 4);
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), bytes), 0) << what;
}

class FusedLinearCpu : public ::testing::TestWithParam<std::tuple<DType, bool>> {};

TEST_P(FusedLinearCpu, GroupEqualsOneLinearPerMember) {
  const auto [dt, bias] = GetParam();
  const int64_t K = 24;
  const std::vector<int64_t> ns = {7, 3, 3, 5, 1};  // more members than one CUDA launch takes
  for (int64_t M : {1, 3, 8, 11}) {
    Tensor x = randn({M, K}, 1 + M, dt);
    std::vector<Tensor> w, b, y(ns.size()), want(ns.size());
    for (size_t i = 0; i < ns.size(); ++i) {
      w.push_back(randn({ns[i], K}, 10 + i, dt));
      b.push_back(bias && i != 1 ? randn({ns[i]}, 20 + i, dt) : Tensor());  // member 1: no bias
    }
    std::vector<const Tensor*> wp, bp;
    std::vector<Tensor*> yp;
    for (size_t i = 0; i < ns.size(); ++i)
      wp.push_back(&w[i]), bp.push_back(&b[i]), yp.push_back(&y[i]);
    linear_group(x, wp, bp, yp);
    for (size_t i = 0; i < ns.size(); ++i) {
      linear(x, w[i], b[i], want[i]);
      expect_bitwise(y[i], want[i], "M " + std::to_string(M) + " member " + std::to_string(i));
    }
  }
}

TEST_P(FusedLinearCpu, SiluMulEqualsLinearsThenSiluMul) {
  const auto [dt, bias] = GetParam();
  const int64_t K = 16, N = 13;
  for (int64_t M : {1, 5, 9}) {
    Tensor x = randn({M, K}, 3 + M, dt), wg = randn({N, K}, 4, dt), wu = randn({N, K}, 5, dt);
    Tensor bg = bias ? randn({N}, 6, dt) : Tensor(), bu = bias ? randn({N}, 7, dt) : Tensor();
    Tensor out, g, u, want;
    linear_silu_mul(x, wg, bg, wu, bu, out);
    linear(x, wg, bg, g);
    linear(x, wu, bu, u);
    silu_mul(g, u, want);
    expect_bitwise(out, want, "M " + std::to_string(M));
  }
}

TEST_P(FusedLinearCpu, AddResidualEqualsLinearThenAdd) {
  const auto [dt, bias] = GetParam();
  const int64_t K = 40, N = 9;
  for (int64_t M : {1, 4, 12}) {
    Tensor x = randn({M, K}, 8 + M, dt), w = randn({N, K}, 9, dt), r = randn({M, N}, 10, dt);
    Tensor b = bias ? randn({N}, 11, dt) : Tensor();
    Tensor y, want;
    linear_add_residual(x, w, b, r, y);
    linear(x, w, b, want);
    add(want, r, want);
    expect_bitwise(y, want, "M " + std::to_string(M));
    // In place on the residual: the same values.
    Tensor r2 = r.clone();
    linear_add_residual(x, w, b, r2, r2);
    expect_bitwise(r2, want, "in place, M " + std::to_string(M));
  }
}

// The RMSNorm-folded ops are rms_norm followed by the fused linear: bitwise on the CPU (which
// runs exactly that), with rms_norm's outputs returned when asked for.
TEST_P(FusedLinearCpu, RmsNormGroupEqualsRmsNormThenLinears) {
  const auto [dt, bias] = GetParam();
  const float eps = 1e-6f;
  const std::vector<int64_t> ns = {7, 3, 3, 5, 1};
  for (int64_t K : {5, 24}) {
    const Tensor nw = randn({K}, 30 + K, dt);
    for (int64_t M : {1, 3, 8, 11}) {
      const Tensor x = randn({M, K}, 31 + M, dt);
      std::vector<Tensor> w, b, y(ns.size()), want(ns.size());
      for (size_t i = 0; i < ns.size(); ++i) {
        w.push_back(randn({ns[i], K}, 40 + i, dt));
        b.push_back(bias && i != 1 ? randn({ns[i]}, 50 + i, dt) : Tensor());
      }
      std::vector<const Tensor*> wp, bp;
      std::vector<Tensor*> yp;
      for (size_t i = 0; i < ns.size(); ++i)
        wp.push_back(&w[i]), bp.push_back(&b[i]), yp.push_back(&y[i]);
      Tensor xn_got, rstd_got;
      rms_norm_linear_group(x, nw, eps, wp, bp, yp, &xn_got, &rstd_got);
      Tensor xn, rstd;
      rms_norm(x, nw, eps, xn, rstd);
      const std::string what = "K " + std::to_string(K) + " M " + std::to_string(M);
      expect_bitwise(xn_got, xn, what + " xn");
      expect_bitwise(rstd_got, rstd, what + " rstd");
      for (size_t i = 0; i < ns.size(); ++i) {
        linear(xn, w[i], b[i], want[i]);
        expect_bitwise(y[i], want[i], what + " member " + std::to_string(i));
      }
      std::vector<Tensor> y2(ns.size());  // without the norm outputs: the same linears
      std::vector<Tensor*> yp2;
      for (Tensor& t : y2) yp2.push_back(&t);
      rms_norm_linear_group(x, nw, eps, wp, bp, yp2);
      for (size_t i = 0; i < ns.size(); ++i) expect_bitwise(y2[i], want[i], what + " no outputs");
    }
  }
}

TEST_P(FusedLinearCpu, RmsNormSiluMulEqualsRmsNormThenLinearsThenSiluMul) {
  const auto [dt, bias] = GetParam();
  const float eps = 1e-5f;
  const int64_t N = 13;
  for (int64_t K : {5, 16}) {
    const Tensor nw = randn({K}, 60 + K, dt);
    const Tensor wg = randn({N, K}, 61, dt), wu = randn({N, K}, 62, dt);
    const Tensor bg = bias ? randn({N}, 63, dt) : Tensor(),
                 bu = bias ? randn({N}, 64, dt) : Tensor();
    for (int64_t M : {1, 5, 9}) {
      const Tensor x = randn({M, K}, 65 + M, dt);
      Tensor out, rstd_got;
      rms_norm_linear_silu_mul(x, nw, eps, wg, bg, wu, bu, out, nullptr, &rstd_got);
      Tensor xn, rstd, g, u, want;
      rms_norm(x, nw, eps, xn, rstd);
      linear(xn, wg, bg, g);
      linear(xn, wu, bu, u);
      silu_mul(g, u, want);
      const std::string what = "K " + std::to_string(K) + " M " + std::to_string(M);
      expect_bitwise(out, want, what);
      expect_bitwise(rstd_got, rstd, what + " rstd");
    }
  }
}

// The whole-MLP op is the composition it is defined as — rms_norm_linear_silu_mul, then
// linear_add_residual — and so rms_norm, linear, linear, silu_mul, linear, add; with out separate,
// allocated, the residual itself, and the residual being x (N == K), and N != K.
TEST_P(FusedLinearCpu, SwigluMlpResidualEqualsTheComposition) {
  const auto [dt, bias] = GetParam();
  const float eps = 1e-6f;
  using Dims = std::tuple<int64_t, int64_t, int64_t>;  // K, I, N
  for (const auto& [K, I, N] : {Dims{16, 24, 16}, Dims{5, 13, 3}}) {
    const Tensor nw = randn({K}, 70 + K, dt);
    const Tensor wg = randn({I, K}, 71, dt), wu = randn({I, K}, 72, dt), wd = randn({N, I}, 73, dt);
    const Tensor bg = bias ? randn({I}, 74, dt) : Tensor(),
                 bu = bias ? randn({I}, 75, dt) : Tensor();
    const Tensor bd = bias ? randn({N}, 76, dt) : Tensor();
    for (int64_t M : {1, 8, 9, 12}) {
      const std::string what =
          "K " + std::to_string(K) + " N " + std::to_string(N) + " M " + std::to_string(M);
      const Tensor x = randn({M, K}, 77 + M, dt), r = randn({M, N}, 78 + M, dt);
      Tensor xn, rstd, g, u, act, t, want;
      rms_norm(x, nw, eps, xn, rstd);
      linear(xn, wg, bg, g);
      linear(xn, wu, bu, u);
      silu_mul(g, u, act);
      linear(act, wd, bd, t);
      add(t, r, want);
      Tensor act2, want2;
      rms_norm_linear_silu_mul(x, nw, eps, wg, bg, wu, bu, act2);
      linear_add_residual(act2, wd, bd, r, want2);
      expect_bitwise(want2, want, what + " two fused ops");
      Tensor out;
      rms_norm_swiglu_mlp_residual(x, nw, eps, wg, bg, wu, bu, wd, bd, r, out);
      expect_bitwise(out, want, what + " allocated");
      Tensor out2 = Tensor::empty({M, N}, dt);
      rms_norm_swiglu_mlp_residual(x, nw, eps, wg, bg, wu, bu, wd, bd, r, out2);
      expect_bitwise(out2, want, what + " separate");
      Tensor r2 = r.clone();
      rms_norm_swiglu_mlp_residual(x, nw, eps, wg, bg, wu, bu, wd, bd, r2, r2);
      expect_bitwise(r2, want, what + " in place on the residual");
      // A saving forward: the same output, and the backward's operands are the composition's
      // (stale fields are replaced).
      SwigluMlpSaved saved{randn({2}, 1, dt), Tensor(), randn({1, 1}, 2, dt), Tensor(),
                           randn({3}, 3, dt)};
      Tensor out_s;
      rms_norm_swiglu_mlp_residual(x, nw, eps, wg, bg, wu, bu, wd, bd, r, out_s, &saved);
      expect_bitwise(out_s, want, what + " saving");
      expect_bitwise(saved.xn, xn, what + " saved xn");
      expect_bitwise(saved.rstd, rstd, what + " saved rstd");
      expect_bitwise(saved.gate, g, what + " saved gate");
      expect_bitwise(saved.up, u, what + " saved up");
      EXPECT_FALSE(saved.act.defined()) << what << ": act is kept by the fused CUDA path only";
      if (N != K) continue;
      Tensor want_x;
      add(t, x, want_x);
      Tensor out3;
      rms_norm_swiglu_mlp_residual(x, nw, eps, wg, bg, wu, bu, wd, bd, x, out3);
      expect_bitwise(out3, want_x, what + " residual is x");
      Tensor x2 = x.clone();
      rms_norm_swiglu_mlp_residual(x2, nw, eps, wg, bg, wu, bu, wd, bd, x2, x2);
      expect_bitwise(x2, want_x, what + " in place on x");
    }
  }
}

// rms_norm_linear_group's xn_operand_out on the CPU is rms_norm's f32 y (the tensor *xn_out
// holds when both are asked), whatever it held before; y and rstd unchanged by asking.
TEST_P(FusedLinearCpu, RmsNormGroupHandsOutTheLinearsOperand) {
  const auto [dt, bias] = GetParam();
  const int64_t K = 16, M = 11;
  const float eps = 1e-6f;
  const Tensor x = randn({M, K}, 90, dt), nw = randn({K}, 91, dt);
  const Tensor w0 = randn({5, K}, 92, dt), w1 = randn({3, K}, 93, dt);
  const Tensor b0 = bias ? randn({5}, 94, dt) : Tensor(), b1;
  const Tensor* ws[] = {&w0, &w1};
  const Tensor* bs[] = {&b0, &b1};
  Tensor xn, rstd, y0, y1;
  rms_norm(x, nw, eps, xn, rstd);
  linear(xn, w0, b0, y0);
  linear(xn, w1, b1, y1);
  for (bool with_xn : {false, true}) {
    Tensor g0, g1, xn_out, rstd_out, operand = randn({2}, 95, dt);
    Tensor* ys[] = {&g0, &g1};
    rms_norm_linear_group(x, nw, eps, ws, bs, ys, with_xn ? &xn_out : nullptr, &rstd_out, &operand);
    const std::string what = with_xn ? "with xn_out" : "operand only";
    expect_bitwise(operand, xn, what + ": operand");
    expect_bitwise(rstd_out, rstd, what + ": rstd");
    expect_bitwise(g0, y0, what + ": y[0]");
    expect_bitwise(g1, y1, what + ": y[1]");
    if (with_xn) {
      EXPECT_EQ(operand.raw(), xn_out.raw()) << "one tensor for both";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DtypeBias, FusedLinearCpu,
                         ::testing::Combine(::testing::Values(DType::f32, DType::f64),
                                            ::testing::Bool()));

TEST(FusedLinearCpuErrors, GroupArgumentsAreNamed) {
  Tensor x = randn({2, 8}, 1), w0 = randn({3, 8}, 2), w1 = randn({4, 8}, 3), none;
  Tensor y0, y1;
  const Tensor* w[] = {&w0, &w1};
  const Tensor* b[] = {&none, &none};
  Tensor* y[] = {&y0, &y1};
  EXPECT_THAT(error_of([&] { linear_group(x, {}, {}, {}); }), HasSubstr("the group is empty"));
  EXPECT_THAT(error_of([&] { linear_group(x, w, std::span<const Tensor* const>(b, 1), y); }),
              HasSubstr("'w' has 2 weights but 'b' has 1 entries"));
  Tensor w_bad = randn({4, 7}, 4);
  const Tensor* wk[] = {&w0, &w_bad};
  EXPECT_THAT(error_of([&] { linear_group(x, wk, b, y); }),
              HasSubstr("weight 'w[1]' has shape [4, 7], expected [N, 8]"));
  Tensor b_bad = randn({5}, 5);
  const Tensor* bb[] = {&none, &b_bad};
  EXPECT_THAT(error_of([&] { linear_group(x, w, bb, y); }),
              HasSubstr("bias 'b[1]' has shape [5], expected [4]"));
  Tensor w64 = randn({4, 8}, 6, DType::f64);
  const Tensor* wd[] = {&w0, &w64};
  EXPECT_THAT(error_of([&] { linear_group(x, wd, b, y); }),
              HasSubstr("'w[1]' is f64 but 'x' is f32"));
  const Tensor* wn[] = {&w0, nullptr};
  EXPECT_THAT(error_of([&] { linear_group(x, wn, b, y); }), HasSubstr("'w[1]' is a null pointer"));
  const Tensor* wu[] = {&w0, &none};
  EXPECT_THAT(error_of([&] { linear_group(x, wu, b, y); }), HasSubstr("'w[1]' is undefined"));
  // A wrong output shape fails before member 0 is written.
  Tensor y0_keep = Tensor::zeros({2, 3}), y1_bad = Tensor::zeros({2, 5});
  Tensor* yb[] = {&y0_keep, &y1_bad};
  EXPECT_THAT(error_of([&] { linear_group(x, w, b, yb); }),
              HasSubstr("output 'y[1]' has shape [2, 5], expected 2 rows of 4"));
  for (float v : y0_keep.to_vector()) EXPECT_EQ(v, 0.0f);
  EXPECT_THAT(error_of([&] { linear_group(none, w, b, y); }), HasSubstr("input 'x' is undefined"));
}

TEST(FusedLinearCpuErrors, SiluMulAndResidualArgumentsAreNamed) {
  Tensor x = randn({2, 8}, 1), wg = randn({3, 8}, 2), wu = randn({4, 8}, 3), none, out;
  EXPECT_THAT(error_of([&] { linear_silu_mul(x, wg, none, wu, none, out); }),
              HasSubstr("'w_up' has 4 rows but 'w_gate' has 3"));
  Tensor bu = randn({2}, 4), wu3 = randn({3, 8}, 5);
  EXPECT_THAT(error_of([&] { linear_silu_mul(x, wg, none, wu3, bu, out); }),
              HasSubstr("bias 'b_up' has shape [2], expected [3]"));
  Tensor x64 = randn({2, 8}, 6, DType::f64);
  EXPECT_THAT(error_of([&] { linear_silu_mul(x64, wg, none, wu3, none, out); }),
              HasSubstr("'w_gate' is f32 but 'x' is f64"));

  Tensor w = randn({3, 8}, 7), r = randn({2, 3}, 8), r_bad = randn({3, 2}, 9), y;
  EXPECT_THAT(error_of([&] { linear_add_residual(x, w, none, r_bad, y); }),
              HasSubstr("'residual' has shape [3, 2], expected [2, 3]"));
  EXPECT_THAT(error_of([&] { linear_add_residual(x, w, none, none, y); }),
              HasSubstr("'residual' is undefined"));
  Tensor y_bad = Tensor::zeros({6});
  EXPECT_THAT(error_of([&] { linear_add_residual(x, w, none, r, y_bad); }),
              HasSubstr("output 'y' has shape [6], expected [2, 3]"));
  Tensor w_bad = randn({3, 9}, 10);
  EXPECT_THAT(error_of([&] { linear_add_residual(x, w_bad, none, r, y); }),
              HasSubstr("weight 'w' has shape [3, 9], expected [N, 8]"));
}

TEST(FusedLinearCpuErrors, RmsNormArgumentsAreNamed) {
  Tensor x = randn({2, 8}, 1), nw = randn({8}, 2), w0 = randn({3, 8}, 3), none;
  Tensor y0 = Tensor::zeros({2, 3}), out;
  const Tensor* w[] = {&w0};
  const Tensor* b[] = {&none};
  Tensor* y[] = {&y0};
  Tensor nw_bad = randn({7}, 4);
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw_bad, 1e-6f, w, b, y); }),
              HasSubstr("norm weight 'norm_w' has shape [7], expected [8]"));
  EXPECT_THAT(
      error_of([&] { rms_norm_linear_silu_mul(x, nw_bad, 1e-6f, w0, none, w0, none, out); }),
      HasSubstr("norm weight 'norm_w' has shape [7], expected [8]"));
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, none, 1e-6f, w, b, y); }),
              HasSubstr("'norm_w' is undefined"));
  Tensor nw64 = randn({8}, 5, DType::f64);
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw64, 1e-6f, w, b, y); }),
              HasSubstr("'norm_w' is f64 but 'x' is f32"));
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, -1.0f, w, b, y); }),
              HasSubstr("eps must be finite and >= 0, got -1"));
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, NAN, w, b, y); }),
              HasSubstr("eps must be finite and >= 0"));
  Tensor xn_bad = Tensor::zeros({2, 7});
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, 1e-6f, w, b, y, &xn_bad); }),
              HasSubstr("output 'xn_out' has shape [2, 7], expected 2 rows of 8"));
  Tensor xn_alias = x;
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, 1e-6f, w, b, y, &xn_alias); }),
              HasSubstr("output 'xn_out' shares memory with the input 'x'"));
  Tensor rstd_bad = Tensor::zeros({3});
  EXPECT_THAT(error_of([&] {
                rms_norm_linear_silu_mul(x, nw, 1e-6f, w0, none, w0, none, out, nullptr, &rstd_bad);
              }),
              HasSubstr("output 'rstd_out' has shape [3], expected [2]"));
  // A linear output on top of rms_norm's output: rejected before anything is written.
  Tensor w_sq = randn({8, 8}, 6), xn = Tensor::zeros({2, 8}), y_is_xn = xn;
  const Tensor* wsq[] = {&w_sq};
  Tensor* ysq[] = {&y_is_xn};
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, 1e-6f, wsq, b, ysq, &xn); }),
              HasSubstr("output 'y[0]' shares memory with 'xn_out' or 'rstd_out'"));
  for (float v : xn.to_vector()) EXPECT_EQ(v, 0.0f);
  for (float v : y0.to_vector()) EXPECT_EQ(v, 0.0f);  // nothing was written by the failed calls
}

// The whole-MLP op checks both halves' arguments up front: nothing is written by a failed call.
TEST(FusedLinearCpuErrors, SwigluMlpResidualArgumentsAreNamed) {
  Tensor x = randn({2, 8}, 1), nw = randn({8}, 2), wg = randn({5, 8}, 3), wu = randn({5, 8}, 4);
  Tensor wd = randn({8, 5}, 5), r = randn({2, 8}, 6), none;
  Tensor out = Tensor::zeros({2, 8});
  auto call = [&](const Tensor& w_down, const Tensor& b_down, const Tensor& res, Tensor& o) {
    rms_norm_swiglu_mlp_residual(x, nw, 1e-6f, wg, none, wu, none, w_down, b_down, res, o);
  };
  Tensor wd_bad = randn({8, 4}, 7);
  EXPECT_THAT(error_of([&] { call(wd_bad, none, r, out); }),
              HasSubstr("weight 'w_down' has shape [8, 4], expected [N, 5]"));
  Tensor bd_bad = randn({5}, 8);
  EXPECT_THAT(error_of([&] { call(wd, bd_bad, r, out); }),
              HasSubstr("bias 'b_down' has shape [5], expected [8]"));
  Tensor r_bad = randn({2, 5}, 9);
  EXPECT_THAT(error_of([&] { call(wd, none, r_bad, out); }),
              HasSubstr("'residual' has shape [2, 5], expected [2, 8]"));
  EXPECT_THAT(error_of([&] { call(wd, none, none, out); }), HasSubstr("'residual' is undefined"));
  Tensor out_bad = Tensor::zeros({16});
  EXPECT_THAT(error_of([&] { call(wd, none, r, out_bad); }),
              HasSubstr("output 'out' has shape [16], expected [2, 8]"));
  Tensor out_is_x = x;
  EXPECT_THAT(error_of([&] { call(wd, none, r, out_is_x); }),
              HasSubstr("output 'out' shares memory with the input 'x'"));
  Tensor big = Tensor::zeros({3, 8});
  Tensor r_part = big.narrow(0, 2), out_part = big.narrow(1, 2);
  EXPECT_THAT(error_of([&] { call(wd, none, r_part, out_part); }),
              HasSubstr("output 'out' partly overlaps 'residual'"));
  Tensor wd64 = randn({8, 5}, 10, DType::f64);
  EXPECT_THAT(error_of([&] { call(wd64, none, r, out); }),
              HasSubstr("'w_down' is f64 but 'x' is f32"));
  Tensor wu_bad = randn({4, 8}, 11);
  EXPECT_THAT(error_of([&] {
                rms_norm_swiglu_mlp_residual(x, nw, 1e-6f, wg, none, wu_bad, none, wd, none, r,
                                             out);
              }),
              HasSubstr("'w_up' has 4 rows but 'w_gate' has 5"));
  EXPECT_THAT(error_of([&] {
                rms_norm_swiglu_mlp_residual(x, nw, -1.0f, wg, none, wu, none, wd, none, r, out);
              }),
              HasSubstr("eps must be finite and >= 0"));
  for (float v : out.to_vector()) EXPECT_EQ(v, 0.0f);  // nothing was written by the failed calls
  for (float v : big.to_vector()) EXPECT_EQ(v, 0.0f);
}

// Outputs that share memory with the input (or, in a group, with each other) are errors: the fused
// kernels write outputs while other warps still read x. y may be the residual itself, never a part.
TEST(FusedLinearCpuErrors, OutputsSharingMemoryAreRejected) {
  Tensor none;
  {  // square weights, so y = x has the right shape
    Tensor x = randn({2, 8}, 1), w = randn({8, 8}, 2), r = randn({2, 8}, 3);
    Tensor x_copy = x.clone();
    EXPECT_THAT(error_of([&] { linear_add_residual(x, w, none, r, x); }),
                HasSubstr("output 'y' shares memory with the input 'x'"));
    EXPECT_EQ(std::memcmp(x.f32(), x_copy.f32(), size_t(x.nbytes())), 0);  // untouched
    Tensor out = x;
    EXPECT_THAT(error_of([&] { linear_silu_mul(x, w, none, w, none, out); }),
                HasSubstr("output 'out' shares memory with the input 'x'"));
    Tensor y0, y1 = x;
    const Tensor* ws[] = {&w, &w};
    const Tensor* bs[] = {&none, &none};
    Tensor* ys[] = {&y0, &y1};
    EXPECT_THAT(error_of([&] { linear_group(x, ws, bs, ys); }),
                HasSubstr("output 'y[1]' shares memory with the input 'x'"));
  }
  {  // two group members writing one tensor, and a y that is part of the residual
    Tensor x = randn({2, 8}, 4), w = randn({3, 8}, 5);
    Tensor shared = Tensor::zeros({2, 3});
    Tensor y1 = shared;
    const Tensor* ws[] = {&w, &w};
    const Tensor* bs[] = {&none, &none};
    Tensor* ys[] = {&shared, &y1};
    EXPECT_THAT(error_of([&] { linear_group(x, ws, bs, ys); }),
                HasSubstr("outputs 'y[0]' and 'y[1]' share memory"));
    Tensor big = randn({3, 3}, 6);
    Tensor r = big.narrow(0, 2), y = big.narrow(1, 2);  // rows 0-1 and rows 1-2
    EXPECT_THAT(error_of([&] { linear_add_residual(x, w, none, r, y); }),
                HasSubstr("output 'y' partly overlaps 'residual'"));
    Tensor r2 = randn({2, 3}, 7), want;
    linear(x, w, none, want);
    add(want, r2, want);
    linear_add_residual(x, w, none, r2, r2);  // exactly the residual: allowed
    EXPECT_EQ(std::memcmp(r2.f32(), want.f32(), size_t(want.nbytes())), 0);
  }
}

// xn_operand_out must be its own tensor: it may be bf16 where xn_out is f32.
TEST(FusedLinearCpuErrors, OperandOutputAliasingANormOutputIsRejected) {
  const Tensor x = randn({3, 8}, 1), nw = randn({8}, 2), w = randn({4, 8}, 3), none;
  const Tensor* ws[] = {&w};
  const Tensor* bs[] = {&none};
  Tensor y, xn, rstd;
  Tensor* ys[] = {&y};
  EXPECT_THAT(error_of([&] { rms_norm_linear_group(x, nw, 1e-6f, ws, bs, ys, &xn, &rstd, &xn); }),
              HasSubstr("'xn_operand_out' is the same tensor as 'xn_out'"));
  EXPECT_THAT(
      error_of([&] { rms_norm_linear_group(x, nw, 1e-6f, ws, bs, ys, nullptr, &rstd, &rstd); }),
      HasSubstr("'xn_operand_out' is the same tensor as 'rstd_out'"));
  EXPECT_FALSE(y.defined()) << "nothing written";
}

// A bf16 x for linear_add_residual is the CUDA autocast path's (the attention's bf16 output): on
// the CPU it is a clear error, whatever the scope.
TEST(FusedLinearCpuErrors, Bf16InputOfTheResidualLinearIsCudaOnly) {
  const Tensor x = Tensor::zeros({2, 4}, DType::bf16), w = Tensor::zeros({3, 4});
  const Tensor r = Tensor::zeros({2, 3});
  for (bool autocast : {false, true}) {
    Bf16Autocast scope(autocast);
    Tensor y;
    EXPECT_THAT(error_of([&] { linear_add_residual(x, w, Tensor(), r, y); }),
                HasSubstr("'x' is bf16 on the CPU"));
  }
}

// The MLP's gate/up dtype is bf16 only for f32 CUDA tensors under autocast: the CPU reference
// stays f32 (and f64) inside an autocast scope too.
TEST(FusedLinearCpu, SwigluGateUpDtypeIsTheInputsOnTheCpu) {
  const Tensor x32 = Tensor::zeros({2, 3}), x64 = Tensor::zeros({2, 3}, DType::f64);
  for (bool autocast : {false, true}) {
    Bf16Autocast scope(autocast);
    EXPECT_EQ(swiglu_gate_up_dtype(x32), DType::f32);
    EXPECT_EQ(swiglu_gate_up_dtype(x64), DType::f64);
  }
}

}  // namespace
}  // namespace gyre::ops
