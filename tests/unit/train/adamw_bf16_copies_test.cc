// train::AdamW with the rollout engine's bf16 weight copies attached (issue 8, set_bf16_copies) on
// the CPU: the f32 results are bitwise those of an AdamW without them; every step marks the cache
// stale before its update and fresh after it when it covered every copy (CPU parameters have none,
// so a step covers them all); an expired cache is ignored.
#include <gtest/gtest.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "gyre/train/optimizer.h"

namespace gyre::train {
namespace {

NamedTensors make(uint64_t seed, float scale) {
  NamedTensors out;
  for (const auto& [name, shape] : std::vector<std::pair<std::string, Shape>>{
           {"embed", {50, 8}}, {"bias", {1}}, {"w", {8, 17}}}) {
    PhiloxStream r(seed++, 5);
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (float& x : v) x = r.next_normal() * scale;
    out.emplace_back(name, Tensor::from_vector(v, shape));
  }
  return out;
}

NamedTensors clone(const NamedTensors& ts) {
  NamedTensors out;
  for (auto& [n, t] : ts) out.emplace_back(n, t.clone());
  return out;
}

TEST(AdamWBf16Copies, SameStepsAndAFreshMarkPerStep) {
  AdamWConfig cfg;
  cfg.lr = 1e-2, cfg.weight_decay = 0.1;
  AdamW with(cfg, {}), without(cfg, {});
  auto cache = std::make_shared<ops::Bf16WeightCache>();
  with.set_bf16_copies(cache);
  NamedTensors a = make(1, 0.5f), b = clone(a);
  for (int step = 0; step < 3; ++step) {
    NamedTensors ga = make(100 + 10 * step, 0.1f), gb = clone(ga);
    EXPECT_EQ(with.step(a, ga), without.step(b, gb));
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << step << " " << a[i].first;
    EXPECT_TRUE(cache->take_fresh()) << "step " << step;
    EXPECT_FALSE(cache->take_fresh());
  }
  // A failed step (non-finite gradient) leaves the copies' mark alone: nothing was written.
  cache->copies_written({});
  NamedTensors bad = make(7, 0.1f);
  bad[1].second.f32()[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(with.step(a, bad), Error);
  EXPECT_TRUE(cache->take_fresh());
  // The engine gone: the optimizer steps as before.
  cache.reset();
  NamedTensors ga = make(500, 0.1f), gb = clone(ga);
  EXPECT_EQ(with.step(a, ga), without.step(b, gb));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector());
}

}  // namespace
}  // namespace gyre::train
