// The sorted MoE dispatch (model/moe_block.cc: device permutation, expert GEMMs over contiguous
// segments, unpermute in top-k order) against the former per-expert host loop
// (moe_forward_per_expert / moe_backward_per_expert): the same outputs, input gradient and
// parameter gradients within 1e-5 relative (the two sum a token's k contributions in different
// orders, so they differ by rounding only).
#include <gtest/gtest.h>

#include "moe_layer_util.h"

namespace gyre::model {
namespace {

struct Case {
  int64_t T, H, E, k, I;
  bool norm;
};

void compare_paths(const Case& cs) {
  test::MoeLayer L = test::random_moe_layer(cs.H, cs.E, cs.k, cs.I, cs.norm, 100 + cs.T);
  std::mt19937_64 rng(7 + cs.T);
  const Tensor xn = test::random_f32({cs.T, cs.H}, 1.0, rng);
  const Tensor dout = test::random_f32({cs.T, cs.H}, 1.0, rng);
  MoeSaved s_new, s_old;
  const Tensor y_new = moe_forward(L.config, L.w, xn, &s_new);
  const Tensor y_old = moe_forward_per_expert(L.config, L.w, xn, &s_old);
  EXPECT_LE(test::rel_l2(y_new, y_old), 1e-5);
  EXPECT_TRUE(s_new.experts.empty());
  EXPECT_EQ(s_new.offsets.size(), size_t(cs.E) + 1);
  // A forward without saving gives the same output.
  const Tensor y_nosave = moe_forward(L.config, L.w, xn, nullptr);
  EXPECT_EQ(test::rel_l2(y_nosave, y_new), 0.0);

  LayerTensors g_new = test::zero_moe_grads(L.w), g_old = test::zero_moe_grads(L.w);
  const Tensor dx_new = moe_backward(L.config, L.w, g_new, xn, s_new, dout);
  const Tensor dx_old = moe_backward_per_expert(L.config, L.w, g_old, xn, s_old, dout);
  EXPECT_LE(test::rel_l2(dx_new, dx_old), 1e-5);
  EXPECT_LE(test::rel_l2(g_new.router_w, g_old.router_w), 1e-5);
  for (size_t e = 0; e < size_t(cs.E); ++e) {
    EXPECT_LE(test::rel_l2(g_new.expert_gate[e], g_old.expert_gate[e]), 1e-5) << "expert " << e;
    EXPECT_LE(test::rel_l2(g_new.expert_up[e], g_old.expert_up[e]), 1e-5) << "expert " << e;
    EXPECT_LE(test::rel_l2(g_new.expert_down[e], g_old.expert_down[e]), 1e-5) << "expert " << e;
  }
}

TEST(MoeDispatch, MatchesPerExpertPath) {
  compare_paths({29, 16, 8, 2, 12, true});
  compare_paths({64, 24, 16, 4, 20, false});
}

TEST(MoeDispatch, MostExpertsIdleAndSingleToken) {
  compare_paths({3, 16, 32, 2, 8, true});  // at most 6 of 32 experts get a token
  compare_paths({1, 16, 8, 8, 8, true});   // k = E: every expert, one row each
}

}  // namespace
}  // namespace gyre::model
