// Top-k / top-p / min-p sampling on the GPU (ops::sample_tokens_filtered) picks exactly the token
// infer::Sampler picks for the same logits, seed and step: random rows with every combination of
// temperature, top_k in {off, 1, 2, 50, V-1}, top_p in {off, 0.1, 0.9, 0.999} and min_p; ties
// (duplicated logits), -inf logits, and a flat 151936-word vocabulary where top-p keeps most of it
// (the global-memory path). Also the rollout engine on the GPU with top-k/top-p requests returns
// the CPU engine's tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/sampling_ops.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/sampler.h"
#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

struct Rows {
  int64_t R = 0, V = 0;
  std::vector<float> logits, temps, top_p;
  std::vector<int32_t> top_k;
  std::vector<int64_t> seeds, steps;
};

// Runs the GPU op and the CPU sampler on every row; returns the number of mismatches (each one
// also fails the test with its parameters).
int compare(const Rows& r, float min_p, const char* what) {
  const Device cu = Device::cuda;
  Tensor tokens;
  ops::sample_tokens_filtered(
      Tensor::from_vector(r.logits, {r.R, r.V}).to(cu), Tensor::from_vector(r.temps, {r.R}).to(cu),
      Tensor::from_vector(r.top_k, {r.R}).to(cu), Tensor::from_vector(r.top_p, {r.R}).to(cu),
      Tensor::from_vector(r.seeds, {r.R}).to(cu), Tensor::from_vector(r.steps, {r.R}).to(cu), min_p,
      tokens);
  const Tensor got = tokens.to(Device::cpu);
  Sampler sampler;
  int mismatches = 0;
  for (int64_t i = 0; i < r.R; ++i) {
    SamplingParams sp;
    sp.temperature = r.temps[size_t(i)];
    sp.top_k = r.top_k[size_t(i)];
    sp.top_p = r.top_p[size_t(i)];
    sp.min_p = min_p;
    std::vector<int32_t> output(size_t(r.steps[size_t(i)]), 0);  // its size is the step counter
    SampleInput in;
    in.logits = r.logits.data() + i * r.V;
    in.vocab = r.V;
    in.params = &sp;
    in.output = output;
    in.seed = uint64_t(r.seeds[size_t(i)]);
    const int32_t want = sampler.sample(in).token;
    if (got.i32()[i] != want) {
      ++mismatches;
      ADD_FAILURE() << what << " row " << i << ": gpu " << got.i32()[i] << " cpu " << want
                    << " (T=" << sp.temperature << " top_k=" << sp.top_k << " top_p=" << sp.top_p
                    << " min_p=" << min_p << ")";
    }
  }
  return mismatches;
}

void add_row(Rows& r, const std::vector<float>& x, float t, int32_t k, float p, int64_t seed,
             int64_t step) {
  r.logits.insert(r.logits.end(), x.begin(), x.end());
  r.temps.push_back(t);
  r.top_k.push_back(k);
  r.top_p.push_back(p);
  r.seeds.push_back(seed);
  r.steps.push_back(step);
  ++r.R;
}

TEST(CudaFilteredSampling, SameTokensAsCpuSamplerOnRandomRows) {
  GYRE_SKIP_WITHOUT_GPU();
  PhiloxStream rng(11);
  const float temps[] = {0.0f, 0.5f, 1.0f, 1.7f};
  const float ps[] = {1.0f, 0.1f, 0.9f, 0.999f};
  for (int64_t V : {7, 300, 5003})
    for (float min_p : {0.0f, 0.05f}) {
      const int32_t ks[] = {0, 1, 2, 50, int32_t(V - 1), int32_t(V)};
      Rows r;
      r.V = V;
      int64_t n = 0;
      for (float t : temps)
        for (int32_t k : ks)
          for (float p : ps)
            for (int kind = 0; kind < 3; ++kind, ++n) {
              std::vector<float> x(static_cast<size_t>(V));
              for (float& v : x) v = rng.next_normal() * 3.0f;
              if (kind == 1)  // ties: few distinct values, many duplicates
                for (float& v : x) v = std::round(v * 2.0f) / 2.0f;
              if (kind == 2)  // -inf logits (masked ids) scattered over the row
                for (size_t j = 0; j < x.size(); j += 3)
                  x[j] = -std::numeric_limits<float>::infinity();
              add_row(r, x, t, k, p, 1000 + n * 7, n % 11);
            }
      EXPECT_EQ(compare(r, min_p, "random"), 0) << "V " << V << " min_p " << min_p;
    }
}

