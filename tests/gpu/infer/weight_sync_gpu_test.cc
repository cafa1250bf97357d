// Colocated weight sync on the GPU (issue 8): Engine::update_weights over weights changed in place
// keeps the captured decode graphs and the bf16 weight copies at their addresses, re-casting the
// copies in place — the graphs then decode with the NEW weights, token for token and log-prob for
// log-prob what a fresh engine over the updated model gives, and the copies equal f32_to_bf16 of
// the new values bitwise. An update that replaces the parameters' storage (or throws) still drops
// both, so no stale copy is ever used. The model computes in bf16 (autocast), so the copies are
// what the decode linears read. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/infer/weight_copies_check.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/core/dtype.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"

namespace gyre::infer {
namespace {

using gputest::bf16_model;
using gputest::expect_copies_match;
EngineConfig config() { return gputest::copies_engine_config(); }

// Greedy requests of different lengths: the decode batch shrinks 6 -> 1 through buckets 8..1.
std::vector<GenerateRequest> requests() {
  std::vector<GenerateRequest> reqs;
  const auto prompts = model::testmodel::make_seqs();
  for (size_t i = 0; i < 6; ++i) {
    GenerateRequest r;
    r.input_ids = prompts[i % prompts.size()];
    r.input_ids.push_back(int32_t(3 + i));
    r.sampling.temperature = 0.0f;
    r.sampling.max_new_tokens = int32_t(6 + 5 * i);
    r.sampling.ignore_eos = true;
    r.return_logprob = true;
    reqs.push_back(r);
  }
  return reqs;
}

// New values in place for every parameter (what a train step does): p += 0.03 * noise.
void perturb_in_place(model::CausalLM& m, uint64_t seed) {
  for (auto& p : m.parameters()) {
    std::vector<float> v = p.tensor.to(Device::cpu).to_vector();
    const std::vector<float> n = gputest::randn(p.tensor.shape(), seed++, 0.03f).to_vector();
    for (size_t i = 0; i < v.size(); ++i) v[i] += n[i];
    p.tensor.copy_from(Tensor::from_vector(v, p.tensor.shape()));
  }
}

// `got` decodes exactly like `want` (same tokens, same log-probs bit for bit).
void expect_identical(const std::vector<GenerateResult>& got,
                      const std::vector<GenerateResult>& want, const char* when) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].error.empty()) << got[i].error;
    EXPECT_EQ(got[i].output_ids, want[i].output_ids) << when << ", request " << i;
    EXPECT_EQ(got[i].output_logprobs, want[i].output_logprobs) << when << ", request " << i;
  }
}

TEST(WeightSyncGpu, InPlaceUpdateKeepsGraphsAndDecodesTheNewWeights) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const auto reqs = requests();
  Engine engine(*m, nullptr, config());
  const auto before = engine.generate(reqs);
  const int64_t graphs = engine.num_cuda_graphs();
  ASSERT_GT(graphs, 2) << "the decode steps should have captured several buckets";
  const size_t entries = engine.weight_cache().entries();
  ASSERT_GT(entries, 0u) << "bf16 decode should have cached the linears' weights";
  std::vector<const uint16_t*> addr;
  for (auto& p : m->parameters()) addr.push_back(engine.weight_cache().copy_to_write(p.tensor));

  EXPECT_EQ(engine.update_weights([&] { perturb_in_place(*m, 1000); }), 1);
  EXPECT_EQ(engine.num_cuda_graphs(), graphs) << "an in-place update must keep the graphs";
  EXPECT_EQ(engine.weight_cache().entries(), entries);
  const auto counts = engine.weight_sync_counts();
  EXPECT_EQ(counts.refreshed, 1);
  EXPECT_EQ(counts.dropped, 0);
  EXPECT_EQ(counts.fresh, 0);
  size_t i = 0;
  for (auto& p : m->parameters())
    EXPECT_EQ(engine.weight_cache().copy_to_write(p.tensor), addr[i++]) << p.name << " moved";
  EXPECT_EQ(expect_copies_match(engine, *m, "after the refresh"), entries);

  const auto after = engine.generate(reqs);  // replays the graphs captured before the update
  EXPECT_EQ(engine.num_cuda_graphs(), graphs) << "nothing should have been re-captured";
  EXPECT_EQ(engine.weight_cache().entries(), entries);
  Engine fresh(*m, nullptr, config());
  const auto want = fresh.generate(reqs);
  expect_identical(after, want, "graph replay after the in-place update vs a fresh engine");
  size_t changed = 0;
  for (size_t k = 0; k < reqs.size(); ++k)
    changed += before[k].output_logprobs != after[k].output_logprobs;
  EXPECT_EQ(changed, reqs.size()) << "the new weights should change every request's log-probs";

  // A second in-place update: the same again (the graphs and copies keep serving).
  engine.update_weights([&] { perturb_in_place(*m, 2000); });
  EXPECT_EQ(engine.num_cuda_graphs(), graphs);
  EXPECT_EQ(engine.weight_sync_counts().refreshed, 2);
  const auto after2 = engine.generate(reqs);
  Engine fresh2(*m, nullptr, config());
  expect_identical(after2, fresh2.generate(reqs), "after the second update");
}

