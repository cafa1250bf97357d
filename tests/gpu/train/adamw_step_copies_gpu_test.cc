// model::StepWeightCopies written by train::AdamW (step_weight_copies.h, optimizer.h): the
// optimizer rewrites the step's bf16 weight copies in its update so they carry over to the next
// step (Megatron's bf16 parameters; bench TrainStep and rl::ActorTrainer when not colocated). On a
// small bf16 Qwen2-shaped model on the GPU, a pass reading the carried-over copies is bitwise a
// pass rounding the new weights per call. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/model/step_weight_copies.h"
#include "gyre/train/optimizer.h"

namespace gyre::model {
namespace {

std::unique_ptr<CausalLM> bf16_model() {
  auto m = CausalLM::random_init(testmodel::small_config(), 41, 0.08f);
  m->to(Device::cuda);
  m->set_precision(Precision::bf16);
  return m;
}

struct PassResult {
  std::vector<float> logp;
  std::vector<std::vector<float>> grads;
};

// One training micro-step (forward, backward of Σ w_t·logp_t) with `cache` installed (null:
// per-call rounding).
PassResult train_pass(CausalLM& m, ops::Bf16WeightCache* cache) {
  const ops::UseBf16WeightCache use(cache);
  const auto seqs = testmodel::make_seqs({1, 37, 300, 129}, 2024);
  ScoredBatch sb = score_for_training(m, seqs, 1.0f, /*with_entropy=*/false);
  PassResult r;
  r.logp = sb.logp.to(Device::cpu).to_vector();
  const Tensor dlogp = gputest::randn({int64_t(r.logp.size())}, 77, 0.5f);
  Gradients g = m.zeros_like_parameters();
  backward_from_logprobs(m, sb, dlogp, Tensor(), g);
  for (auto& t : g.tensors) r.grads.push_back(t.tensor.to(Device::cpu).to_vector());
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_same(const PassResult& a, const PassResult& b, const char* what) {
  EXPECT_TRUE(same_bits(a.logp, b.logp)) << what << ": log-probs differ";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(same_bits(a.grads[i], b.grads[i])) << what << ": gradient " << i << " differs";
}

// AdamW writing the copies in its update (set_bf16_copies(for_optimizer())): after each step
// after_optimizer_step() keeps them (every copy written: fresh), and the next pass reading them
// gives bitwise the numbers of per-call rounding of the new weights; copies the update did not
// cover (an optimizer over some of the weights only) are dropped instead.
TEST(AdamWStepCopiesGpu, OptimizerWrittenCopiesCarryOverBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  StepWeightCopies copies(*m);
  train::AdamW opt({.lr = 1e-2, .clip_grad = 1.0}, {});
  opt.set_bf16_copies(copies.for_optimizer());
  EXPECT_TRUE(opt.has_bf16_copies());
  train::NamedTensors params, grads;
  Gradients g = m->zeros_like_parameters();
  const auto ps = m->parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    params.emplace_back(ps[i].name, ps[i].tensor);
    grads.emplace_back(g.tensors[i].name, g.tensors[i].tensor);
  }
  for (int step = 0; step < 2; ++step) {
    (void)train_pass(*m, copies.cache());  // fills (step 0) or reads the copies
    const size_t entries = copies.cache()->entries();
    ASSERT_GT(entries, 0u);
    for (auto& [n, t] : grads)
      t.copy_from(gputest::randn(t.shape(), 500 + step, 0.1f).to(Device::cuda));
    opt.step(params, grads);
    copies.after_optimizer_step();
    EXPECT_EQ(copies.cache()->entries(), entries) << "written copies were dropped";
    const PassResult with = train_pass(*m, copies.cache()), plain = train_pass(*m, nullptr);
    expect_same(plain, with, "optimizer-written copies vs per-call rounding of the new weights");
  }
  // An update that covers only some weights leaves the others' copies stale: dropped.
  train::AdamW partial({.lr = 1e-2}, {});
  partial.set_bf16_copies(copies.for_optimizer());
  train::NamedTensors p1{params[0]}, g1{grads[0]};
  partial.step(p1, g1);
  copies.after_optimizer_step();
  EXPECT_EQ(copies.cache()->entries(), 0u);
}

}  // namespace
}  // namespace gyre::model
