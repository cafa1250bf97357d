// rl::ActorTrainer carries the bf16 weight copies that its AdamW wrote in a train() call's last
// update into the next call (actor_trainer.h, kept_weight_copies), so that call's old-log-prob pass
// rounds no weight. The invariant that makes this safe: a kept copy is always the exact bf16
// rounding of its parameter's current value. Checked here on the small bf16 test model on the GPU
// after each call; the carried cache is the same object across calls while the weights only
// change through AdamW, and a new one after the actor's weights change in place and say so
// (CausalLM::mark_weights_changed; load_weights and to() do it themselves). Each call's
// first-step ratio check (on by default) also passes, i.e. the old-log-prob pass over the carried
// copies equals the first micro-step's forward bit for bit. Skips without a GPU.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/infer/weight_copies_check.h"
#include "gyre/backend/ops.h"
#include "gyre/core/dtype.h"
#include "gyre/rl/trainer/actor_trainer.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {
namespace {

// Four samples of 6 prompt + 4 response tokens inside the small model's vocabulary (1000).
std::vector<Sample> make_samples() {
  std::vector<Sample> out;
  for (int i = 0; i < 4; ++i) {
    Sample s;
    s.index = i;
    s.prompt = "p";
    for (int t = 0; t < 10; ++t) s.tokens.push_back(int32_t((37 * i + 11 * t + 5) % 1000));
    s.response_length = 4;
    s.status = SampleStatus::completed;
    out.push_back(s);
  }
  return out;
}

// Every copy the cache holds equals f32_to_bf16 of its parameter now, bit for bit; returns how
// many parameters have one.
size_t expect_kept_copies_match(const ops::Bf16WeightCache& kept, model::CausalLM& m,
                                const std::string& when) {
  // copy_to_write is the cache's lookup that never converts; nothing is written through it here.
  auto& cache = const_cast<ops::Bf16WeightCache&>(kept);
  size_t n = 0;
  for (auto& p : m.parameters()) {
    const uint16_t* c = cache.copy_to_write(p.tensor);
    if (!c) continue;
    ++n;
    std::vector<uint16_t> want;
    for (float x : p.tensor.to(Device::cpu).to_vector()) want.push_back(f32_to_bf16(x));
    EXPECT_EQ(gputest::bits_at(c, p.tensor.numel()), want) << when << ": stale copy of " << p.name;
  }
  return n;
}

TEST(ActorTrainerCopiesGpu, CopiesCarryAcrossCallsUntilTheWeightsChangeElsewhere) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = gputest::bf16_model();
  train::AdamWConfig adam;
  adam.lr = 1e-2;  // large steps: a stale copy would differ from the new weights' rounding
  adam.clip_grad = 1.0;
  train::AdamW opt(adam, train::LrSchedule{});
  ActorTrainerOptions o;
  o.global_batch_size = 2;  // two optimizer steps per call
  o.micro.micro_batch_size = 1;
  ActorTrainer trainer(*m, nullptr, opt, o);
  const auto samples = make_samples();
  const std::vector<float> rewards = {1.0f, 0.0f, 0.0f, 1.0f};
  EXPECT_EQ(trainer.kept_weight_copies(), nullptr);

  trainer.train(samples, rewards);
  const ops::Bf16WeightCache* kept = trainer.kept_weight_copies();
  ASSERT_NE(kept, nullptr);
  const size_t entries = kept->entries();
  ASSERT_GT(entries, 0u);
  EXPECT_EQ(expect_kept_copies_match(*kept, *m, "after call 1"), entries);

  // Call 2 reads the carried copies (its ratio check passes) and carries the same cache on.
  trainer.train(samples, rewards);
  EXPECT_EQ(trainer.kept_weight_copies(), kept);
  EXPECT_EQ(expect_kept_copies_match(*kept, *m, "after call 2"), entries);

  // A weight written outside AdamW, announced: call 3 makes new copies of the new values.
  bool scaled = false;
  for (auto& p : m->parameters()) {
    if (!const_cast<ops::Bf16WeightCache*>(kept)->copy_to_write(p.tensor)) continue;
    ops::scale_(p.tensor, 1.5f);  // a weight that has a copy: that copy is now stale
    scaled = true;
    break;
  }
  ASSERT_TRUE(scaled);
  m->mark_weights_changed();
  trainer.train(samples, rewards);
  const ops::Bf16WeightCache* after = trainer.kept_weight_copies();
  ASSERT_NE(after, nullptr);
  EXPECT_NE(after, kept);
  EXPECT_EQ(expect_kept_copies_match(*after, *m, "after an announced weight change"), entries);
}

}  // namespace
}  // namespace gyre::rl
