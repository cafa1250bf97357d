// Policy / value / SFT losses: slime's acceptance cases (reference/slime.md §3.4), hand-computed
// values (arithmetic in comments) and finite-difference checks of d loss / d logp.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "gyre/core/error.h"
#include "gyre/rl/algorithms/importance_sampling.h"
#include "gyre/rl/algorithms/policy_loss.h"

using namespace gyre;
using namespace gyre::rl;

namespace {

// A one-sample batch whose per-token ratio exp(logp - old) equals `ratios`.
LossBatch ratio_batch(const std::vector<double>& ratios, const std::vector<double>& adv,
                      const std::vector<double>& logp) {
  LossBatch b;
  b.loss_masks = {TokenValues(ratios.size(), 1.0f)};
  b.log_probs.resize(1);
  b.old_log_probs.resize(1);
  b.advantages.resize(1);
  for (size_t t = 0; t < ratios.size(); ++t) {
    b.log_probs[0].push_back(float(logp[t]));
    b.old_log_probs[0].push_back(float(logp[t] - std::log(ratios[t])));
    b.advantages[0].push_back(float(adv[t]));
  }
  return b;
}

// Central finite differences of policy_loss w.r.t. every log-prob vs the analytic gradient.
void expect_grad_matches(const AlgorithmConfig& c, LossBatch b, double tol = 2e-3) {
  SCOPED_TRACE(::testing::Message()
               << "estimator " << name_of(c.advantage_estimator) << " kl_loss " << c.use_kl_loss
               << " " << name_of(c.kl_loss_type) << " unbiased " << c.use_unbiased_kl << " tis "
               << c.use_tis << " per_token " << c.calculate_per_token_loss << " dual "
               << bool(c.eps_clip_c));
  const LossOutput base = policy_loss(c, b);
  for (size_t i = 0; i < b.log_probs.size(); ++i)
    for (size_t t = 0; t < b.log_probs[i].size(); ++t) {
      const float x = b.log_probs[i][t];
      const float h = 1e-3f;
      b.log_probs[i][t] = x + h;
      const double up = policy_loss(c, b).loss;
      b.log_probs[i][t] = x - h;
      const double dn = policy_loss(c, b).loss;
      b.log_probs[i][t] = x;
      const double fd = (up - dn) / (double(x + h) - double(x - h));
      EXPECT_NEAR(base.grad_log_probs[i][t], fd, tol * (1 + std::abs(fd)))
          << "sample " << i << " token " << t;
    }
}

}  // namespace

// slime.md §3.4 compute_policy_loss: ratios [2,2,.5], A [2,-2,2], eps .2/.2, eps_clip_c 1.5.
// token 0: L1 = -4, L2 = -1.2*2 = -2.4 -> -2.4; token 1: max(4, 2.4) = 4, dual clip
// min(-1.5*-2 = 3, 4) = 3; token 2: L1 = -1, L2 = -.8*2 = -1.6 -> -1.
TEST(AlgorithmsLoss, DualClipPolicyLossAcceptance) {
  const double c = 1.5;
  const double ratios[] = {2, 2, 0.5}, adv[] = {2, -2, 2}, want[] = {-2.4, 3.0, -1.0};
  const double clip[] = {1, 0, 0};  // L2 > L1 only for token 0
  for (int t = 0; t < 3; ++t) {
    TokenLoss tl = ppo_clip_token(ratios[t], adv[t], 0.2, 0.2, &c);
    EXPECT_NEAR(tl.loss, want[t], 1e-12) << t;
    EXPECT_EQ(tl.clipfrac, clip[t]) << t;
  }
  // Token 0 is clipped (gradient 0), token 1 is dual-clipped (0), token 2 unclipped: -A = -2.
  EXPECT_EQ(ppo_clip_token(2, 2, 0.2, 0.2, &c).grad_ratio, 0.0);
  EXPECT_EQ(ppo_clip_token(2, -2, 0.2, 0.2, &c).grad_ratio, 0.0);
  EXPECT_EQ(ppo_clip_token(0.5, 2, 0.2, 0.2, &c).grad_ratio, -2.0);
}

