// Generation with a tensor-parallel model under `mpirun -np 2`: every tp rank runs the same engine
// (driven inline, so the scheduler is deterministic) on the same requests in lockstep; the model's
// collectives run inside forward and the sampled rows' logits are all-gathered over the vocabulary
// shards. Greedy and seeded sampling must give exactly the single-process tokens (and log-probs
// within 1e-5), with the KV cache holding only the rank's kv heads.
#include <gtest/gtest.h>

#include <cmath>

#include "dist/mpi_launch.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {
namespace {

std::vector<GenerateRequest> requests() {
  std::vector<GenerateRequest> reqs;
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 17, 300, 42, 7}, {260, 5, 9}, {400, 401, 402, 12, 99, 100, 3}, {77}};
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest r;
    r.rid = "r" + std::to_string(i);
    r.input_ids = prompts[i];
    r.sampling.max_new_tokens = 12;
    r.sampling.ignore_eos = true;
    r.return_logprob = true;
    if (i % 2 == 1) {  // seeded sampling at temperature 0.9 with top-k
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 50;
      r.sampling.seed = 1234 + i;
    } else {  // greedy
      r.sampling.temperature = 0.0f;
    }
    reqs.push_back(r);
  }
  return reqs;
}

EngineConfig config() {
  EngineConfig c;
  c.page_size = 4;
  c.num_pages = 128;
  c.max_num_batched_tokens = 16;  // chunked prefill: several steps in lockstep
  return c;
}

TEST(TensorParallelGenerateWorker, DISABLED_SameTokensAsOneProcess) {
  auto world = dist::init_distributed();
  auto tp = dist::make_tp_comm(*world);
  for (const char* name : {"qwen3_tiny", "qwen2_tiny"}) {
    SCOPED_TRACE(name);
    const std::string dir = test::source_path(std::string("tests/fixtures/models/") + name);
    auto ref = model::CausalLM::load(dir);
    model::LoadOptions lo;
    lo.tp = tp.get();
    auto m = model::CausalLM::load(dir, lo);
    Engine one(*ref, nullptr, config());
    Engine sharded(*m, nullptr, config());
    auto want = one.generate(requests());
    auto got = sharded.generate(requests());
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(got[i].error.empty()) << got[i].error;
      ASSERT_EQ(got[i].output_ids.size(), 12u);
      EXPECT_EQ(got[i].output_ids, want[i].output_ids) << "request " << i;
      for (size_t t = 0; t < got[i].output_logprobs.size(); ++t)
        EXPECT_NEAR(got[i].output_logprobs[t], want[i].output_logprobs[t], 1e-5)
            << "request " << i << " token " << t;
    }
  }
}

TEST(TensorParallelGenerate, TwoRanksGenerateLikeOneProcess) {
  auto r = test::run_mpi_worker("TensorParallelGenerateWorker.DISABLED_SameTokensAsOneProcess");
  EXPECT_EQ(r.r.exit_code, 0) << r.all();
  size_t n = 0, pos = 0;
  while ((pos = r.all().find("PASSED", pos)) != std::string::npos) ++n, ++pos;
  EXPECT_EQ(n, 2u) << r.all();
}

}  // namespace
}  // namespace gyre::infer
