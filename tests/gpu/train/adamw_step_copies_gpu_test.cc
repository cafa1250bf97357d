// model::StepWeightCopies written by train::AdamW (step_weight_copies.h, optimizer.h): the
// optimizer rewrites the step's bf16 weight copies in its update so they carry over to the next
// step (Megatron's bf16 parameters; bench TrainStep and rl::ActorTrainer when not colocated). On a
// small bf16 Qwen2-shaped model on the GPU, a pass reading the carried-over copies is bitwise a
// pass rounding the new weights per call. Skips without a GPU.
#include <gtest/gtest.h>

#include "gpu/model/train_pass.h"
#include "gyre/model/step_weight_copies.h"
#include "gyre/train/optimizer.h"

namespace gyre::model {
namespace {

using testmodel::bf16_model;
using testmodel::expect_same;
using testmodel::PassResult;
using testmodel::train_pass;

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
