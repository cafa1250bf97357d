// model::StepWeightCopies (step_weight_copies.h): one bf16 copy per weight for an optimizer step.
// On a small bf16 Qwen2-shaped model on the GPU: the training forward's log-probs and entropy and
// the backward's gradients with the copies installed are bitwise those of per-call rounding (the
// forward's linears, the fused log-prob head and the backward's dX products all read the copies);
// a pass fills the cache and weights_changed() empties it; after a weight update the cleared
// copies give the new weights' numbers, while stale copies (no weights_changed()) give different
// ones — what the trainer's call after each optimizer step prevents. Inactive on f32 and CPU
// models. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/model/step_weight_copies.h"

namespace gyre::model {
namespace {

std::unique_ptr<CausalLM> bf16_model() {
  auto m = CausalLM::random_init(testmodel::small_config(), 41, 0.08f);
  m->to(Device::cuda);
  m->set_precision(Precision::bf16);
  return m;
}

struct PassResult {
  std::vector<float> logp, entropy;
  std::vector<std::vector<float>> grads;
};

// One training micro-step (forward with entropy, backward of Σ w_t·logp_t + 0.1·Σ entropy_t) with
// `cache` installed (null: per-call rounding).
PassResult train_pass(CausalLM& m, ops::Bf16WeightCache* cache) {
  const ops::UseBf16WeightCache use(cache);
  const auto seqs = testmodel::make_seqs({1, 37, 300, 129}, 2024);
  ScoredBatch sb = score_for_training(m, seqs, 1.0f, /*with_entropy=*/true);
  PassResult r;
  r.logp = sb.logp.to(Device::cpu).to_vector();
  r.entropy = sb.entropy.to(Device::cpu).to_vector();
  const int64_t T = int64_t(r.logp.size());
  const Tensor dlogp = gputest::randn({T}, 77, 0.5f);
  const Tensor dent = Tensor::full({T}, 0.1f);
  Gradients g = m.zeros_like_parameters();
  backward_from_logprobs(m, sb, dlogp, dent, g);
  for (auto& t : g.tensors) r.grads.push_back(t.tensor.to(Device::cpu).to_vector());
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_same(const PassResult& a, const PassResult& b, const char* what) {
  EXPECT_TRUE(same_bits(a.logp, b.logp)) << what << ": log-probs differ";
  EXPECT_TRUE(same_bits(a.entropy, b.entropy)) << what << ": entropy differs";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(same_bits(a.grads[i], b.grads[i])) << what << ": gradient " << i << " differs";
}

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
