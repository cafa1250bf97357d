// DataParallelOptimizer: replicated all-reduce and ZeRO-1 steps equal train::AdamW on the summed
// gradient (one process, and 2 ranks under mpirun), shard layout, checkpoint round trip.
#include "gyre/dist/data_parallel.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "dist/mpi_launch.h"
#include "gyre/core/philox.h"
#include "gyre/dist/bootstrap.h"

namespace gyre::dist {
namespace {

using train::NamedTensors;

// Three tensors (odd total so ZeRO-1 pads) with values from a seed.
NamedTensors make_tensors(uint64_t seed, float scale) {
  NamedTensors ts{
      {"a", Tensor::zeros({7, 3})}, {"b", Tensor::zeros({6})}, {"c", Tensor::zeros({2, 2})}};
  uint64_t k = seed;
  for (auto& [n, t] : ts)
    for (int64_t i = 0; i < t.numel(); ++i) {
      k = k * 6364136223846793005ull + 1442695040888963407ull;
      t.f32()[i] = scale * (float((k >> 40) % 2001) / 1000.0f - 1.0f);
    }
  return ts;
}

NamedTensors clone(const NamedTensors& ts) {
  NamedTensors out;
  for (auto& [n, t] : ts) out.emplace_back(n, t.clone());
  return out;
}

double max_rel_diff(const NamedTensors& a, const NamedTensors& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double num = 0, den = 0;
    for (int64_t k = 0; k < a[i].second.numel(); ++k) {
      double x = a[i].second.f32()[k], y = b[i].second.f32()[k];
      num += (x - y) * (x - y), den += y * y;
    }
    worst = std::max(worst, std::sqrt(num / std::max(den, 1e-30)));
  }
  return worst;
}

train::AdamWConfig config(double clip) {
  train::AdamWConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  c.clip_grad = clip;
  return c;
}

TEST(ShardRange, CoversEveryItemOnce) {
  for (int64_t n : {0, 1, 7, 8, 9})
    for (int size : {1, 2, 3}) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        Range s = shard_range(n, r, size);
        EXPECT_EQ(s.begin, next);
        EXPECT_LE(s.size(), n / size + 1);
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
  EXPECT_THROW(shard_range(4, 2, 2), Error);
  EXPECT_THROW(parse_dp_mode("zero3"), Error);
  EXPECT_EQ(parse_dp_mode("zero1"), DpMode::zero1);
}

// One rank: both modes reproduce train::AdamW (clipping active in the second pair of steps).
TEST(DataParallelOptimizer, SingleRankMatchesAdamW) {
  for (DpMode mode : {DpMode::all_reduce, DpMode::zero1})
    for (double clip : {0.0, 0.5}) {
      SingleProcessComm comm;
      DataParallelOptimizer dp(comm, config(clip), {}, mode);
      train::AdamW ref(config(clip), {});
      NamedTensors p1 = make_tensors(1, 0.1f), p2 = clone(p1);
      for (int step = 0; step < 3; ++step) {
        NamedTensors g1 = make_tensors(10 + step, 1.0f), g2 = clone(g1);
        auto [n1, lr1] = dp.step(p1, g1);
        auto [n2, lr2] = ref.step(p2, g2);
        EXPECT_NEAR(n1, n2, 1e-9 * n2);
        EXPECT_EQ(lr1, lr2);
      }
      EXPECT_LE(max_rel_diff(p1, p2), 1e-7) << dp_mode_name(mode) << " clip " << clip;
      EXPECT_EQ(dp.iteration(), 3);
    }
}

TEST(DataParallelOptimizerParse, LayoutChangesAreRejected) {
  SingleProcessComm comm;
  DataParallelOptimizer dp(comm, config(0), {}, DpMode::zero1);
  NamedTensors p = make_tensors(1, 0.1f), g = make_tensors(2, 1.0f);
  dp.step(p, g);
  NamedTensors p2 = make_tensors(1, 0.1f), g2 = make_tensors(2, 1.0f);
  p2.pop_back(), g2.pop_back();
  EXPECT_THROW(dp.step(p2, g2), Error);
  NamedTensors g3 = make_tensors(2, 1.0f);
  g3[1].first = "renamed";
  EXPECT_THROW(dp.step(p, g3), Error);
  NamedTensors bad = make_tensors(3, 1.0f);
  bad[0].second.f32()[0] = NAN;
  try {
    dp.step(p, bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite global gradient norm"), std::string::npos);
  }
}

// The bf16-copies contract (train::AdamW's) on one host rank: host tensors have no copies, so an
// attached cache is only marked — stale at the start of every step (a step that throws never
// leaves an earlier fresh mark behind), fresh after a complete one — and the f32 results are
// bitwise those of an unattached optimizer. The device path (copies written in the unflatten):
// tests/gpu/rl/colocated_bf16_copies_gpu_test.cc.
TEST(DataParallelOptimizer, Bf16CopiesAreMarkedAsAdamWMarksThem) {
  for (DpMode mode : {DpMode::all_reduce, DpMode::zero1}) {
    SCOPED_TRACE(dp_mode_name(mode));
    SingleProcessComm comm;
    DataParallelOptimizer dp(comm, config(0.5), {}, mode), plain(comm, config(0.5), {}, mode);
    auto cache = std::make_shared<ops::Bf16WeightCache>();
    dp.set_bf16_copies(cache);
    NamedTensors p1 = make_tensors(1, 0.1f), p2 = clone(p1);
    for (int step = 0; step < 2; ++step) {
      NamedTensors g1 = make_tensors(10 + step, 1.0f), g2 = clone(g1);
      dp.step(p1, g1);
      plain.step(p2, g2);
      EXPECT_TRUE(cache->take_fresh()) << "step " << step;
      for (size_t i = 0; i < p1.size(); ++i)
        EXPECT_EQ(p1[i].second.to_vector(), p2[i].second.to_vector()) << p1[i].first;
    }
    cache->copies_written({});  // a mark from an earlier writer, then a step that fails
    NamedTensors bad = make_tensors(3, 1.0f);
    bad[0].second.f32()[0] = NAN;
    EXPECT_THROW(dp.step(p1, bad), Error);
    EXPECT_FALSE(cache->take_fresh());
    cache.reset();  // the engine gone: the expired pointer is ignored
    NamedTensors g3 = make_tensors(20, 1.0f);
    dp.step(p1, g3);
  }
}

// Worker: rank r's gradient is make_tensors(100 + step * 2 + r); the single-process reference
// steps on their sum. Both modes, clipping on.
TEST(DistWorker, DISABLED_DataParallelSteps) {
  auto world = init_distributed({.timeout_s = 60});
  const int r = world->rank();
  ASSERT_EQ(world->size(), 2);
  for (DpMode mode : {DpMode::all_reduce, DpMode::zero1}) {
    DataParallelOptimizer dp(*world, config(0.5), {}, mode);
    dp.keep_reduced_grad(true);
    train::AdamW ref(config(0.5), {});
    NamedTensors p = make_tensors(1, 0.1f), pref = clone(p);
    for (int step = 0; step < 3; ++step) {
      NamedTensors g = make_tensors(100 + step * 2 + r, 1.0f);
      NamedTensors g0 = make_tensors(100 + step * 2, 1.0f), g1 = make_tensors(101 + step * 2, 1.0f);
      for (size_t i = 0; i < g0.size(); ++i)
        for (int64_t k = 0; k < g0[i].second.numel(); ++k)
          g0[i].second.f32()[k] += g1[i].second.f32()[k];
      // The reduced gradient of this rank's share equals the summed one.
      auto [n, lr] = dp.step(p, g);
      Range own = dp.owned_range();
      std::vector<float> flat;
      for (auto& [name, t] : g0) flat.insert(flat.end(), t.f32(), t.f32() + t.numel());
      for (int64_t k = own.begin; k < own.end; ++k)
        ASSERT_NEAR(dp.reduced_grad()[size_t(k - own.begin)], flat[size_t(k)], 1e-6);
      auto [nref, lref] = ref.step(pref, g0);
      EXPECT_NEAR(n, nref, 1e-6 * nref);
      EXPECT_EQ(lr, lref);
    }
    EXPECT_LE(max_rel_diff(p, pref), 1e-6) << dp_mode_name(mode);
    // Replicas stay identical: rank 0's parameters reach rank 1 bit for bit.
    for (auto& [name, t] : p) {
      Tensor other = t.clone();
      world->broadcast(other, 0);
      EXPECT_EQ(std::memcmp(other.raw(), t.raw(), t.nbytes()), 0) << name;
    }
    if (mode == DpMode::zero1) {
      EXPECT_EQ(dp.owned_range().size(), r == 0 ? 16 : 15);  // 31 elements, shards of 16
      EXPECT_EQ(dp.state_bytes(), size_t(dp.owned_range().size()) * 8);
    }
  }
  std::printf("dp steps ok on rank %d\n", r);
}

TEST(DataParallelOptimizer, TwoRanksMatchSingleProcess) {
  auto m = test::run_mpi_worker("DistWorker.DISABLED_DataParallelSteps");
  ASSERT_EQ(m.r.exit_code, 0) << m.all();
  EXPECT_NE(m.r.out.find("dp steps ok on rank 1"), std::string::npos) << m.all();
}

TEST(DataParallelOptimizer, CheckpointRoundTrip) {
  SingleProcessComm comm;
  const std::string dir = test::temp_dir("zero1_ckpt");
  DataParallelOptimizer a(comm, config(0), {}, DpMode::zero1);
  NamedTensors pa = make_tensors(1, 0.1f), g = make_tensors(2, 1.0f);
  a.step(pa, g);
  a.save(dir);
  DataParallelOptimizer b(comm, config(0), {}, DpMode::zero1);
  b.load(dir);
  EXPECT_EQ(b.iteration(), 1);
  NamedTensors pb = clone(pa), ga = make_tensors(3, 1.0f), gb = clone(ga);
  a.step(pa, ga);
  b.step(pb, gb);
  EXPECT_EQ(max_rel_diff(pa, pb), 0.0);
  DataParallelOptimizer c(comm, config(0), {}, DpMode::all_reduce);
  EXPECT_THROW(c.load(dir), Error);  // other mode
}

}  // namespace
}  // namespace gyre::dist
