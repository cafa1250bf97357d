// CUDA-graph decode steps (infer/decode_graph.h): the engine with graphs gives the same tokens as
// the engine without them and as the CPU engine (greedy fixtures, seeded sampling, log-probs), with
// batches that shrink as requests finish (several buckets, padding rows); graphs are captured once
// and survive an in-place update_weights. Skips without a GPU.
#include <gtest/gtest.h>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

GenerateRequest request(std::vector<int32_t> prompt, int32_t n, float temperature, uint64_t seed) {
  GenerateRequest r;
  r.input_ids = std::move(prompt);
  r.sampling.temperature = temperature;
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.sampling.seed = seed;
  r.return_logprob = true;
  return r;
}

EngineConfig config(int32_t graph_max_bs) {
  EngineConfig c;
  c.page_size = 4;
  c.num_pages = 512;
  c.max_num_batched_tokens = 64;
  c.cuda_graph_max_bs = graph_max_bs;
  return c;
}

TEST(DecodeGraphGpu, SameTokensWithAndWithoutGraphsAndAsTheCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const std::string dir = test::source_path("tests/fixtures/models/qwen3_tiny");
  auto gpu_model = model::CausalLM::load(dir, {.device = Device::cuda});
  auto cpu_model = model::CausalLM::load(dir);
  // 11 requests of different lengths: the decode batch shrinks 11 -> 1 through buckets 16..1.
  std::vector<GenerateRequest> reqs;
  for (uint64_t s = 0; s < 11; ++s)
    reqs.push_back(request({1, 5, int32_t(7 + s), 9, 11}, int32_t(3 + 2 * s), 1.0f, 50 + s));
  Engine with(*gpu_model, nullptr, config(256));
  Engine without(*gpu_model, nullptr, config(0));
  Engine cpu(*cpu_model, nullptr, config(256));
  auto a = with.generate(reqs);
  EXPECT_GT(with.num_cuda_graphs(), 2);
  EXPECT_EQ(without.num_cuda_graphs(), 0);
  auto b = without.generate(reqs);
  auto c = cpu.generate(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(a[i].error.empty()) << a[i].error;
    EXPECT_EQ(a[i].output_ids, b[i].output_ids) << "request " << i;
    EXPECT_EQ(a[i].output_ids, c[i].output_ids) << "request " << i;
    for (size_t j = 0; j < a[i].output_logprobs.size(); ++j) {
      EXPECT_NEAR(a[i].output_logprobs[j], b[i].output_logprobs[j], 1e-5) << i << "/" << j;
      EXPECT_NEAR(a[i].output_logprobs[j], c[i].output_logprobs[j], 1e-4) << i << "/" << j;
    }
  }
  // Replays reuse the captured graphs: a second round captures nothing new.
  const int64_t n = with.num_cuda_graphs();
  auto a2 = with.generate(reqs);
  EXPECT_EQ(with.num_cuda_graphs(), n);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(a2[i].output_ids, a[i].output_ids);
  // New weights in place keep the graphs: the bf16 copies are re-cast at the same addresses
  // (weight_sync_gpu_test.cc: the numbers, and replaced parameters, which drop them).
  with.update_weights([] {});
  EXPECT_EQ(with.num_cuda_graphs(), n);
}

}  // namespace
}  // namespace gyre::infer
