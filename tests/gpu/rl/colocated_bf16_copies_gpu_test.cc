// gyre train's colocated weight sync as a pure version bump (issue 8): share_bf16_weight_copies
// hands the rollout engine's bf16 weight copies to the actor's AdamW, whose update kernel writes
// bf16(new value) into them — bitwise f32_to_bf16 of its f32 result — and marks the cache fresh;
// Engine::update_weights then neither re-casts nor drops anything, and the kept graphs decode
// exactly like a fresh engine over the updated model. The mark is trusted only when fresh: once
// per step (a sync without a new step re-casts) and only when the step covered every copy. Under
// data parallelism dist::DataParallelOptimizer takes the copies instead (ZeRO-1: its final
// unflatten writes f32 parameters and bf16 copies in one launch; all_reduce: its inner AdamW), on a
// one-rank NCCL communicator here: the copies equal the cast of the new parameters bitwise, the
// f32 results equal an unattached DP optimizer's, and the sync counts as fresh. Skips without a
// GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/infer/weight_copies_check.h"
#include "gpu/model/small_model.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/dist/comm.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/loop/train_models.h"
#include "gyre/rl/loop/train_rollout.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {
namespace {

using gputest::expect_copies_match;
std::shared_ptr<model::CausalLM> bf16_model() { return gputest::bf16_model(); }
infer::EngineConfig config() { return gputest::copies_engine_config(); }

std::vector<infer::GenerateRequest> requests() {
  std::vector<infer::GenerateRequest> reqs;
  const auto prompts = model::testmodel::make_seqs();
  for (size_t i = 0; i < 5; ++i) {
    infer::GenerateRequest r;
    r.input_ids = prompts[i % prompts.size()];
    r.input_ids.push_back(int32_t(5 + i));
    r.sampling.temperature = 0.0f;
    r.sampling.max_new_tokens = int32_t(5 + 4 * i);
    r.sampling.ignore_eos = true;
    r.return_logprob = true;
    reqs.push_back(r);
  }
  return reqs;
}

void expect_identical(const std::vector<infer::GenerateResult>& got,
                      const std::vector<infer::GenerateResult>& want, const std::string& when) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].error.empty()) << got[i].error;
    EXPECT_EQ(got[i].output_ids, want[i].output_ids) << when << ", request " << i;
    EXPECT_EQ(got[i].output_logprobs, want[i].output_logprobs) << when << ", request " << i;
  }
}

// After a sync: the engine rolls out without re-capturing (still `graphs` graphs), exactly as a
// fresh engine over the same model, and every request's log-probs moved from `before`.
void expect_rollout_moved_like_fresh_engine(infer::Engine& engine, model::CausalLM& m,
                                            const std::vector<infer::GenerateRequest>& reqs,
                                            const std::vector<infer::GenerateResult>& before,
                                            int64_t graphs, const std::string& when) {
  const auto after = engine.generate(reqs);
  EXPECT_EQ(engine.num_cuda_graphs(), graphs) << when;
  infer::Engine fresh(m, nullptr, config());
  expect_identical(after, fresh.generate(reqs), when);
  size_t changed = 0;
  for (size_t i = 0; i < reqs.size() && i < before.size() && i < after.size(); ++i)
    changed += before[i].output_logprobs != after[i].output_logprobs;
  EXPECT_EQ(changed, reqs.size()) << when << ": the sync did not change every rollout";
}

// Random gradients for `params` (a train step's update without a backward).
train::NamedTensors gradients(const train::NamedTensors& params, uint64_t seed) {
  train::NamedTensors g;
  for (auto& [name, t] : params)
    g.emplace_back(name, gputest::randn(t.shape(), seed++, 0.05f).to(Device::cuda));
  return g;
}

train::NamedTensors all_parameters(model::CausalLM& m) {
  train::NamedTensors out;
  for (auto& p : m.parameters()) out.emplace_back(p.name, p.tensor);
  return out;
}

TrainModels models_of(std::shared_ptr<model::CausalLM> m) {
  TrainModels tm;
  tm.actor = std::move(m);
  tm.adamw.lr = 1e-2;  // large steps: the outputs must visibly move
  tm.adamw.clip_grad = 0;
  tm.optimizer = std::make_unique<train::AdamW>(tm.adamw, tm.schedule);
  return tm;
}

