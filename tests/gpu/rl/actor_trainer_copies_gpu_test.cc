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

#include <memory>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/infer/weight_copies_check.h"
#include "gyre/backend/ops.h"
#include "gyre/core/dtype.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/dist/nccl_comm.h"
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

// The tests' setting: AdamW with large steps (a stale copy would differ from the new weights'
// rounding), two optimizer steps per train() call (global batch 2 of micro-batches of 1) and fixed
// rewards for make_samples()'s four samples.
train::AdamWConfig large_step_adam() {
  train::AdamWConfig adam;
  adam.lr = 1e-2;
  adam.clip_grad = 1.0;
  return adam;
}

ActorTrainerOptions two_steps_per_call() {
  ActorTrainerOptions o;
  o.global_batch_size = 2;
  o.micro.micro_batch_size = 1;
  return o;
}

const std::vector<float> kRewards = {1.0f, 0.0f, 0.0f, 1.0f};

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
  train::AdamW opt(large_step_adam(), train::LrSchedule{});
  ActorTrainer trainer(*m, nullptr, opt, two_steps_per_call());
  const auto samples = make_samples();
  EXPECT_EQ(trainer.kept_weight_copies(), nullptr);

  trainer.train(samples, kRewards);
  const ops::Bf16WeightCache* kept = trainer.kept_weight_copies();
  ASSERT_NE(kept, nullptr);
  const size_t entries = kept->entries();
  ASSERT_GT(entries, 0u);
  EXPECT_EQ(expect_kept_copies_match(*kept, *m, "after call 1"), entries);

  // Call 2 reads the carried copies (its ratio check passes) and carries the same cache on.
  trainer.train(samples, kRewards);
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
  trainer.train(samples, kRewards);
  const ops::Bf16WeightCache* after = trainer.kept_weight_copies();
  ASSERT_NE(after, nullptr);
  EXPECT_NE(after, kept);
  EXPECT_EQ(expect_kept_copies_match(*after, *m, "after an announced weight change"), entries);
}

// Colocated: the optimizer writes a rollout engine's copies (here the engine's own cache class,
// filled the way the engine's first forward fills it). From the second call on the trainer's passes
// read those copies and make none of their own; after every call each copy is the exact rounding
// of its weight (the engine needs no re-cast), and each call's first-step ratio check passes. A
// weight change announced between calls makes the next call cast again.
TEST(ActorTrainerCopiesGpu, ColocatedTrainerReadsTheEngineCopiesFromItsSecondCall) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = gputest::bf16_model();
  train::AdamW opt(large_step_adam(), train::LrSchedule{});
  auto engine_copies = std::make_shared<ops::Bf16WeightCache>();
  opt.set_bf16_copies(engine_copies);
  ActorTrainer trainer(*m, nullptr, opt, two_steps_per_call());
  const auto samples = make_samples();
  {  // the engine's first forward converts the weights it uses into its cache
    const ops::Bf16Autocast autocast(true);
    const ops::UseBf16WeightCache use(engine_copies.get());
    trainer.response_logprobs(*m, samples, {{0, 1, 2, 3}});
  }
  const size_t entries = engine_copies->entries();
  ASSERT_GT(entries, 0u);

  trainer.train(samples, kRewards);  // the first call casts, as before
  EXPECT_FALSE(trainer.last_call_read_engine_copies());
  EXPECT_EQ(trainer.kept_weight_copies(), nullptr);
  EXPECT_EQ(expect_kept_copies_match(*engine_copies, *m, "after call 1"), entries);

  for (int call = 2; call <= 3; ++call) {
    const uint64_t hits = engine_copies->hits();
    trainer.train(samples, kRewards);
    EXPECT_TRUE(trainer.last_call_read_engine_copies()) << "call " << call;
    EXPECT_GT(engine_copies->hits(), hits)
        << "call " << call << " did not read the engine's copies";
    EXPECT_EQ(engine_copies->entries(), entries) << "call " << call << " converted a weight";
    EXPECT_EQ(trainer.kept_weight_copies(), nullptr);
    EXPECT_EQ(expect_kept_copies_match(*engine_copies, *m, "after call " + std::to_string(call)),
              entries);
  }

  // An announced weight change (the engine re-casts at its next sync; the trainer cannot know
  // whether one ran): the next call casts again, and the one after reads the copies again.
  m->mark_weights_changed();
  trainer.train(samples, kRewards);
  EXPECT_FALSE(trainer.last_call_read_engine_copies());
  trainer.train(samples, kRewards);
  EXPECT_TRUE(trainer.last_call_read_engine_copies());
  EXPECT_EQ(expect_kept_copies_match(*engine_copies, *m, "after the change"), entries);
}

// Data parallel (one NCCL rank; ZeRO-1 and all_reduce): the data-parallel optimizer writes the
// trainer's copies in its update (ZeRO-1: the final unflatten; all_reduce: its inner AdamW), so
// they carry across calls as a single-process AdamW's do — exact after every call, the first-step
// ratio checks pass — and the optimizer holds no cache between calls.
TEST(ActorTrainerCopiesGpu, DataParallelTrainerCarriesTheCopiesItsOptimizerWrites) {
  GYRE_SKIP_WITHOUT_GPU();
  if (!dist::nccl_available()) GTEST_SKIP() << "built without NCCL";
  for (const dist::DpMode mode : {dist::DpMode::zero1, dist::DpMode::all_reduce}) {
    SCOPED_TRACE(dist::dp_mode_name(mode));
    std::unique_ptr<dist::Comm> comm =
        dist::nccl_comm_init(dist::nccl_unique_id(), 1, 0, 0, 60.0, "dp");
    auto m = gputest::bf16_model();
    train::AdamW opt(large_step_adam(), train::LrSchedule{});
    dist::DataParallelOptimizer dp(*comm, large_step_adam(), train::LrSchedule{}, mode,
                                   /*bucket=*/20000);
    ActorTrainerOptions o = two_steps_per_call();
    o.data_parallel = &dp;
    ActorTrainer trainer(*m, nullptr, opt, o);
    const auto samples = make_samples();

    trainer.train(samples, kRewards);
    const ops::Bf16WeightCache* kept = trainer.kept_weight_copies();
    ASSERT_NE(kept, nullptr);
    const size_t entries = kept->entries();
    ASSERT_GT(entries, 0u);
    EXPECT_EQ(expect_kept_copies_match(*kept, *m, "after call 1"), entries);
    EXPECT_EQ(dp.bf16_copies(), nullptr) << "the optimizer still holds the trainer's copies";

    const uint64_t hits = kept->hits();
    trainer.train(samples, kRewards);
    EXPECT_EQ(trainer.kept_weight_copies(), kept);
    EXPECT_GT(kept->hits(), hits);
    EXPECT_EQ(kept->entries(), entries);
    EXPECT_EQ(expect_kept_copies_match(*kept, *m, "after call 2"), entries);
  }
}

}  // namespace
}  // namespace gyre::rl
