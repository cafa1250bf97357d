// Gradient accumulation across micro-batches on the GPU (f32): the gradient of two sequences in
// one call equals, parameter by parameter, the sum of two calls of one sequence each (their loss
// scaled to the same normaliser) — up to f32 summation order, relative to each parameter's own
// largest gradient (a parameter whose backward overwrote instead of accumulating would show an
// O(1) difference there, however small its share of the global norm). Qwen2.5-0.5B's shape cut to
// 2 layers (biases on q/k/v, tied embeddings), as the DP test over NCCL uses. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/scoring.h"

namespace gyre {
namespace {

TEST(GradAccumulationGpu, TwoMicroBatchesEqualOneBatchPerParameter) {
  GYRE_SKIP_WITHOUT_GPU();
  auto cfg = model::named_shape("qwen2.5-0.5b");
  cfg.num_hidden_layers = 2;
  std::vector<std::vector<int32_t>> seqs(2);
  uint32_t x = 99;
  for (auto& s : seqs)
    for (int t = 0; t < 40; ++t)
      s.push_back(int32_t((x = x * 1664525u + 1013904223u) >> 15) % 5000);
  const std::vector<float> adv{1.0f, -0.5f};
  for (Device dev : {Device::cpu, Device::cuda}) {
    SCOPED_TRACE(device_name(dev));
    auto m = model::CausalLM::random_init(cfg, 7);
    m->to(dev);
    model::Gradients one = m->zeros_like_parameters(), two = m->zeros_like_parameters();
    model::policy_gradient_loss_and_grad(*m, seqs, {3, 3}, adv, one);
    // One sequence per call: its loss is normalised by its own 37 tokens, half the pair's 74.
    for (size_t k = 0; k < 2; ++k)
      model::policy_gradient_loss_and_grad(*m, {seqs[k]}, {3}, {0.5f * adv[k]}, two);
    double worst = 0;
    std::string worst_name;
    for (size_t i = 0; i < one.tensors.size(); ++i) {
      const std::vector<float> a = one.tensors[i].tensor.to(Device::cpu).to_vector();
      const std::vector<float> b = two.tensors[i].tensor.to(Device::cpu).to_vector();
      double num = 0, den = 0;
      for (size_t j = 0; j < a.size(); ++j) {
        num = std::max(num, std::fabs(double(a[j]) - double(b[j])));
        den = std::max(den, std::fabs(double(a[j])));
      }
      const double rel = den > 0 ? num / den : num;
      if (rel > 1e-5)
        ADD_FAILURE() << one.tensors[i].name << ": max |one - two| " << num << " of max |g| " << den
                      << " (" << rel << " relative)";
      if (rel > worst) worst = rel, worst_name = one.tensors[i].name;
    }
    std::printf("[grad-accum] %s: worst parameter %s, %.3g relative\n", device_name(dev),
                worst_name.c_str(), worst);
  }
}

}  // namespace
}  // namespace gyre
