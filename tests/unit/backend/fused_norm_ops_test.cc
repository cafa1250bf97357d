// ops::rms_norm_backward_add (backend/fused_norm_ops.h) on the CPU: bitwise rms_norm_backward then
// add_ (f32 and f64, with and without dw, in place into residual_grad and into a separate or an
// undefined dx, other leading shapes), and errors that name the argument before anything is
// written (bad shapes, dtypes, aliasing, a bf16 dx requested on the CPU).
#include "gyre/backend/fused_norm_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "test_util.h"
#include "unit/backend/philox_tensors.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  return test::philox_randn(s, seed, 13, dt);
}

// Byte-for-byte equality of two tensors of one dtype and shape.
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

struct Inputs {
  Tensor dy, x, w, rstd, res, dw;
};

// Random inputs for R rows of H, rstd from the forward norm (the values the backward sees).
Inputs make_inputs(int64_t R, int64_t H, DType dt, uint64_t seed) {
  Inputs in;
  in.x = randn({R, H}, seed, dt);
  in.w = randn({H}, seed + 1, dt);
  in.dy = randn({R, H}, seed + 2, dt);
  in.res = randn({R, H}, seed + 3, dt);
  in.dw = randn({H}, seed + 4, dt);
  Tensor y;
  rms_norm(in.x, in.w, 1e-6f, y, in.rstd);
  return in;
}

TEST(FusedNormCpu, EqualsBackwardThenAdd) {
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t H : {1, 3, 8, 37})
      for (int64_t R : {1, 5, 130})
        for (bool with_dw : {false, true})
          for (int mode = 0; mode < 3; ++mode) {  // 0: undefined dx, 1: separate dx, 2: in place
            SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " H " << H << " R " << R
                                              << " dw " << with_dw << " mode " << mode);
            const Inputs in = make_inputs(R, H, dt, uint64_t(H * 1000 + R));
            Tensor want_dx, want_dw = with_dw ? in.dw.clone() : Tensor();
            rms_norm_backward(in.dy, in.x, in.w, in.rstd, want_dx, want_dw);
            add_(want_dx, in.res);

            Tensor res = in.res.clone(), dw = with_dw ? in.dw.clone() : Tensor(), dx;
            if (mode == 1) dx = Tensor::zeros({R, H}, dt);
            if (mode == 2) dx = res;
            rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, res, dx, dw);
            EXPECT_TRUE(same_bits(dx, want_dx));
            if (with_dw) {
              EXPECT_TRUE(same_bits(dw, want_dw));
            }
            if (mode == 2) {  // written in place
              EXPECT_EQ(dx.raw(), res.raw());
            }
            if (mode != 2) {
              EXPECT_TRUE(same_bits(res, in.res));
            }
          }
}

TEST(FusedNormCpu, LeadingShapesFollowDx) {
  // x [2, 3, H] with dx / residual_grad [6, H]: rms_norm_backward accepts any dx of x's rows, and
  // add_ wants residual_grad of dx's shape.
  const int64_t H = 10;
  Tensor x = randn({2, 3, H}, 1), w = randn({H}, 2), dy = randn({2, 3, H}, 3);
  Tensor y, rstd;
  rms_norm(x, w, 1e-6f, y, rstd);
  Tensor res = randn({6, H}, 4), want = Tensor::zeros({6, H}), none;
  rms_norm_backward(dy, x, w, rstd, want, none);
  add_(want, res);
  Tensor dx = res.clone(), dw;
  rms_norm_backward_add(dy, x, w, rstd, dx, dx, dw);
  EXPECT_TRUE(same_bits(dx, want));
  // Undefined dx takes x's shape, so residual_grad must have it too.
  Tensor dx2;
  EXPECT_THAT(error_of([&] { rms_norm_backward_add(dy, x, w, rstd, res, dx2, dw); }),
              HasSubstr("'residual_grad' has shape [6, 10], expected [2, 3, 10]"));
}

