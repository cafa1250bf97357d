// train::AdamW on the multi-tensor ops (issue 7): a step equals the per-tensor reference (norm by
// Σ ops::sum_squares, Megatron clipping by ops::scale_, ops::adamw_step per tensor) bitwise on the
// CPU, the non-finite check names the tensor, the sum_squares hook still sets the clipping norm,
// and a checkpoint resumes to the same next step.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "gyre/train/optimizer.h"
#include "test_util.h"

namespace gyre::train {
namespace {

Tensor randn(const Shape& s, uint64_t seed, float scale) {
  PhiloxStream r(seed, 5);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal() * scale;
  return Tensor::from_vector(v, s);
}

const std::vector<std::pair<std::string, Shape>> kParams = {
    {"embed", {50, 8}}, {"empty", {0}}, {"bias", {1}}, {"w", {8, 17}}, {"norm", {8}}};

NamedTensors make(uint64_t seed, float scale) {
  NamedTensors out;
  for (size_t i = 0; i < kParams.size(); ++i)
    out.emplace_back(kParams[i].first, randn(kParams[i].second, seed + i, scale));
  return out;
}

NamedTensors clone(const NamedTensors& ts) {
  NamedTensors out;
  for (auto& [n, t] : ts) out.emplace_back(n, t.clone());
  return out;
}

// The pre-multi-tensor AdamW::step, per tensor.
struct Reference {
  AdamWConfig cfg;
  int64_t it = 0;
  std::vector<Tensor> m, v;
  std::pair<double, double> step(NamedTensors& params, NamedTensors& grads) {
    double sq = 0;
    for (auto& [n, g] : grads) sq += ops::sum_squares(g);
    const double norm = std::sqrt(sq);
    const double coeff = cfg.clip_grad / (norm + 1e-6);
    if (cfg.clip_grad > 0 && coeff < 1.0)
      for (auto& [n, g] : grads) ops::scale_(g, float(coeff));
    ++it;
    const double lr = LrSchedule{}.lr_at(it, cfg.lr, cfg.min_lr);
    ops::AdamWParams p;
    p.lr = float(lr), p.beta1 = float(cfg.beta1), p.beta2 = float(cfg.beta2);
    p.eps = float(cfg.eps), p.weight_decay = float(cfg.weight_decay), p.step = it;
    for (size_t i = 0; i < params.size(); ++i) {
      if (m.size() <= i) {
        m.push_back(Tensor::zeros(params[i].second.shape()));
        v.push_back(Tensor::zeros(params[i].second.shape()));
      }
      ops::adamw_step(params[i].second, grads[i].second, m[i], v[i], p);
    }
    return {norm, lr};
  }
};

void expect_bitwise(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
}

TEST(AdamWMultiTensor, StepEqualsPerTensorReferenceBitwise) {
  const AdamWConfig cfg{.lr = 1e-3, .weight_decay = 0.01, .clip_grad = 1.0};
  AdamW opt(cfg, {});
  Reference ref{.cfg = cfg, .it = 0, .m = {}, .v = {}};
  NamedTensors p = make(1, 0.1f), p_ref = clone(p);
  for (int step = 0; step < 3; ++step) {
    // Large gradients at step 0 (clipped), small ones after (not clipped).
    NamedTensors g = make(100 + 10 * step, step == 0 ? 1.0f : 1e-3f), g_ref = clone(g),
                 g_before = clone(g);
    auto got = opt.step(p, g);
    auto want = ref.step(p_ref, g_ref);
    EXPECT_EQ(got.first, want.first) << step;
    EXPECT_EQ(got.second, want.second) << step;
    expect_bitwise(g, g_before);  // the clip is folded into the update: gradients unscaled
    expect_bitwise(p, p_ref);
  }
  EXPECT_GT(AdamW::grad_norm(make(100, 1.0f)), 1.0);  // step 0 did clip
}

TEST(AdamWMultiTensor, NonFiniteGradientNamesTheTensorAndSkipsTheStep) {
  AdamW opt({.lr = 1e-3}, {});
  NamedTensors p = make(1, 0.1f), before = clone(p), g = make(2, 0.1f);
  g[3].second.f32()[5] = std::numeric_limits<float>::quiet_NaN();
  try {
    opt.step(p, g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("non-finite gradient in 'w'"));
  }
  expect_bitwise(p, before);
  EXPECT_EQ(opt.iteration(), 0);
}

TEST(AdamWMultiTensor, SumSquaresHookSetsTheClippingNorm) {
  const AdamWConfig cfg{.lr = 1e-3, .clip_grad = 1.0};
  AdamW opt(cfg, {});
  int calls = 0;
  opt.set_grad_sum_squares([&](const NamedTensors&) {
    ++calls;
    return 16.0;  // norm 4: coeff = 1 / (4 + 1e-6)
  });
  NamedTensors p = make(1, 0.1f), g = make(2, 1e-3f), p_ref = clone(p), g_ref = clone(g);
  EXPECT_EQ(opt.step(p, g).first, 4.0);
  EXPECT_EQ(calls, 1);
  // Clipped by the hook's norm (not the local one), then the unclipped reference step.
  for (auto& [n, t] : g_ref) ops::scale_(t, float(1.0 / (4.0 + 1e-6)));
  Reference ref{.cfg = {.lr = 1e-3, .clip_grad = 0}, .it = 0, .m = {}, .v = {}};
  ref.step(p_ref, g_ref);
  expect_bitwise(p, p_ref);
}

TEST(AdamWMultiTensor, CheckpointResumesToTheSameStep) {
  const AdamWConfig cfg{.lr = 1e-3, .weight_decay = 0.01};
  AdamW opt(cfg, {});
  NamedTensors p = make(1, 0.1f);
  NamedTensors g = make(7, 0.01f);
  opt.step(p, g);
  const std::string dir = test::temp_dir("gyre_adamw_multi");
  opt.save(dir);
  AdamW resumed(cfg, {});
  resumed.load(dir);
  NamedTensors p2 = clone(p), g1 = make(8, 0.01f), g2 = clone(g1);
  EXPECT_EQ(opt.step(p, g1), resumed.step(p2, g2));
  expect_bitwise(p, p2);
}

TEST(AdamWMultiTensor, StateOfAnotherShapeIsAnErrorNamingTheParameter) {
  AdamW opt({.lr = 1e-3}, {});
  NamedTensors p = make(1, 0.1f), g = make(2, 0.01f);
  opt.step(p, g);
  NamedTensors p2 = {{"w", randn({8, 16}, 3, 0.1f)}}, g2 = {{"w", randn({8, 16}, 4, 0.1f)}};
  try {
    opt.step(p2, g2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("optimizer state for 'w' has shape [8, 17]"));
  }
}

// The moments are looked up by parameter name: a step over another list (a subset, another order)
// updates each parameter with its own m / v, as a reference keyed by name does — also when step()
// reuses the slots it resolved for the previous list.
TEST(AdamWMultiTensor, MomentsFollowTheNamesWhenTheListChanges) {
  const AdamWConfig cfg{.lr = 1e-3, .weight_decay = 0.01, .clip_grad = 0};
  AdamW opt(cfg, {});
  std::map<std::string, std::pair<Tensor, Tensor>> mv;
  int64_t it = 0;
  auto reference = [&](NamedTensors& params, NamedTensors& grads) {
    ++it;
    ops::AdamWParams q;
    q.lr = float(cfg.lr), q.beta1 = float(cfg.beta1), q.beta2 = float(cfg.beta2);
    q.eps = float(cfg.eps), q.weight_decay = float(cfg.weight_decay), q.step = it;
    for (size_t i = 0; i < params.size(); ++i) {
      auto& [m, v] = mv[params[i].first];
      if (!m.defined()) {
        m = Tensor::zeros(params[i].second.shape());
        v = Tensor::zeros(params[i].second.shape());
      }
      ops::adamw_step(params[i].second, grads[i].second, m, v, q);
    }
  };
  const NamedTensors all = make(1, 0.1f);
  NamedTensors p_ref = clone(all);
  NamedTensors p = clone(all);
  auto subset = [](NamedTensors& from, std::vector<size_t> order) {
    NamedTensors out;  // shares storage with `from`: the updates land there
    for (size_t i : order) out.push_back(from[i]);
    return out;
  };
  const std::vector<std::vector<size_t>> lists = {
      {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, {3, 0}, {4, 3, 2, 1, 0}, {0, 1, 2, 3, 4}};
  for (size_t s = 0; s < lists.size(); ++s) {
    NamedTensors ps = subset(p, lists[s]), ps_ref = subset(p_ref, lists[s]);
    NamedTensors g_all = make(50 + 10 * s, 0.01f);
    NamedTensors g = subset(g_all, lists[s]);
    NamedTensors g_ref = clone(g);
    opt.step(ps, g);
    reference(ps_ref, g_ref);
    expect_bitwise(p, p_ref);
  }
}

// load() replaces the moments: a stepped optimizer that loads a checkpoint continues exactly as a
// fresh one that loads it.
TEST(AdamWMultiTensor, LoadIntoASteppedOptimizerReplacesItsMoments) {
  const AdamWConfig cfg{.lr = 1e-3};
  AdamW first(cfg, {});
  NamedTensors p = make(1, 0.1f), g = make(7, 0.01f);
  first.step(p, g);
  const std::string dir = test::temp_dir("gyre_adamw_reload");
  first.save(dir);
  AdamW stepped(cfg, {}), fresh(cfg, {});
  NamedTensors q = make(2, 0.1f), gq = make(9, 0.02f);
  stepped.step(q, gq);  // other moments, resolved into its slots
  stepped.load(dir);
  fresh.load(dir);
  NamedTensors p1 = clone(p), p2 = clone(p), g1 = make(8, 0.01f), g2 = clone(g1);
  EXPECT_EQ(stepped.step(p1, g1), fresh.step(p2, g2));
  expect_bitwise(p1, p2);
}

}  // namespace
}  // namespace gyre::train
