// Advantage estimators, reward post-processing, returns, GAE, whitening and KL estimators against
// slime's acceptance cases (reference/slime.md §3.4) and hand-computed values (arithmetic in
// comments).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gyre/core/error.h"
#include "gyre/rl/algorithms/advantages.h"
#include "gyre/rl/algorithms/kl.h"
#include "gyre/rl/algorithms/loss_reducer.h"

using namespace gyre;
using namespace gyre::rl;

namespace {
AlgorithmConfig grpo_config(int n, int rbs) {
  AlgorithmConfig c;
  c.n_samples_per_prompt = n;
  c.rollout_batch_size = rbs;
  return c;
}
}  // namespace

// slime.md §3.4 "GRPO group norm": [1,0,0,1] -> mean 0.5, deviations +-0.5, unbiased std
// sqrt(4 * 0.25 / 3) = 0.57735 -> 0.5 / (0.57735 + 1e-6) = 0.866024.
TEST(AlgorithmsRewards, GrpoGroupNormAcceptance) {
  auto r = post_process_rewards({1, 0, 0, 1}, grpo_config(4, 1));
  ASSERT_EQ(r.size(), 4u);
  EXPECT_NEAR(r[0], 0.866024, 1e-6);
  EXPECT_NEAR(r[1], -0.866024, 1e-6);
  EXPECT_NEAR(r[2], -0.866024, 1e-6);
  EXPECT_NEAR(r[3], 0.866024, 1e-6);
}

TEST(AlgorithmsRewards, GrpoTwoGroupsAndDrGrpo) {
  // Two groups of 2: [1,0] -> +-0.5 / (sqrt(0.5) + 1e-6) = +-0.707106; [3,3] -> 0 / 1e-6 = 0.
  auto r = post_process_rewards({1, 0, 3, 3}, grpo_config(2, 2));
  EXPECT_NEAR(r[0], 0.5 / (std::sqrt(0.5) + 1e-6), 1e-6);
  EXPECT_NEAR(r[1], -0.5 / (std::sqrt(0.5) + 1e-6), 1e-6);
  EXPECT_EQ(r[2], 0.0f);
  EXPECT_EQ(r[3], 0.0f);
  // --disable-grpo-std-normalization (Dr.GRPO): mean subtraction only.
  AlgorithmConfig c = grpo_config(2, 2);
  c.disable_grpo_std_normalization = true;
  r = post_process_rewards({1, 0, 3, 3}, c);
  EXPECT_FLOAT_EQ(r[0], 0.5f);
  EXPECT_FLOAT_EQ(r[1], -0.5f);
  // --disable-rewards-normalization: raw rewards.
  c.disable_rewards_normalization = true;
  r = post_process_rewards({1, 0, 3, 3}, c);
  EXPECT_FLOAT_EQ(r[2], 3.0f);
}

TEST(AlgorithmsRewards, CountMismatchFallsBackToOneGroup) {
  // rbs*n = 4 but 3 samples: one global group [2, 0, 1] -> mean 1, std 1 -> [1, -1, 0]/(1+1e-6).
  auto r = post_process_rewards({2, 0, 1}, grpo_config(2, 2));
  EXPECT_NEAR(r[0], 1 / (1 + 1e-6), 1e-6);
  EXPECT_NEAR(r[1], -1 / (1 + 1e-6), 1e-6);
  EXPECT_NEAR(r[2], 0, 1e-7);
}

TEST(AlgorithmsRewards, BaselineAndPpoNormalisation) {
  AlgorithmConfig c = grpo_config(2, 2);
  c.advantage_estimator = AdvantageEstimator::reinforce_plus_plus_baseline;
  // mean-subtract only: [1,0] -> [0.5,-0.5]; [4,2] -> [1,-1]
  auto r = post_process_rewards({1, 0, 4, 2}, c);
  EXPECT_FLOAT_EQ(r[0], 0.5f);
  EXPECT_FLOAT_EQ(r[3], -1.0f);
  c.advantage_estimator = AdvantageEstimator::ppo;  // not group-normalised
  r = post_process_rewards({1, 0, 4, 2}, c);
  EXPECT_FLOAT_EQ(r[2], 4.0f);
}

