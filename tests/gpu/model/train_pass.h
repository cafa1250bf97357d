// One training micro-step of a small bf16 Qwen2-shaped model on the GPU, reduced to host vectors,
// and bitwise comparisons of two of them — what the bf16 weight-copy tests
// (step_weight_copies_gpu_test.cc, ../train/adamw_step_copies_gpu_test.cc) compare with and
// without an installed ops::Bf16WeightCache.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model::testmodel {

inline std::unique_ptr<CausalLM> bf16_model() {
  auto m = CausalLM::random_init(small_config(), 41, 0.08f);
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
inline PassResult train_pass(CausalLM& m, ops::Bf16WeightCache* cache) {
  const ops::UseBf16WeightCache use(cache);
  const auto seqs = make_seqs({1, 37, 300, 129}, 2024);
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

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void expect_same(const PassResult& a, const PassResult& b, const char* what) {
  EXPECT_TRUE(same_bits(a.logp, b.logp)) << what << ": log-probs differ";
  EXPECT_TRUE(same_bits(a.entropy, b.entropy)) << what << ": entropy differs";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(same_bits(a.grads[i], b.grads[i])) << what << ": gradient " << i << " differs";
}

}  // namespace gyre::model::testmodel
