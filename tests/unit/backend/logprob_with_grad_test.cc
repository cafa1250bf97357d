// ops::linear_token_logprobs_with_grad on the CPU: exactly the two-pass composition it is defined
// as (linear_token_logprobs, then linear_token_logprobs_backward with the default vocabulary
// chunk), f32 and f64, with and without a dentropy (the backward's entropy then comes from scratch
// when the caller asks for none), dw accumulated or skipped; bad arguments are errors naming them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grad_check.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

using namespace gyre;
using gyre::test::random_tensor;

namespace {

Tensor targets_for(int64_t T, int64_t V) {
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = t % 5 == 3 ? -1 : int32_t((t * 37 + 2) % V);
  return Tensor::from_vector(tg, {T});
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  const Tensor d = t.to(DType::f64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = d.data<double>()[i];
  return v;
}

TEST(LogprobWithGrad, CpuIsTheTwoPassCompositionBitwise) {
  const int64_t T = 23, H = 6, V = 300;  // V > 128: several default vocabulary chunks
  for (DType dt : {DType::f32, DType::f64}) {
    for (bool with_dentropy : {false, true}) {
      for (bool with_dw : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + (with_dentropy ? " dentropy" : "") +
                     (with_dw ? " dw" : ""));
        const Tensor h = random_tensor({T, H}, 1, dt), w = random_tensor({V, H}, 2, dt);
        const Tensor tg = targets_for(T, V), dlogp = random_tensor({T}, 3, dt);
        const Tensor dent = with_dentropy ? random_tensor({T}, 4, dt) : Tensor();
        const Tensor dw0 = random_tensor({V, H}, 5, dt);
        // Reference: the two ops.
        Tensor lp_ref, ent_ref = Tensor::empty({T}, dt), lse_ref, dh_ref;
        Tensor dw_ref = with_dw ? dw0.clone() : Tensor();
        ops::linear_token_logprobs(h, w, tg, 0.8f, 0, lp_ref, ent_ref, lse_ref);
        ops::linear_token_logprobs_backward(h, w, tg, 0.8f, 0, lse_ref, ent_ref, dlogp, dent,
                                            dh_ref, dw_ref);
        // The op, entropy not requested (its backward then needs a scratch when dent is given).
        Tensor lp, ent, lse, dh, dw = with_dw ? dw0.clone() : Tensor();
        ops::linear_token_logprobs_with_grad(h, w, tg, 0.8f, dlogp, dent, lp, ent, lse, dh, dw);
        EXPECT_FALSE(ent.defined());
        EXPECT_EQ(values(lp), values(lp_ref));
        EXPECT_EQ(values(lse), values(lse_ref));
        EXPECT_EQ(values(dh), values(dh_ref));
        EXPECT_EQ(dw.defined(), with_dw);
        if (with_dw) {
          EXPECT_EQ(values(dw), values(dw_ref));
        }
        // Entropy requested: the forward's, bitwise.
        Tensor ent2 = Tensor::empty({T}, dt), lp2, lse2, dh2, dw2;
        ops::linear_token_logprobs_with_grad(h, w, tg, 0.8f, dlogp, dent, lp2, ent2, lse2, dh2,
                                             dw2);
        EXPECT_EQ(values(ent2), values(ent_ref));
        EXPECT_EQ(values(dh2), values(dh_ref));
      }
    }
  }
}

TEST(LogprobWithGrad, BadArgumentsAreErrorsNamingThem) {
  const Tensor h = random_tensor({4, 3}, 1, DType::f32), w = random_tensor({10, 3}, 2, DType::f32);
  const Tensor tg = targets_for(4, 10);
  Tensor lp, ent, lse, dh, dw;
  auto message = [&](const Tensor& dlogp, const Tensor& dent, Tensor& dw_arg,
                     const Tensor& targets) {
    try {
      ops::linear_token_logprobs_with_grad(h, w, targets, 1.0f, dlogp, dent, lp, ent, lse, dh,
                                           dw_arg);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor none;
  EXPECT_NE(message(random_tensor({3}, 3, DType::f32), none, none, tg).find("dlogp"),
            std::string::npos);
  EXPECT_NE(message(none, none, none, tg).find("dlogp"), std::string::npos);
  EXPECT_NE(message(random_tensor({4}, 3, DType::f32), random_tensor({5}, 4, DType::f32), none, tg)
                .find("dentropy"),
            std::string::npos);
  Tensor bad_dw = Tensor::zeros({9, 3});
  EXPECT_NE(message(random_tensor({4}, 3, DType::f32), none, bad_dw, tg).find("dw"),
            std::string::npos);
  const Tensor far = Tensor::from_vector(std::vector<int32_t>{0, 1, 10, 2}, {4});
  EXPECT_NE(message(random_tensor({4}, 3, DType::f32), none, none, far).find("target"),
            std::string::npos);
}

}  // namespace