TEST(WeightSyncGpu, ReplacedParametersDropCopiesAndGraphs) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const auto reqs = requests();
  Engine engine(*m, nullptr, config());
  engine.generate(reqs);
  ASSERT_GT(engine.num_cuda_graphs(), 0);
  ASSERT_GT(engine.weight_cache().entries(), 0u);
  // New storage for every parameter, with new values (a reload that does not write in place).
  engine.update_weights([&] {
    m->to(Device::cpu);
    perturb_in_place(*m, 3000);
    m->to(Device::cuda);
  });
  EXPECT_EQ(engine.num_cuda_graphs(), 0);
  EXPECT_EQ(engine.weight_cache().entries(), 0u);
  EXPECT_EQ(engine.weight_sync_counts().dropped, 1);
  EXPECT_EQ(engine.weight_sync_counts().refreshed, 0);
  const auto after = engine.generate(reqs);
  EXPECT_GT(engine.num_cuda_graphs(), 0);
  Engine fresh(*m, nullptr, config());
  expect_identical(after, fresh.generate(reqs), "after replacing the parameters");
  expect_copies_match(engine, *m, "after re-caching");
}

TEST(WeightSyncGpu, AnApplyThatThrowsDropsCopiesAndGraphs) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const auto reqs = requests();
  Engine engine(*m, nullptr, config());
  engine.generate(reqs);
  ASSERT_GT(engine.num_cuda_graphs(), 0);
  EXPECT_THROW(engine.update_weights([&] {
    perturb_in_place(*m, 4000);  // half-applied weights: values changed, then a failure
    throw std::runtime_error("reload failed");
  }),
               std::runtime_error);
  EXPECT_EQ(engine.num_cuda_graphs(), 0);
  EXPECT_EQ(engine.weight_cache().entries(), 0u);
  EXPECT_EQ(engine.weight_sync_counts().dropped, 1);
  // A failed update does not move the weight version, so the radix cache keeps its KV (of the old
  // weights); drop it to compare the forward alone.
  EXPECT_TRUE(engine.flush_cache());
  const auto after = engine.generate(reqs);
  Engine fresh(*m, nullptr, config());
  expect_identical(after, fresh.generate(reqs), "after a failed update");
}

TEST(WeightSyncGpu, ClearingTheCacheOutsideASyncRecapturesTheGraphs) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const auto reqs = requests();
  Engine engine(*m, nullptr, config());
  const auto before = engine.generate(reqs);
  ASSERT_GT(engine.num_cuda_graphs(), 0);
  // The graphs baked in the copies' addresses: a cleared cache must not be replayed through them
  // (DecodeGraphs compares the cache's generation); the next steps re-cast and re-capture.
  engine.weight_cache().clear();
  engine.update_weights([&] { perturb_in_place(*m, 5000); });  // in place, nothing cached
  EXPECT_EQ(engine.weight_sync_counts().refreshed, 1);
  const auto after = engine.generate(reqs);
  EXPECT_GT(engine.weight_cache().entries(), 0u);
  Engine fresh(*m, nullptr, config());
  expect_identical(after, fresh.generate(reqs), "after clearing the cache outside a sync");
}

}  // namespace
}  // namespace gyre::infer