TEST(ColocatedBf16CopiesGpu, AdamWWritesTheCopiesAndTheSyncIsAVersionBump) {
  GYRE_SKIP_WITHOUT_GPU();
  TrainModels tm = models_of(bf16_model());
  model::CausalLM& m = *tm.actor;
  auto engine = std::make_shared<infer::Engine>(m, nullptr, config());
  TrainRollout rollout;
  rollout.engine = engine;
  ASSERT_TRUE(share_bf16_weight_copies(rollout, tm));
  const auto reqs = requests();
  const auto before = engine->generate(reqs);  // rollout: caches the copies, captures graphs
  const int64_t graphs = engine->num_cuda_graphs();
  const size_t entries = engine->weight_cache().entries();
  ASSERT_GT(graphs, 1);
  ASSERT_GT(entries, 0u);

  // Train step: AdamW writes the copies in its update, before any sync.
  train::NamedTensors params = all_parameters(m);
  train::NamedTensors grads = gradients(params, 100);
  tm.optimizer->step(params, grads);
  EXPECT_EQ(expect_copies_match(*engine, m, "after the AdamW step"), entries);
  EXPECT_EQ(engine->update_weights([] {}), 1);
  auto c = engine->weight_sync_counts();
  EXPECT_EQ(c.fresh, 1);
  EXPECT_EQ(c.refreshed, 0);
  EXPECT_EQ(c.dropped, 0);
  EXPECT_EQ(engine->num_cuda_graphs(), graphs);
  expect_rollout_moved_like_fresh_engine(*engine, m, reqs, before, graphs,
                                         "after a fresh-marked sync");

  // The mark is consumed by the sync: the next sync (no new step) re-casts in place.
  engine->update_weights([] {});
  c = engine->weight_sync_counts();
  EXPECT_EQ(c.fresh, 1);
  EXPECT_EQ(c.refreshed, 1);

  // A step that leaves a cached parameter out does not cover every copy: not fresh. (Here the
  // left-out parameter did not change, so the re-cast is only a precaution.)
  train::NamedTensors some;
  bool left_out = false;
  for (auto& [name, t] : params) {
    if (!left_out && engine->weight_cache().copy_to_write(t)) {
      left_out = true;
      continue;
    }
    some.emplace_back(name, t);
  }
  ASSERT_TRUE(left_out);
  train::NamedTensors some_grads = gradients(some, 200);
  tm.optimizer->step(some, some_grads);
  engine->update_weights([] {});
  c = engine->weight_sync_counts();
  EXPECT_EQ(c.fresh, 1);
  EXPECT_EQ(c.refreshed, 2);
  expect_copies_match(*engine, m, "after a partial step");
  const auto after2 = engine->generate(reqs);
  infer::Engine fresh2(m, nullptr, config());
  expect_identical(after2, fresh2.generate(reqs), "after a partial step");

  // The engine gone, the optimizer steps without copies (its pointer expired).
  rollout.engine.reset();
  engine.reset();
  train::NamedTensors g3 = gradients(params, 300);
  tm.optimizer->step(params, g3);
}

// A one-rank NCCL communicator: the data-parallel optimizer's device path (bucketed
// reduce-scatter / all-reduce and all-gather on NCCL's stream, finish_started) with no peer.
std::unique_ptr<dist::Comm> one_rank_nccl() {
  return dist::nccl_comm_init(dist::nccl_unique_id(), 1, 0, 0, 60.0, "dp");
}