TEST(CudaFilteredSampling, ManySeedsOnPeakedRowsWithLargeVocabulary) {
  GYRE_SKIP_WITHOUT_GPU();
  // V = 151936, logits N(0, 2.5^2): top-p 0.9 keeps ~16k candidates (the global path), top-p 0.1
  // and top-k 50 a few (the one-block path); one batch mixes both paths.
  const int64_t V = 151936;
  PhiloxStream rng(5);
  Rows r;
  r.V = V;
  std::vector<float> base(static_cast<size_t>(V));
  for (float& v : base) v = rng.next_normal() * 2.5f;
  for (int64_t i = 0; i < 48; ++i) {
    const float ps[] = {0.9f, 0.999f, 0.1f, 1.0f};
    const int32_t ks[] = {0, 50, 0, 2000};
    add_row(r, base, i % 3 == 0 ? 0.7f : 1.0f, ks[i % 4], ps[(i / 4) % 4], 77 + i, i);
  }
  EXPECT_EQ(compare(r, 0.0f, "large vocabulary"), 0);
}

TEST(CudaFilteredSampling, FlatVocabularyTakesTheGlobalPath) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t V = 151936;
  PhiloxStream rng(9);
  Rows r;
  r.V = V;
  const std::vector<float> flat(static_cast<size_t>(V), 0.25f);
  std::vector<float> nearly(static_cast<size_t>(V));
  for (float& v : nearly) v = rng.next_normal() * 0.01f;
  std::vector<float> steps2(static_cast<size_t>(V));  // two plateaus (ties within each)
  for (int64_t j = 0; j < V; ++j) steps2[size_t(j)] = j % 5 == 0 ? 1.0f : 0.0f;
  for (int64_t s = 0; s < 4; ++s) {
    add_row(r, flat, 1.0f, 0, 0.9f, 3 + s, s);     // top-p keeps 90% of the ids, in id order
    add_row(r, flat, 1.0f, 0, 0.999f, 13 + s, s);  // nearly everything
    add_row(r, flat, 1.0f, int32_t(V - 1), 1.0f, 23 + s, s);  // top-k over all ties
    add_row(r, flat, 1.0f, 50, 1.0f, 33 + s, s);              // 50 of 151936 ties: the lowest ids
    add_row(r, nearly, 1.0f, 0, 0.9f, 43 + s, s);             // noisy flat: ~137k candidates sorted
    add_row(r, nearly, 0.8f, 100000, 0.999f, 53 + s, s);
    add_row(r, steps2, 1.0f, 0, 0.5f, 63 + s, s);
    add_row(r, steps2, 1.0f, 40000, 0.95f, 73 + s, s);
    add_row(r, flat, 1.0f, 4096, 1.0f, 83 + s, s);  // exactly one block's capacity of ties
    add_row(r, flat, 1.0f, 4097, 1.0f, 93 + s, s);  // one more: the global path
  }
  EXPECT_EQ(compare(r, 0.0f, "flat"), 0);
  EXPECT_EQ(compare(r, 0.5f, "flat, min_p"), 0);
}

TEST(CudaFilteredSampling, EngineWithTopKTopPMatchesCpuEngine) {
  GYRE_SKIP_WITHOUT_GPU();
  const std::string dir = test::source_path("tests/fixtures/models/qwen3_tiny");
  auto cpu_model = model::CausalLM::load(dir);
  auto gpu_model = model::CausalLM::load(dir, {.device = Device::cuda});
  EngineConfig cfg;
  cfg.page_size = 4;
  cfg.num_pages = 256;
  cfg.max_num_batched_tokens = 64;
  std::vector<GenerateRequest> reqs;
  const std::vector<int32_t> prompt = {1, 5, 9, 23, 42, 7, 3};
  for (int i = 0; i < 8; ++i) {
    GenerateRequest q;
    q.input_ids = prompt;
    q.sampling.temperature = 1.0f;
    q.sampling.max_new_tokens = 12;
    q.sampling.ignore_eos = true;
    q.sampling.seed = 500 + uint64_t(i);
    q.sampling.top_k = i % 4 == 0 ? 0 : (i % 4 == 1 ? 5 : (i % 4 == 2 ? 1 : 40));
    q.sampling.top_p = i % 2 == 0 ? 0.8f : (i % 3 == 0 ? 1.0f : 0.95f);
    q.return_logprob = true;
    reqs.push_back(q);
  }
  Engine cpu_engine(*cpu_model, nullptr, cfg);
  Engine gpu_engine(*gpu_model, nullptr, cfg);
  auto on_cpu = cpu_engine.generate(reqs);
  auto on_gpu = gpu_engine.generate(reqs);
  ASSERT_EQ(on_gpu.size(), on_cpu.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(on_gpu[i].error.empty()) << on_gpu[i].error;
    EXPECT_EQ(on_gpu[i].output_ids, on_cpu[i].output_ids) << "request " << i;
    for (size_t j = 0; j < on_cpu[i].output_logprobs.size() && j < on_gpu[i].output_logprobs.size();
         ++j)
      EXPECT_NEAR(on_gpu[i].output_logprobs[j], on_cpu[i].output_logprobs[j], 1e-4)
          << "request " << i << " token " << j;
  }
}

}  // namespace
}  // namespace gyre::infer