// Same case through the full loss: per-sample mean of the three losses = (-2.4+3-1)/3.
TEST(AlgorithmsLoss, DualClipThroughPolicyLoss) {
  AlgorithmConfig c;
  c.eps_clip_c = 1.5;
  LossBatch b = ratio_batch({2, 2, 0.5}, {2, -2, 2}, {-1, -1, -1});
  LossOutput out = policy_loss(c, b);
  EXPECT_NEAR(out.metrics["train/pg_loss"], (-2.4 + 3.0 - 1.0) / 3, 1e-6);
  EXPECT_NEAR(out.metrics["train/pg_clipfrac"], 1.0 / 3, 1e-9);
  // ppo_kl = old - new = -ln(ratio): (-ln2 - ln2 + ln2)/3
  EXPECT_NEAR(out.metrics["train/ppo_kl"], -std::log(2.0) / 3, 1e-6);
  // token 2: dL/dlogp = dL/dratio * ratio / 3 = -2 * .5 / 3
  EXPECT_NEAR(out.grad_log_probs[0][2], -1.0 / 3, 1e-6);
  EXPECT_EQ(out.grad_log_probs[0][0], 0.0f);
}

// slime.md §3.4 compute_cispo_loss, ppo band (eps .2/.28): clamped [1, 1.14, 1.28, .8];
// loss = -clamped*A*logp = [.7, -.684, 1.024, -1.68]; clipfrac [0,0,1,1]; dL/dlogp = -clamped*A
// = [-1, .57, -2.56, .8] (no gradient through the ratio).
TEST(AlgorithmsLoss, CispoBandAcceptance) {
  const double a[] = {1, -0.5, 2, -1}, lp[] = {-0.7, -1.2, -0.4, -2.1}, r[] = {1, 1.14, 1.56, 0.4};
  const double loss[] = {0.7, -0.684, 1.024, -1.68}, cf[] = {0, 0, 1, 1},
               g[] = {-1, 0.57, -2.56, 0.8};
  for (int t = 0; t < 4; ++t) {
    TokenLoss tl = cispo_token(r[t], a[t], lp[t], 0.2, 0.28);
    EXPECT_NEAR(tl.loss, loss[t], 1e-12) << t;
    EXPECT_EQ(tl.clipfrac, cf[t]) << t;
    EXPECT_NEAR(tl.grad_ratio, g[t], 1e-12) << t;
  }
  // Through policy_loss the gradient is the same scaled by the per-sample mean 1/4.
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::cispo;
  c.eps_clip_high_opt = 0.28;
  LossOutput out =
      policy_loss(c, ratio_batch({1, 1.14, 1.56, 0.4}, {1, -0.5, 2, -1}, {-0.7, -1.2, -0.4, -2.1}));
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(out.grad_log_probs[0][t], g[t] / 4, 1e-6);
  EXPECT_NEAR(out.loss, (0.7 - 0.684 + 1.024 - 1.68) / 4, 1e-6);
}

// slime.md §3.4 compute_cispo_loss, wide (eps 1/4): clamped [1,3,5,.4]; loss [.7,-1.8,4,-.84];
// clipfrac [0,0,1,0]; grad [-1, 1.5, -10, .4].
TEST(AlgorithmsLoss, CispoWideAcceptance) {
  const double a[] = {1, -0.5, 2, -1}, lp[] = {-0.7, -1.2, -0.4, -2.1}, r[] = {1, 3, 9, 0.4};
  const double loss[] = {0.7, -1.8, 4.0, -0.84}, cf[] = {0, 0, 1, 0}, g[] = {-1, 1.5, -10, 0.4};
  for (int t = 0; t < 4; ++t) {
    TokenLoss tl = cispo_token(r[t], a[t], lp[t], 1.0, 4.0);
    EXPECT_NEAR(tl.loss, loss[t], 1e-12) << t;
    EXPECT_EQ(tl.clipfrac, cf[t]) << t;
    EXPECT_NEAR(tl.grad_ratio, g[t], 1e-12) << t;
  }
}

TEST(AlgorithmsLoss, FirstStepRatioIsOneAndKlZero) {
  // No old log-probs: old = detached current -> ratio 1, ppo_kl 0, loss = -mean(A).
  AlgorithmConfig c;
  LossBatch b;
  b.loss_masks = {{1, 1, 0}};
  b.log_probs = {{-0.3f, -2.0f, -1.0f}};
  b.advantages = {{1.0f, 3.0f, 100.0f}};
  LossOutput out = policy_loss(c, b);
  EXPECT_DOUBLE_EQ(out.metrics["train/ppo_kl"], 0.0);
  EXPECT_DOUBLE_EQ(out.metrics["train/pg_clipfrac"], 0.0);
  EXPECT_NEAR(out.loss, -(1.0 + 3.0) / 2, 1e-12);  // masked token ignored
  EXPECT_NEAR(out.grad_log_probs[0][1], -3.0 / 2, 1e-6);
  EXPECT_EQ(out.grad_log_probs[0][2], 0.0f);
}

