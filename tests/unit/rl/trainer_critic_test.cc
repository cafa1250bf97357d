// The PPO critic (rl/trainer/critic.h) on the tiny Qwen3 fixture model: a zero value head gives
// zero values, value-loss steps move the values toward the returns, the first step sees no value
// clipping (old values are bitwise the trained forward), and --advantage-estimator ppo trains the
// actor with GAE advantages from the critic through ActorTrainer (ratio check included).
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/rl/trainer/actor_trainer.h"
#include "gyre/rl/trainer/critic.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl;

namespace {

std::string model_dir() { return gyre::test::source_path("tests/fixtures/models/qwen3_tiny"); }

// Four samples: 3 prompt tokens and 3 response tokens each, distinct prompts.
std::vector<Sample> make_samples() {
  std::vector<Sample> out;
  for (int i = 0; i < 4; ++i) {
    Sample s;
    s.index = i;
    s.prompt = "p";
    s.tokens = {int32_t(10 + i), int32_t(20 + 3 * i), 7, int32_t(40 + i), 41, int32_t(5 + i)};
    s.response_length = 3;
    s.status = SampleStatus::completed;
    out.push_back(s);
  }
  return out;
}

train::AdamWConfig adam(double lr) {
  train::AdamWConfig a;
  a.lr = lr;
  a.clip_grad = 1.0;
  return a;
}

double mean_abs_error(const TokenValuesF& v, const TokenValuesF& target) {
  double s = 0, n = 0;
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t t = 0; t < v[i].size(); ++t) s += std::fabs(v[i][t] - target[i][t]), n += 1;
  return s / n;
}

}  // namespace

TEST(Critic, ZeroHeadThenValueStepsFitTheReturns) {
  Critic critic(model_dir(), adam(3e-3), train::LrSchedule{});
  auto samples = make_samples();
  const std::vector<std::vector<int64_t>> schedule = {{0, 1}, {2, 3}};
  TokenValuesF v0 = critic.values(samples, schedule);
  ASSERT_EQ(v0.size(), 4u);
  for (auto& v : v0) {
    ASSERT_EQ(v.size(), 3u);
    for (float x : v) EXPECT_EQ(x, 0.0f);  // zero-initialised head
  }
  // Returns +1 for the first two samples, -1 for the others.
  TokenValuesF returns(4), masks_f(4);
  std::vector<std::vector<float>> masks(4, std::vector<float>(3, 1.0f));
  for (int i = 0; i < 4; ++i) returns[size_t(i)].assign(3, i < 2 ? 1.0f : -1.0f);
  AlgorithmConfig algo;
  algo.advantage_estimator = AdvantageEstimator::ppo;
  algo.value_clip = 0.2;
  const std::vector<double> denoms(4, 3.0);
  TokenValuesF old = v0;
  double first_loss = -1, last_loss = -1;
  for (int step = 0; step < 60; ++step) {
    auto m = critic.train_step(algo, samples, schedule, returns, old, masks, denoms, 4.0);
    ASSERT_TRUE(m.count("train/value_loss"));
    if (step == 0) {
      first_loss = m["train/value_loss"];
      EXPECT_EQ(m["train/value_clipfrac"], 0.0) << "old values must equal the first forward";
      EXPECT_GT(m["train/critic_grad_norm"], 0.0);
    }
    last_loss = m["train/value_loss"];
    old = critic.values(samples, schedule);  // PPO: the next rollout's old values
  }
  EXPECT_NEAR(first_loss, 1.0, 1e-6);  // mean of (0 - (+-1))^2
  EXPECT_LT(last_loss, 0.2 * first_loss);
  TokenValuesF v = critic.values(samples, schedule);
  EXPECT_LT(mean_abs_error(v, returns), 0.5);
  EXPECT_GT(v[0][2], 0.0f);
  EXPECT_LT(v[3][2], 0.0f);
  // The head moved (the trunk gets gradient through it once w != 0).
  double wsum = 0;
  for (int64_t i = 0; i < critic.head_weight().numel(); ++i)
    wsum += std::fabs(critic.head_weight().f32()[i]);
  EXPECT_GT(wsum, 0.0);
}

TEST(Critic, SaveAndLoadRestoreTheValuesExactly) {
  Critic a(model_dir(), adam(3e-3), train::LrSchedule{});
  auto samples = make_samples();
  const std::vector<std::vector<int64_t>> schedule = {{0, 1, 2, 3}};
  std::vector<std::vector<float>> masks(4, std::vector<float>(3, 1.0f));
  TokenValuesF returns(4, std::vector<float>(3, 0.5f));
  AlgorithmConfig algo;
  TokenValuesF old = a.values(samples, schedule);
  for (int i = 0; i < 3; ++i)
    a.train_step(algo, samples, schedule, returns, old, masks, std::vector<double>(4, 3.0), 4.0);
  const std::string dir = gyre::test::temp_dir("critic");
  a.save(dir + "/critic", DType::f32);
  const TokenValuesF saved = a.values(samples, schedule);
  Critic b(model_dir(), adam(3e-3), train::LrSchedule{});
  b.load(dir + "/critic");
  EXPECT_EQ(saved, b.values(samples, schedule));
  // And the next step is the same (optimizer moments and iteration restored).
  old = a.values(samples, schedule);
  auto ma = a.train_step(algo, samples, schedule, returns, old, masks, {3, 3, 3, 3}, 4.0);
  auto mb = b.train_step(algo, samples, schedule, returns, old, masks, {3, 3, 3, 3}, 4.0);
  EXPECT_EQ(ma, mb);
  // A critic folder is also a --critic-load folder: the head comes with the model.
  Critic c(dir + "/critic/model", adam(3e-3), train::LrSchedule{});
  EXPECT_EQ(saved, c.values(samples, schedule));
}

TEST(Critic, PpoThroughTheActorTrainer) {
  auto actor = model::CausalLM::load(model_dir());
  train::AdamW opt(adam(1e-3), train::LrSchedule{});
  Critic critic(model_dir(), adam(1e-3), train::LrSchedule{});
  ActorTrainerOptions o;
  o.algo.advantage_estimator = AdvantageEstimator::ppo;
  o.algo.gamma = 1.0;
  o.algo.lambd = 0.95;
  o.global_batch_size = 2;  // two optimizer steps
  o.micro.micro_batch_size = 1;
  o.critic = &critic;
  ActorTrainer trainer(*actor, nullptr, opt, o);
  auto samples = make_samples();
  Metrics m = trainer.train(samples, {1.0f, 0.0f, 1.0f, 0.0f});
  for (const char* k : {"train/pg_loss", "train/value_loss", "train/value_clipfrac",
                        "train/critic_grad_norm", "train/grad_norm"})
    EXPECT_TRUE(m.count(k)) << k;
  EXPECT_EQ(m["train/num_steps"], 2.0);
  EXPECT_GT(m["train/grad_norm"], 0.0);  // GAE advantages are non-zero: the actor moved
  EXPECT_TRUE(std::isfinite(m["train/value_loss"]));
  // bf16 weight copies exist only for a CUDA bf16 actor: none kept on the CPU.
  EXPECT_EQ(trainer.kept_weight_copies(), nullptr);

  // ppo without a critic is a configuration error, not a silent zero-value GAE.
  ActorTrainerOptions bad = o;
  bad.critic = nullptr;
  EXPECT_THROW(ActorTrainer(*actor, nullptr, opt, bad), Error);
}
