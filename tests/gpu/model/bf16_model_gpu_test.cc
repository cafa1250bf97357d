// The whole model in bf16 mixed precision (CausalLM Precision::bf16 = ops::Bf16Autocast) against
// the exact f32 path of the same weights on the same GPU. Head dim 64 so attention runs the flash
// bf16 kernels. Bounds: each GEMM/attention output carries ~2^-8 relative error (autocast.cc) and
// errors add up over the layers, so per-token log-probs may move by a few 1e-3 nats and gradients
// by a few percent (norm-relative); measured on an H200: mean 5.2e-3, max 2.3e-2, worst gradient
// 1.7e-2, — the same agreement PyTorch autocast has with f32. The test
// also checks the path is really taken (results differ from f32) and that the f32 master weights
// are untouched. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

using testmodel::make_seqs;
using testmodel::small_config;

TEST(ModelBf16Gpu, LogprobsAndGradientsTrackF32) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = CausalLM::random_init(small_config(), 3, 0.05f);
  m->to(Device::cuda);
  const auto seqs = make_seqs();
  const std::vector<int32_t> prompt_lens = {1, 5, 20, 1};
  const std::vector<float> adv = {0.5f, -1.0f, 1.0f, 0.25f};
  std::vector<float> w_before = m->parameters()[3].tensor.to_vector();

  auto run = [&](Precision p) {
    m->set_precision(p);
    ScoredBatch sb = score_for_training(*m, seqs, 1.0f, true);
    std::vector<float> lp = sb.logp.to(Device::cpu).to_vector();
    std::vector<float> ent = sb.entropy.to(Device::cpu).to_vector();
    LossAndGrad g = policy_gradient_loss_and_grad(*m, seqs, prompt_lens, adv);
    return std::make_tuple(lp, ent, g.loss, std::move(g.grads));
  };
  auto [lp32, ent32, loss32, g32] = run(Precision::f32);
  auto [lp16, ent16, loss16, g16] = run(Precision::bf16);

  double max_lp = 0, mean_lp = 0, max_ent = 0;
  for (size_t i = 0; i < lp32.size(); ++i) {
    ASSERT_TRUE(std::isfinite(lp16[i]));
    max_lp = std::max(max_lp, std::fabs(double(lp16[i]) - lp32[i]));
    mean_lp += std::fabs(double(lp16[i]) - lp32[i]) / double(lp32.size());
    max_ent = std::max(max_ent, std::fabs(double(ent16[i]) - ent32[i]));
  }
  std::printf(
      "bf16 vs f32: log-prob |diff| mean %.2e max %.2e, entropy max %.2e, loss %.6f vs %.6f\n",
      mean_lp, max_lp, max_ent, loss16, loss32);
  EXPECT_GT(max_lp, 0.0);  // the bf16 path ran
  EXPECT_LE(mean_lp, 1e-2);
  EXPECT_LE(max_lp, 5e-2);
  EXPECT_LE(max_ent, 5e-2);
  EXPECT_NEAR(loss16, loss32, 1e-2 * std::fabs(loss32) + 1e-3);

  double worst = 0;
  for (size_t i = 0; i < g32.tensors.size(); ++i) {
    const double e = gputest::rel_err(g16.tensors[i].tensor.to(Device::cpu),
                                      g32.tensors[i].tensor.to(Device::cpu));
    worst = std::max(worst, e);
    EXPECT_LE(e, 5e-2) << g32.tensors[i].name;
  }
  std::printf("bf16 vs f32: worst per-tensor gradient rel L2 %.2e\n", worst);
  EXPECT_EQ(m->parameters()[3].tensor.to_vector(), w_before);  // masters untouched
}

TEST(ModelBf16Gpu, BackwardUsesTheForwardsPrecision) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = CausalLM::random_init(small_config(), 4, 0.05f);
  m->to(Device::cuda);
  const auto seqs = make_seqs();
  const int64_t T = 1 + 37 + 300 + 129;
  std::vector<float> dlp(size_t(T), 0.01f);
  auto grads_of = [&](bool switch_between) {
    m->set_precision(Precision::bf16);
    ScoredBatch sb = score_for_training(*m, seqs, 1.0f, false);
    if (switch_between) m->set_precision(Precision::f32);
    Gradients g = m->zeros_like_parameters();
    backward_from_logprobs(*m, sb, Tensor::from_vector(dlp, {T}), Tensor(), g);
    return g;
  };
  Gradients a = grads_of(false), b = grads_of(true);
  for (size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_EQ(a.tensors[i].tensor.to(Device::cpu).to_vector(),
              b.tensors[i].tensor.to(Device::cpu).to_vector())
        << a.tensors[i].name;
}

TEST(ModelBf16Gpu, PrecisionNamesParse) {
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(parse_precision("f32"), Precision::f32);
  EXPECT_THROW(parse_precision("fp8"), Error);
  EXPECT_STREQ(precision_name(Precision::bf16), "bf16");
}

}  // namespace
}  // namespace gyre::model