TEST(AlgorithmsLoss, PerTokenVsPerSampleNormaliser) {
  AlgorithmConfig c;
  LossBatch b;
  b.loss_masks = {{1}, {1, 1, 1}};
  b.log_probs = {{-1}, {-1, -1, -1}};
  b.advantages = {{-4}, {-1, -1, -1}};
  // per sample: L = -A -> means 4 and 1 -> sum 5; divided by 2 rollouts in the step -> 2.5
  EXPECT_NEAR(policy_loss(c, b, 2.0).loss, 2.5, 1e-12);
  // per token: (4 + 1 + 1 + 1) / 4 tokens = 1.75
  c.calculate_per_token_loss = true;
  LossOutput out = policy_loss(c, b, num_loss_tokens(b.loss_masks));
  EXPECT_NEAR(out.loss, 1.75, 1e-12);
  EXPECT_NEAR(out.grad_log_probs[1][0], 1.0 / 4, 1e-7);  // dL/dlogp = -A * ratio / 4
}

TEST(AlgorithmsLoss, GspoUsesSequenceRatio) {
  AlgorithmConfig c;
  c.advantage_estimator = AdvantageEstimator::gspo;
  LossBatch b;
  b.loss_masks = {{1, 1, 0}};
  b.log_probs = {{-1.0f, -1.0f, -9.0f}};
  b.old_log_probs = {{-1.1f, -0.9f, -1.0f}};  // masked mean of old-new = (-.1 + .1)/2 = 0
  b.advantages = {{1.0f, 1.0f, 1.0f}};
  LossOutput out = policy_loss(c, b);
  EXPECT_NEAR(out.metrics["train/ppo_kl"], 0.0, 1e-7);
  EXPECT_NEAR(out.loss, -1.0, 1e-6);          // ratio 1 for every token
  b.old_log_probs = {{-1.2f, -1.2f, -1.0f}};  // seq kl = -0.2 -> ratio e^.2 = 1.2214 > 1.2: clip
  out = policy_loss(c, b);
  EXPECT_NEAR(out.loss, -1.2, 1e-6);
  EXPECT_NEAR(out.metrics["train/pg_clipfrac"], 1.0, 1e-9);
  b.old_log_probs = {{-1.1f, -1.1f, -1.0f}};
  expect_grad_matches(c, b);
}

TEST(AlgorithmsLoss, GradientsMatchFiniteDifferences) {
  LossBatch b;
  b.loss_masks = {{1, 1, 0, 1}, {1, 1}};
  b.log_probs = {{-0.5f, -1.3f, -2.0f, -0.9f}, {-0.2f, -3.0f}};
  b.old_log_probs = {{-0.6f, -1.1f, -2.1f, -1.3f}, {-0.25f, -2.5f}};
  b.ref_log_probs = {{-0.7f, -1.0f, -2.0f, -1.0f}, {-0.1f, -2.8f}};
  b.rollout_log_probs = {{-0.65f, -1.15f, -2.0f, -1.2f}, {-0.3f, -2.6f}};
  b.advantages = {{1.0f, -0.5f, 2.0f, 0.7f}, {-1.5f, 0.3f}};
  b.entropy = {{0.5f, 0.4f, 0.3f, 0.2f}, {1.0f, 2.0f}};
  AlgorithmConfig c;
  c.eps_clip = 0.3;
  expect_grad_matches(c, b);
  c.eps_clip_c = 3.0;
  expect_grad_matches(c, b);
  c.use_kl_loss = true;
  c.kl_loss_coef = 0.3;
  for (KlType k : {KlType::k1, KlType::k2, KlType::k3, KlType::low_var_kl}) {
    c.kl_loss_type = k;
    expect_grad_matches(c, b);
  }
  c.use_unbiased_kl = true;
  expect_grad_matches(c, b);
  c.use_tis = true;
  expect_grad_matches(c, b);
  c.calculate_per_token_loss = true;
  expect_grad_matches(c, b);
  // CISPO is deliberately not checked here: its clipped ratio is a stop-gradient weight, so its
  // gradient is not the derivative of its loss value (CispoBandAcceptance pins it instead).
}