TEST(AlgorithmsRewards, ParseNonFiniteRewardNamesSample) {
  try {
    post_process_rewards({1, NAN}, grpo_config(2, 1));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos) << e.what();
  }
}

TEST(AlgorithmsAdvantages, GrpoBroadcastsAndIgnoresKlCoef) {
  AlgorithmConfig c;
  c.kl_coef = 0.5;  // ignored for grpo
  AdvantageInputs in;
  in.rewards = {0.25f, -1.0f};
  in.loss_masks = {{1, 1, 0}, {1}};
  in.log_probs = {{-1, -1, -1}, {-2}};
  in.ref_log_probs = {{-2, -2, -2}, {-2}};
  auto out = compute_advantages_and_returns(c, in);
  EXPECT_EQ(out.advantages[0], (TokenValues{0.25f, 0.25f, 0.25f}));
  EXPECT_EQ(out.returns[1], (TokenValues{-1.0f}));
  EXPECT_FLOAT_EQ(out.kl[0][0], 1.0f);  // k1 = -1 - (-2)
}

// slime.md §3.4 get_reinforce_plus_plus_returns acceptance case. Worked for sample 1
// (mask [1,1,1], kl [.4,.2,.1], reward -1): r = [-.04, -.02, -.01 - 1]; G_2 = -1.01,
// G_1 = -.02 + .99*-1.01 = -1.0199, G_0 = -.04 + .99*-1.0199 = -1.049701.
TEST(AlgorithmsAdvantages, ReinforcePlusPlusReturnsAcceptance) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::reinforce_plus_plus;
  c.kl_coef = 0.1;
  c.gamma = 0.99;
  AdvantageInputs in;
  in.rewards = {2, -1};
  in.loss_masks = {{0, 1, 1, 1, 0}, {1, 1, 1}};
  // k1 with ref = 0 makes the per-token kl equal to log_probs.
  in.log_probs = {{.2f, .1f, .3f, .4f, .5f}, {.4f, .2f, .1f}};
  in.ref_log_probs = {{0, 0, 0, 0, 0}, {0, 0, 0}};
  auto out = compute_advantages_and_returns(c, in);
  const std::vector<std::vector<double>> want = {{1.862483, 1.881296, 1.9104, 1.96, 0.0},
                                                 {-1.049701, -1.0199, -1.01}};
  for (size_t i = 0; i < 2; ++i)
    for (size_t t = 0; t < want[i].size(); ++t) {
      EXPECT_NEAR(out.returns[i][t], want[i][t], 1e-5) << i << "," << t;
      EXPECT_NEAR(out.advantages[i][t], want[i][t], 1e-5);
    }
}

TEST(AlgorithmsAdvantages, ParseReinforceFullyMaskedSampleIsError) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::reinforce_plus_plus;
  AdvantageInputs in;
  in.rewards = {1, 1};
  in.loss_masks = {{1}, {0, 0}};
  EXPECT_THROW(compute_advantages_and_returns(c, in), Error);
}

TEST(AlgorithmsAdvantages, ReinforceBaselineSubtractsKl) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::reinforce_plus_plus_baseline;
  c.kl_coef = 0.1;
  AdvantageInputs in;
  in.rewards = {0.5f};
  in.loss_masks = {{1, 0}};
  in.log_probs = {{-1.0f, -1.0f}};
  in.ref_log_probs = {{-1.5f, -3.0f}};
  auto out = compute_advantages_and_returns(c, in);
  // kl = [0.5, 2.0] (not masked) -> A = 0.5 - 0.1*kl = [0.45, 0.3]
  EXPECT_NEAR(out.advantages[0][0], 0.45, 1e-6);
  EXPECT_NEAR(out.advantages[0][1], 0.30, 1e-6);
}

