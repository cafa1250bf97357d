// Decode fusion (model/decode_fusion.h, backend/fused_linear_ops.h) changes launches, not numbers:
// on a small bf16 Qwen2-shaped model (attention biases, head dim 64, bf16 weight cache, bf16 KV
// cache) the engine's greedy decode — tokens, sampled log-probs and the top-20 log-probs of every
// step (the logits up to the shared log-sum-exp), eager and CUDA-graph steps, batch 1 and a padded
// bucket — is bitwise the same with the fusion on and off. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"

namespace gyre::infer {
namespace {

// Restores the process-wide default when a test ends (also on failure).
struct FusionScope {
  explicit FusionScope(bool on) { model::set_decode_fusion(on); }
  ~FusionScope() { model::set_decode_fusion(true); }
};

std::unique_ptr<model::CausalLM> bf16_model() {
  auto m = model::CausalLM::random_init(model::testmodel::small_config(), 21, 0.08f);
  m->to(Device::cuda);
  m->set_precision(model::Precision::bf16);
  return m;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

GenerateRequest greedy(std::vector<int32_t> prompt, int32_t n) {
  GenerateRequest r;
  r.input_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.return_logprob = true;
  return r;
}

TEST(DecodeFusionGpu, GreedyDecodeBitwiseWithFusionOnAndOffWithAndWithoutGraphs) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  // Batches of 1 and of 3 (a padded graph bucket of 4), then one request with top log-probs (the
  // logits go to the host sampler).
  std::vector<std::vector<GenerateRequest>> rounds = {
      {greedy({1, 2, 3, 4, 5}, 24)},
      {greedy({9, 8, 7}, 20), greedy({11, 12, 13, 14, 15, 16, 17}, 12), greedy({21}, 16)}};
  GenerateRequest top = greedy({4, 4, 4, 4}, 10);
  top.top_logprobs_num = 20;
  rounds.push_back({top});
  for (int graph_max_bs : {0, 256}) {
    for (size_t r = 0; r < rounds.size(); ++r) {
      SCOPED_TRACE("graphs " + std::to_string(graph_max_bs) + " round " + std::to_string(r));
      std::vector<GenerateResult> res[2];
      for (int on = 0; on < 2; ++on) {
        FusionScope fusion(on == 1);
        EngineConfig c;
        c.page_size = 16;
        c.num_pages = 128;
        c.max_num_batched_tokens = 256;
        c.cuda_graph_max_bs = graph_max_bs;
        Engine engine(*m, nullptr, c);  // a fresh engine: graphs capture the current setting
        res[on] = engine.generate(rounds[r]);
        if (graph_max_bs > 0) {
          EXPECT_GT(engine.num_cuda_graphs(), 0);
        }
      }
      for (size_t i = 0; i < rounds[r].size(); ++i) {
        ASSERT_TRUE(res[1][i].error.empty()) << res[1][i].error;
        EXPECT_EQ(res[0][i].output_ids, res[1][i].output_ids) << "request " << i;
        EXPECT_TRUE(bitwise_equal(res[0][i].output_logprobs, res[1][i].output_logprobs))
            << "request " << i;
        ASSERT_EQ(res[0][i].output_top_logprobs.size(), res[1][i].output_top_logprobs.size());
        for (size_t j = 0; j < res[0][i].output_top_logprobs.size(); ++j) {
          const auto &a = res[0][i].output_top_logprobs[j], &b = res[1][i].output_top_logprobs[j];
          ASSERT_EQ(a.size(), b.size());
          for (size_t k = 0; k < a.size(); ++k) {
            EXPECT_EQ(a[k].token_id, b[k].token_id) << i << "/" << j << "/" << k;
            EXPECT_TRUE(std::memcmp(&a[k].logprob, &b[k].logprob, sizeof(float)) == 0)
                << i << "/" << j << "/" << k;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace gyre::infer