TEST(ColocatedBf16CopiesGpu, DataParallelOptimizerWritesTheCopiesAndTheSyncIsAVersionBump) {
  GYRE_SKIP_WITHOUT_GPU();
  if (!dist::nccl_available()) GTEST_SKIP() << "built without NCCL";
  const auto reqs = requests();
  for (const dist::DpMode mode : {dist::DpMode::zero1, dist::DpMode::all_reduce}) {
    SCOPED_TRACE(dist::dp_mode_name(mode));
    std::unique_ptr<dist::Comm> comm = one_rank_nccl();
    TrainModels tm = models_of(bf16_model());
    // Small buckets: several of them, so the all-gather and the unflatten cross bucket bounds.
    constexpr int64_t kBucket = 20000;
    tm.dp_optimizer =
        std::make_unique<dist::DataParallelOptimizer>(*comm, tm.adamw, tm.schedule, mode, kBucket);
    model::CausalLM& m = *tm.actor;
    // The same model stepped by a DP optimizer without copies: the f32 results must not change.
    std::unique_ptr<model::CausalLM> twin = gputest::bf16_model();
    dist::DataParallelOptimizer plain(*comm, tm.adamw, tm.schedule, mode, kBucket);
    auto engine = std::make_shared<infer::Engine>(m, nullptr, config());
    TrainRollout rollout;
    rollout.engine = engine;
    ASSERT_TRUE(share_bf16_weight_copies(rollout, tm));
    const auto before = engine->generate(reqs);  // caches the copies, captures graphs
    const int64_t graphs = engine->num_cuda_graphs();
    const size_t entries = engine->weight_cache().entries();
    ASSERT_GT(graphs, 1);
    ASSERT_GT(entries, 0u);

    train::NamedTensors params = all_parameters(m), twin_params = all_parameters(*twin);
    for (int step = 0; step < 2; ++step) {
      train::NamedTensors grads = gradients(params, 400 + 100 * step);
      train::NamedTensors twin_grads = gradients(twin_params, 400 + 100 * step);
      tm.dp_optimizer->step(params, grads);
      plain.step(twin_params, twin_grads);
      if (step == 0) {
        EXPECT_GT(tm.dp_optimizer->bucket_params().size(), 1u) << "one bucket only";
      }
      for (size_t i = 0; i < params.size(); ++i)
        ASSERT_EQ(params[i].second.to_vector(), twin_params[i].second.to_vector())
            << "step " << step << ": f32 " << params[i].first << " differs with copies attached";
      EXPECT_EQ(expect_copies_match(*engine, m, "after the DP step"), entries);
      EXPECT_EQ(engine->update_weights([] {}), step + 1);
      const auto c = engine->weight_sync_counts();
      EXPECT_EQ(c.fresh, step + 1);
      EXPECT_EQ(c.refreshed, 0);
      EXPECT_EQ(c.dropped, 0);
      EXPECT_EQ(engine->num_cuda_graphs(), graphs);
    }
    expect_rollout_moved_like_fresh_engine(*engine, m, reqs, before, graphs,
                                           "after fresh-marked DP syncs");

    // The mark is consumed by the sync: a sync without a new step re-casts in place.
    engine->update_weights([] {});
    EXPECT_EQ(engine->weight_sync_counts().refreshed, 1);

    // A good step (fresh mark), then one that fails (non-finite gradient) before any sync: the
    // failed step drops the mark first, so the next sync re-casts.
    train::NamedTensors good = gradients(params, 800);
    tm.dp_optimizer->step(params, good);
    train::NamedTensors bad = gradients(params, 900);
    bad[0].second.fill(std::numeric_limits<float>::quiet_NaN());
    EXPECT_THROW(tm.dp_optimizer->step(params, bad), Error);
    engine->update_weights([] {});
    EXPECT_EQ(engine->weight_sync_counts().fresh, 2);
    EXPECT_EQ(engine->weight_sync_counts().refreshed, 2);
    expect_copies_match(*engine, m, "after a failed DP step");

    // The engine gone, the optimizer steps without copies (its pointer expired).
    rollout.engine.reset();
    engine.reset();
    train::NamedTensors g3 = gradients(params, 300);
    tm.dp_optimizer->step(params, g3);
  }
}

TEST(ColocatedBf16CopiesGpu, NothingToShareWithoutAGpuEngine) {
  GYRE_SKIP_WITHOUT_GPU();
  TrainModels tm = models_of(bf16_model());
  TrainRollout remote;  // remote engines: no colocated engine
  EXPECT_FALSE(share_bf16_weight_copies(remote, tm));
  // A data-parallel rank without an engine attaches nothing.
  dist::SingleProcessComm comm;
  tm.dp_optimizer = std::make_unique<dist::DataParallelOptimizer>(comm, tm.adamw, tm.schedule);
  EXPECT_FALSE(share_bf16_weight_copies(remote, tm));
  std::shared_ptr<model::CausalLM> host =
      model::CausalLM::random_init(model::testmodel::small_config(), 11, 0.08f);
  TrainModels cpu = models_of(host);
  TrainRollout local;
  local.engine = std::make_shared<infer::Engine>(*host, nullptr, config());
  EXPECT_FALSE(share_bf16_weight_copies(local, cpu));
}

}  // namespace
}  // namespace gyre::rl