TEST(FusedNormCpu, EmptyRows) {
  const Inputs in = make_inputs(0, 4, DType::f32, 7);
  Tensor dx, dw = in.dw.clone();
  rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, in.res, dx, dw);
  EXPECT_EQ(dx.numel(), 0);
  EXPECT_TRUE(same_bits(dw, in.dw));
}

TEST(FusedNormCpu, BadArgumentsAreNamedBeforeAnythingIsWritten) {
  const int64_t R = 4, H = 6;
  const Inputs in = make_inputs(R, H, DType::f32, 11);
  Tensor none, dx = Tensor::zeros({R, H}), dw = in.dw.clone();
  const std::vector<float> dx_before = dx.to_vector(), dw_before = dw.to_vector();
  const auto call = [&](const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& res, Tensor& out, Tensor& g, Tensor* d16 = nullptr) {
    return error_of([&] { rms_norm_backward_add(dy, x, w, rstd, res, out, g, d16); });
  };
  EXPECT_THAT(call(none, in.x, in.w, in.rstd, in.res, dx, dw), HasSubstr("'dy' is undefined"));
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, none, dx, dw),
              HasSubstr("'residual_grad' is undefined"));
  EXPECT_THAT(call(in.dy, in.x, randn({H + 1}, 1), in.rstd, in.res, dx, dw),
              HasSubstr("rms_norm_backward_add: x has shape [4, 6] but the weight has 7"));
  EXPECT_THAT(call(randn({R, H + 1}, 2), in.x, in.w, in.rstd, in.res, dx, dw),
              HasSubstr("tensor 'dy' has shape [4, 7]"));
  EXPECT_THAT(call(in.dy, in.x, in.w, randn({R + 1}, 3), in.res, dx, dw),
              HasSubstr("rstd has 5 elements for 4 rows"));
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, randn({R, H - 1}, 4), dx, dw),
              HasSubstr("'residual_grad' has shape [4, 5], expected [4, 6]"));
  Tensor dx_bad = Tensor::zeros({R, H + 1}), dw_bad = Tensor::zeros({H + 1});
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, in.res, dx_bad, dw), HasSubstr("output 'dx'"));
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, in.res, dx, dw_bad),
              HasSubstr("tensor 'dw' has shape [7]"));
  Tensor res64 = in.res.to(DType::f64);
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, res64, dx, dw),
              HasSubstr("'residual_grad' is f64 but 'dy' is f32"));
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4}, {R});
  EXPECT_THAT(call(in.dy, in.x, in.w, ids, in.res, dx, dw),
              HasSubstr("tensor 'rstd' must be f32 (or f64), got i32"));
  // Aliasing: dx may be residual_grad itself, nothing else.
  Tensor dy_alias = in.dy.clone();
  EXPECT_THAT(call(dy_alias, in.x, in.w, in.rstd, in.res, dy_alias, dw),
              HasSubstr("output 'dx' overlaps 'dy'"));
  Tensor big = randn({2 * R, H}, 5);
  Tensor res_view = big.narrow(0, R), dx_view = big.narrow(1, R);  // overlapping, not equal
  EXPECT_THAT(call(in.dy, in.x, in.w, in.rstd, res_view, dx_view, dw),
              HasSubstr("output 'dx' overlaps 'residual_grad'"));
  Tensor w_alias = in.w.clone();
  EXPECT_THAT(call(in.dy, in.x, w_alias, in.rstd, in.res, dx, w_alias),
              HasSubstr("output 'dw' overlaps 'w'"));
  // A bf16 dx is the CUDA backend's alone.
  Tensor d16;
  const std::string msg = call(in.dy, in.x, in.w, in.rstd, in.res, dx, dw, &d16);
  EXPECT_THAT(msg, HasSubstr("only the CUDA backend writes a bf16 dx"));
  EXPECT_FALSE(d16.defined());
  try {
    rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, in.res, dx, dw, &d16);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
  }
  // Nothing was written by any failed call.
  EXPECT_EQ(dx.to_vector(), dx_before);
  EXPECT_EQ(dw.to_vector(), dw_before);
}

}  // namespace
}  // namespace gyre::ops