TEST(AlgorithmsAdvantages, PpoGaeHandComputed) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::ppo;
  c.gamma = 0.9;
  c.lambd = 0.5;
  AdvantageInputs in;
  in.rewards = {1};
  in.loss_masks = {{1, 1, 1}};
  in.values = {{.5f, .5f, .5f}};
  auto out = compute_advantages_and_returns(c, in);
  // r = [0,0,1]; delta_2 = 1 - .5 = .5; delta_1 = 0 + .9*.5 - .5 = -.05; delta_0 = -.05
  // A_2 = .5; A_1 = -.05 + .45*.5 = .175; A_0 = -.05 + .45*.175 = .02875; R = A + V
  EXPECT_NEAR(out.advantages[0][2], 0.5, 1e-6);
  EXPECT_NEAR(out.advantages[0][1], 0.175, 1e-6);
  EXPECT_NEAR(out.advantages[0][0], 0.02875, 1e-6);
  EXPECT_NEAR(out.returns[0][0], 0.52875, 1e-6);
}

TEST(AlgorithmsAdvantages, PpoKlShapingGoesToEveryToken) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::ppo;
  c.kl_coef = 0.5;
  AdvantageInputs in;
  in.rewards = {1};
  in.loss_masks = {{1, 1}};
  in.values = {{0, 0}};
  in.log_probs = {{-1, -1}};
  in.ref_log_probs = {{-1.2f, -1.4f}};
  auto out = compute_advantages_and_returns(c, in);
  // kl = [.2, .4]; r = [-.1, -.2 + 1] = [-.1, .8]; gamma = lambda = 1, V = 0: A = [.7, .8]
  EXPECT_NEAR(out.advantages[0][0], 0.7, 1e-6);
  EXPECT_NEAR(out.advantages[0][1], 0.8, 1e-6);
}

// slime.md §3.4 chunked_discounted_returns: equals the serial recurrence, for gamma in
// {0, .5, .99, 1} and lengths around the 128 chunk. Compared with the closed form
// G_t = sum_k gamma^k r_{t+k}.
TEST(AlgorithmsAdvantages, DiscountedReturnsMatchClosedForm) {
  std::mt19937 rng(7);
  std::normal_distribution<double> nd;
  for (double gamma : {0.0, 0.5, 0.99, 1.0})
    for (size_t len : {1u, 127u, 128u, 129u, 1000u}) {
      std::vector<double> r(len);
      for (auto& x : r) x = nd(rng);
      auto g = discounted_returns(r, gamma);
      for (size_t t = 0; t < len; t += std::max<size_t>(1, len / 7)) {
        double want = 0, p = 1;
        for (size_t k = t; k < len; ++k, p *= gamma) want += p * r[k];
        EXPECT_NEAR(g[t], want, 1e-9 * (1 + std::abs(want))) << gamma << " " << len << " " << t;
      }
    }
}

TEST(AlgorithmsAdvantages, DiscountedReturnsRightPadded) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  for (size_t len : {3u, 129u, 511u}) {
    std::vector<double> r(len);
    for (auto& x : r) x = nd(rng);
    std::vector<double> padded = r;
    padded.resize(512, 0.0);
    auto g = discounted_returns(r, 0.99), gp = discounted_returns(padded, 0.99);
    for (size_t t = 0; t < len; ++t) EXPECT_DOUBLE_EQ(gp[t], g[t]);
    for (size_t t = len; t < 512; ++t) EXPECT_EQ(gp[t], 0.0);
  }
}