TEST(AlgorithmsLoss, EntropyAndKlLossTerms) {
  AlgorithmConfig c;
  c.entropy_coef = 0.1;
  c.use_kl_loss = true;
  c.kl_loss_coef = 0.5;
  LossBatch b;
  b.loss_masks = {{1, 1}};
  b.log_probs = {{-1, -2}};
  b.ref_log_probs = {{-1.5f, -1.5f}};
  b.entropy = {{2, 4}};
  b.advantages = {{0, 0}};
  LossOutput out = policy_loss(c, b);
  // pg 0; entropy mean 3; k1 mean (.5 - .5)/2 = 0 -> loss = 0 - .1*3 + .5*0 = -.3
  EXPECT_NEAR(out.loss, -0.3, 1e-6);
  EXPECT_NEAR(out.metrics["train/entropy_loss"], 3.0, 1e-6);
  EXPECT_NEAR(out.metrics["train/kl_loss"], 0.0, 1e-7);
  EXPECT_NEAR(out.grad_entropy[0][0], -0.1 / 2, 1e-7);
  EXPECT_NEAR(out.grad_log_probs[0][0], 0.5 * 1.0 / 2, 1e-7);  // kl_coef * dk1 / 2 tokens
}

TEST(AlgorithmsLoss, ParseMissingInputsNameTheField) {
  AlgorithmConfig c;
  c.use_kl_loss = true;
  LossBatch b;
  b.loss_masks = {{1}};
  b.log_probs = {{-1}};
  b.advantages = {{1}};
  try {
    policy_loss(c, b);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ref_log_probs"), std::string::npos) << e.what();
  }
  c = {};
  b.advantages = {{1, 2}};
  EXPECT_THROW(policy_loss(c, b), Error);
  c.entropy_coef = 0.1;
  b.advantages = {{1}};
  EXPECT_THROW(policy_loss(c, b), Error);  // entropy bonus without entropy
}

TEST(AlgorithmsTis, VanillaAndIcepopWeights) {
  AlgorithmConfig c;
  c.use_tis = true;
  c.tis_clip = 2.0;
  c.tis_clip_low = 0.5;
  // ratios exp(old - rollout) = [3, 1.5, 0.25]
  BatchTokenValues old = {{float(std::log(3.0)), float(std::log(1.5)), float(std::log(0.25))}};
  BatchTokenValues rollout = {{0, 0, 0}};
  BatchTokenValues masks = {{1, 1, 1}};
  auto w = compute_importance_weights(c, old, rollout, masks);
  EXPECT_NEAR(w.weights[0][0], 2.0, 1e-6);  // clamped
  EXPECT_NEAR(w.weights[0][1], 1.5, 1e-6);
  EXPECT_NEAR(w.weights[0][2], 0.5, 1e-6);
  EXPECT_EQ(w.metrics["tis_clipfrac"][0], (TokenValues{1, 0, 1}));
  EXPECT_NEAR(w.metrics["tis_abs"][0][0], 2.0, 1e-6);
  c.tis_function = TisFunction::icepop;
  w = compute_importance_weights(c, old, rollout, masks);
  EXPECT_EQ(w.weights[0][0], 0.0f);  // outside the band: dropped
  EXPECT_NEAR(w.weights[0][1], 1.5, 1e-6);
  EXPECT_EQ(w.weights[0][2], 0.0f);
}

TEST(AlgorithmsTis, TisScalesPolicyLossAndReportsMetrics) {
  AlgorithmConfig c;
  c.use_tis = true;
  LossBatch b;
  b.loss_masks = {{1, 1}};
  b.log_probs = {{-1, -1}};
  b.old_log_probs = {{-1, -1}};
  b.rollout_log_probs = {{-1 - float(std::log(4.0)), -1}};  // tis ratios [4, 1] -> weights [2, 1]
  b.advantages = {{1, 1}};
  LossOutput out = policy_loss(c, b);
  // L = -1 per token, weighted [2, 1] -> mean -1.5
  EXPECT_NEAR(out.loss, -1.5, 1e-6);
  EXPECT_NEAR(out.metrics["train/tis"], 2.5, 1e-5);  // mean raw ratio
  EXPECT_NEAR(out.metrics["train/tis_clipfrac"], 0.5, 1e-9);
  EXPECT_NEAR(out.metrics["train/ois"], 1.0, 1e-9);
  EXPECT_NEAR(out.metrics["train/train_rollout_logprob_abs_diff"], std::log(4.0) / 2, 1e-6);
}

