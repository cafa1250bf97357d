// AdamW over GPU master weights (issue 7: f32 masters and f32 Adam state on the device).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/train/optimizer.h"
#include "test_util.h"

namespace gyre::model {
namespace {

using testmodel::make_seqs;
using testmodel::small_config;

// A full mixed-precision training step on the GPU: AdamW keeps its moments next to the GPU master
// weights, equals the same step on the CPU (f32 path: grad norm <= 1e-5, weights <= 1e-4 relative,
// Adam amplifies ~1e-6 gradient differences where g is tiny), and its checkpoint (written from
// device state) resumes to the same next step.
TEST(AdamWGpu, StepsGpuMastersLikeCpuAndResumes) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto seqs = make_seqs();
  const std::vector<int32_t> prompt_lens = {1, 5, 20, 1};
  const std::vector<float> adv = {0.5f, -1.0f, 1.0f, 0.25f};
  auto named = [](std::vector<NamedTensor> v) {
    train::NamedTensors out;
    for (auto& t : v) out.emplace_back(t.name, t.tensor);
    return out;
  };
  auto step = [&](CausalLM& m, train::AdamW& opt) {
    LossAndGrad g = policy_gradient_loss_and_grad(m, seqs, prompt_lens, adv);
    auto p = named(m.parameters()), gr = named(g.grads.tensors);
    return opt.step(p, gr).first;
  };
  const train::AdamWConfig cfg{.lr = 1e-3, .weight_decay = 0.01, .clip_grad = 1.0};
  auto cpu_model = CausalLM::random_init(small_config(), 5, 0.05f);
  auto gpu_model = CausalLM::random_init(small_config(), 5, 0.05f);
  gpu_model->to(Device::cuda);
  train::AdamW cpu_opt(cfg, {}), gpu_opt(cfg, {});
  for (int i = 0; i < 2; ++i) {
    const double n_cpu = step(*cpu_model, cpu_opt), n_gpu = step(*gpu_model, gpu_opt);
    EXPECT_NEAR(n_gpu, n_cpu, 1e-5 * n_cpu);
  }
  auto pc = cpu_model->parameters(), pg = gpu_model->parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    // k_proj.bias has an identically zero gradient (it adds q·b to every score of a query, which
    // the softmax ignores), so both gradients are pure rounding noise that Adam scales to ±lr
    // steps: nothing to compare.
    if (pc[i].name.find("k_proj.bias") != std::string::npos) continue;
    EXPECT_LE(gputest::rel_err(pg[i].tensor.to(Device::cpu), pc[i].tensor), 1e-4) << pc[i].name;
  }

  const std::string dir = test::temp_dir("gyre_gpu_adamw");
  gpu_opt.save(dir);
  train::AdamW resumed(cfg, {});
  resumed.load(dir);
  auto twin = CausalLM::random_init(small_config(), 5, 0.05f);
  twin->to(Device::cuda);
  auto src = gpu_model->parameters(), dst = twin->parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].tensor.copy_from(src[i].tensor);
  const double a = step(*gpu_model, gpu_opt), b = step(*twin, resumed);
  EXPECT_EQ(a, b);
  src = gpu_model->parameters();
  dst = twin->parameters();
  for (size_t i = 0; i < src.size(); ++i)
    EXPECT_EQ(dst[i].tensor.to(Device::cpu).to_vector(), src[i].tensor.to(Device::cpu).to_vector())
        << src[i].name;
}

}  // namespace
}  // namespace gyre::model