// slime.md §3.4 chunked_gae vs vanilla_gae: A_t = sum_k (gamma lambda)^k delta_{t+k}.
TEST(AlgorithmsAdvantages, GaeMatchesClosedForm) {
  std::mt19937 rng(11);
  std::normal_distribution<double> nd;
  for (size_t len : {127u, 128u, 129u}) {
    std::vector<double> r(len), v(len), a, ret;
    for (size_t t = 0; t < len; ++t) r[t] = nd(rng), v[t] = nd(rng);
    gae(r, v, 0.99, 0.95, &a, &ret);
    for (size_t t = 0; t < len; t += 9) {
      double want = 0, p = 1;
      for (size_t k = t; k < len; ++k, p *= 0.99 * 0.95)
        want += p * (r[k] + 0.99 * (k + 1 < len ? v[k + 1] : 0.0) - v[k]);
      EXPECT_NEAR(a[t], want, 1e-9);
      EXPECT_NEAR(ret[t], want + v[t], 1e-9);
    }
  }
}

TEST(AlgorithmsAdvantages, MaskedWhitening) {
  AlgorithmConfig c;
  c.normalize_advantages = true;
  AdvantageInputs in;
  in.rewards = {0, 0};
  in.loss_masks = {{1, 1}, {1, 0}};
  auto s = local_whiten_stats({{1, 2}, {3, 4}}, in.loss_masks);
  // masked values 1,2,3: mean 2; E[a^2] = 14/3; var = 14/3 - 4 = 2/3; * 3/2 (Bessel) = 1
  EXPECT_DOUBLE_EQ(s.count, 3);
  BatchTokenValues v = {{1, 2}, {3, 4}};
  whiten(&v, s);
  const double k = 1 / std::sqrt(1 + 1e-8);
  EXPECT_NEAR(v[0][0], -1 * k, 1e-6);
  EXPECT_NEAR(v[0][1], 0, 1e-7);
  EXPECT_NEAR(v[1][0], 1 * k, 1e-6);
  EXPECT_NEAR(v[1][1], 2 * k, 1e-6);  // masked tokens are transformed too (as slime)
  BatchTokenValues empty = {{1}};
  EXPECT_THROW(whiten(&empty, WhitenStats{}), Error);
}

TEST(AlgorithmsKl, EstimatorsAndGradients) {
  // log_ratio = -1 - (-1.5) = 0.5
  auto k1 = approx_kl_with_grad(-1, -1.5, KlType::k1);
  auto k2 = approx_kl_with_grad(-1, -1.5, KlType::k2);
  auto k3 = approx_kl_with_grad(-1, -1.5, KlType::k3);
  EXPECT_DOUBLE_EQ(k1.value, 0.5);
  EXPECT_DOUBLE_EQ(k1.grad, 1.0);
  EXPECT_DOUBLE_EQ(k2.value, 0.125);  // .5^2 / 2
  EXPECT_DOUBLE_EQ(k2.grad, 0.5);
  EXPECT_NEAR(k3.value, std::exp(-0.5) - 1 + 0.5, 1e-15);  // 0.106531
  EXPECT_NEAR(k3.grad, 1 - std::exp(-0.5), 1e-15);
  // low_var_kl clamps at 10: log_ratio = -5 -> k3 = e^5 - 1 - 5 = 142.4 -> 10, gradient 0.
  auto lv = approx_kl_with_grad(-6, -1, KlType::low_var_kl);
  EXPECT_DOUBLE_EQ(lv.value, 10.0);
  EXPECT_DOUBLE_EQ(lv.grad, 0.0);
  EXPECT_NEAR(approx_kl(-6, -1, KlType::k3), std::exp(5.0) - 6, 1e-9);
  // Unbiased KL: k1 * exp(logp - old); d/dlogp = w*k1 + w*1 with w = exp(.2)
  double old = -1.2;
  auto u = approx_kl_with_grad(-1, -1.5, KlType::k1, &old);
  EXPECT_NEAR(u.value, std::exp(0.2) * 0.5, 1e-12);
  EXPECT_NEAR(u.grad, std::exp(0.2) * 1.5, 1e-12);
}