TEST(AlgorithmsTis, MisMaskModeRejectsAndVetoes) {
  AlgorithmConfig c;
  c.use_tis = true;
  c.tis_function = TisFunction::mis;
  c.mis.tis_mode = MisMode::mask;
  c.mis.tis_upper_bound = 2.0;  // lower bound defaults to 1/2
  BatchTokenValues old = {{float(std::log(3.0)), 0, 0}, {0, float(std::log(1e-5))}};
  BatchTokenValues rollout = {{0, 0, 0}, {0, 0}};
  BatchTokenValues masks = {{1, 1, 1}, {1, 1}};
  auto w = compute_importance_weights(c, old, rollout, masks);
  EXPECT_EQ(w.modified_masks[0], (TokenValues{0, 1, 1}));  // ratio 3 > 2 rejected
  EXPECT_NEAR(w.weights[0][0], 3.0, 1e-5);                 // weight kept, mask drops it
  EXPECT_EQ(w.modified_masks[1], (TokenValues{1, 0}));
  c.mis.use_rs = true;
  c.mis.rs_veto_threshold = 1e-4;  // token 1 of sample 1 has ratio 1e-5 < 1e-4: whole sequence
  w = compute_importance_weights(c, old, rollout, masks);
  EXPECT_EQ(w.modified_masks[1], (TokenValues{0, 0}));
  EXPECT_EQ(w.metrics["mis_rs_catastrophic_seq_fraction"][1], (TokenValues{1, 1}));
  // Sequence-level truncate with batch normalisation: sample weights exp(sum log ratio).
  c = {};
  c.use_tis = true;
  c.tis_function = TisFunction::mis;
  c.mis.tis_level = MisLevel::sequence;
  c.mis.tis_upper_bound = 10.0;
  c.mis.tis_batch_normalize = true;
  BatchTokenValues o2 = {{float(std::log(2.0)), 0}, {float(std::log(4.0))}};
  BatchTokenValues r2 = {{0, 0}, {0}};
  w = compute_importance_weights(c, o2, r2, {{1, 1}, {1}});
  // sequence weights 2 and 4; mean over sequences 3 -> 2/3, 4/3
  EXPECT_NEAR(w.weights[0][1], 2.0 / 3, 1e-6);
  EXPECT_NEAR(w.weights[1][0], 4.0 / 3, 1e-6);
}

TEST(AlgorithmsLoss, OpsmMasksDriftedNegativeSequences) {
  AlgorithmConfig c;
  c.use_opsm = true;
  c.opsm_delta = 0.05;
  LossBatch b;
  b.loss_masks = {{1, 1}, {1, 1}};
  b.log_probs = {{-1, -1}, {-1, -1}};
  b.old_log_probs = {{-0.9f, -0.9f}, {-0.9f, -0.9f}};  // seq kl = .1 > .05 for both
  b.advantages = {{-1, -1}, {1, 1}};
  LossOutput out = policy_loss(c, b);
  // sample 0 (A<0) masked; sample 1: ratio e^-.1 = .905 inside [.8, 1.2]: L = -.905 per token
  EXPECT_NEAR(out.loss, -std::exp(-0.1), 1e-6);
  EXPECT_NEAR(out.metrics["train/opsm_clipfrac"], 1.0, 1e-9);  // 2 masked tokens / 2
  EXPECT_EQ(out.grad_log_probs[0][0], 0.0f);
}

TEST(AlgorithmsLoss, ValueLossClipping) {
  AlgorithmConfig c;
  c.loss_type = LossType::value_loss;
  LossBatch b;
  b.loss_masks = {{1, 1}};
  b.values = {{1.5f, 0.9f}};
  b.old_values = {{1.0f, 1.0f}};
  b.returns = {{2.0f, 2.0f}};
  LossOutput out = compute_loss(c, b);
  // token 0: clipped 1.2 -> (1.2-2)^2 = .64 > (1.5-2)^2 = .25 -> .64, clipfrac 1, grad 0 (clamped)
  // token 1: d = -.1 inside, clipped = v -> both 1.21 -> 1.21, grad 2*(.9-2) = -2.2
  EXPECT_NEAR(out.loss, (0.64 + 1.21) / 2, 1e-6);
  EXPECT_NEAR(out.metrics["train/value_clipfrac"], 0.5, 1e-9);
  EXPECT_NEAR(out.grad_values[0][0], 0.0, 1e-7);
  EXPECT_NEAR(out.grad_values[0][1], -2.2 / 2, 1e-6);
}

TEST(AlgorithmsLoss, SftLoss) {
  AlgorithmConfig c;
  c.loss_type = LossType::sft_loss;
  LossBatch b;
  b.loss_masks = {{1, 1, 0}, {1}};
  b.log_probs = {{-1, -3, -100}, {-0.5f}};
  LossOutput out = compute_loss(c, b, 2.0);
  // -(mean(-1,-3) + -0.5) / 2 = -(-2 - .5)/2 = 1.25
  EXPECT_NEAR(out.loss, 1.25, 1e-7);
  EXPECT_NEAR(out.grad_log_probs[0][0], -0.25, 1e-7);
  EXPECT_NEAR(out.grad_log_probs[1][0], -0.5, 1e-7);
  EXPECT_EQ(out.grad_log_probs[0][2], 0.0f);
}
