// model::StepWeightCopies (step_weight_copies.h): one bf16 copy per weight for an optimizer step.
// On a small bf16 Qwen2-shaped model on the GPU: the training forward's log-probs and entropy and
// the backward's gradients with the copies installed are bitwise those of per-call rounding (the
// forward's linears, the fused log-prob head and the backward's dX products all read the copies);
// a pass fills the cache and weights_changed() empties it; after a weight update the cleared
// copies give the new weights' numbers, while stale copies (no weights_changed()) give different
// ones — what the trainer's call after each optimizer step prevents. Inactive on f32 and CPU
// models. Skips without a GPU.
#include <gtest/gtest.h>

#include "gpu/model/train_pass.h"
#include "gyre/model/step_weight_copies.h"

namespace gyre::model {
namespace {

using testmodel::bf16_model;
using testmodel::expect_same;
using testmodel::PassResult;
using testmodel::same_bits;
using testmodel::train_pass;

TEST(StepWeightCopiesGpu, SameNumbersAsPerCallRounding) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  StepWeightCopies copies(*m);
  ASSERT_NE(copies.cache(), nullptr);
  const PassResult plain = train_pass(*m, nullptr);
  EXPECT_EQ(copies.cache()->entries(), 0u);
  const PassResult first = train_pass(*m, copies.cache());  // converts on the first use
  EXPECT_GT(copies.cache()->entries(), 0u);
  const PassResult again = train_pass(*m, copies.cache());  // reads the copies
  expect_same(plain, first, "first pass with copies vs per-call rounding");
  expect_same(plain, again, "second pass with copies vs per-call rounding");
  copies.weights_changed();
  EXPECT_EQ(copies.cache()->entries(), 0u);
}

TEST(StepWeightCopiesGpu, WeightsChangedDropsStaleCopies) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  StepWeightCopies copies(*m);
  (void)train_pass(*m, copies.cache());  // copies of the old weights
  // An "optimizer step": every weight scaled by 1.5 in place (same storage, new values).
  for (auto& p : m->parameters()) ops::scale_(p.tensor, 1.5f);
  const PassResult fresh = train_pass(*m, nullptr);
  const PassResult stale = train_pass(*m, copies.cache());  // no weights_changed(): old copies
  EXPECT_FALSE(same_bits(fresh.logp, stale.logp))
      << "stale copies gave the new weights' log-probs: the copies are not being read";
  copies.weights_changed();
  const PassResult cleared = train_pass(*m, copies.cache());
  expect_same(fresh, cleared, "after weights_changed()");
}

TEST(StepWeightCopiesGpu, InactiveForF32AndCpuModels) {
  auto cpu_model = CausalLM::random_init(testmodel::small_config(), 41, 0.08f);
  cpu_model->set_precision(Precision::bf16);
  EXPECT_EQ(StepWeightCopies(*cpu_model).cache(), nullptr);
  GYRE_SKIP_WITHOUT_GPU();
  auto f32_model = CausalLM::random_init(testmodel::small_config(), 41, 0.08f);
  f32_model->to(Device::cuda);
  EXPECT_EQ(StepWeightCopies(*f32_model).cache(), nullptr);
}

}  // namespace
}  // namespace gyre::model