// slime.md §3.4 get_sum_of_sample_mean: per-sample means 2 + 5 + 8 = 15.
TEST(AlgorithmsReduce, SumOfSampleMeanAcceptance) {
  BatchTokenValues masks = {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}};
  LossReducer r(masks, {}, false, 1.0);
  EXPECT_DOUBLE_EQ(r.reduce({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}), 15.0);
}

// Per-rollout denominators [9,9,9,3]: (1+..+9)/9 + (10+11+12)/3 = 5 + 11 = 16.
TEST(AlgorithmsReduce, PerRolloutDenominatorsAcceptance) {
  BatchTokenValues masks(4, TokenValues{1, 1, 1});
  auto denoms = rollout_mask_sums({7, 7, 7, 8}, masks);
  EXPECT_EQ(denoms, (std::vector<double>{9, 9, 9, 3}));
  LossReducer r(masks, denoms, false, 1.0);
  EXPECT_DOUBLE_EQ(r.reduce({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {10, 11, 12}}), 16.0);
}

TEST(AlgorithmsReduce, PerTokenAndNormalizer) {
  BatchTokenValues masks = {{1, 1}, {1, 1, 1, 0}};
  BatchTokenValues x = {{1, 3}, {2, 2, 2, 100}};
  // per-sample mean: 2 + 2 = 4; per token: sum = 10, normalised by step tokens 2 + 3 = 5 -> 2
  EXPECT_DOUBLE_EQ(LossReducer(masks, {}, false, 1.0).reduce(x), 4.0);
  EXPECT_DOUBLE_EQ(LossReducer(masks, {}, true, num_loss_tokens(masks)).reduce(x), 2.0);
  EXPECT_DOUBLE_EQ(num_loss_tokens({{0, 0}, {1}}), 2.0);  // empty masks count as 1
  EXPECT_THROW(LossReducer(masks, {}, false, 0.0), Error);
}

TEST(AlgorithmsConfig, ParseValidateRejectsSlimeForbiddenCombinations) {
  AlgorithmConfig c;
  c.kl_coef = 0.1;
  c.kl_loss_coef = 0.1;
  EXPECT_THROW(c.validate(), Error);
  c = {};
  c.advantage_estimator = AdvantageEstimator::reinforce_plus_plus;
  EXPECT_THROW(c.validate(), Error);
  c.normalize_advantages = true;
  EXPECT_NO_THROW(c.validate());
  c = {};
  c.eps_clip_c = 1.0;
  EXPECT_THROW(c.validate(), Error);
  c = {};
  c.use_tis = true;
  c.use_rollout_logprobs = true;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(parse_advantage_estimator("grpo2"), Error);
  EXPECT_EQ(parse_kl_type("low_var_kl"), KlType::low_var_kl);
  c = {};
  EXPECT_DOUBLE_EQ(c.eps_clip_high(), 0.2);
  EXPECT_FALSE(c.grpo_std_normalization());  // n_samples_per_prompt == 1 turns it off
}

TEST(AlgorithmsAdvantages, OnPolicyDistillationPenalty) {
  AlgorithmConfig c;
  c.use_opd = true;
  c.opd_kl_coef = 0.5;
  AdvantageInputs in;
  in.rewards = {1.0f};
  in.loss_masks = {{1, 1}};
  in.log_probs = {{-1.0f, -2.0f}};
  in.teacher_log_probs = {{-1.5f, -1.0f}};
  auto out = compute_advantages_and_returns(c, in);
  // reverse kl = student - teacher = [.5, -1]; A = 1 - .5*[.5, -1] = [.75, 1.5]; returns stay 1
  EXPECT_NEAR(out.opd_reverse_kl[0][1], -1.0, 1e-7);
  EXPECT_NEAR(out.advantages[0][0], 0.75, 1e-7);
  EXPECT_NEAR(out.advantages[0][1], 1.5, 1e-7);
  EXPECT_EQ(out.returns[0][0], 1.0f);
  in.teacher_log_probs.clear();
  EXPECT_THROW(compute_advantages_and_returns(c, in), Error);
}
