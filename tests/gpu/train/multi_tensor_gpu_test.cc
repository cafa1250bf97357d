// Multi-tensor ops on CUDA (issue 7; backend/multi_tensor_ops.h, backend/cuda/multi_tensor.cu):
// one launch over many tensors gives bitwise the per-tensor CUDA ops' results, and matches the CPU
// reference (AdamW within 1e-6, sums within 1e-10 relative: only the f64 addition order differs).
// Odd sizes: empty tensors (also consecutive and last), single elements, tensors spanning several
// 16384-element chunks, and ~300 tensors for the chunk-owner search.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/train/optimizer.h"

namespace gyre::ops {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

std::vector<Shape> shapes() {
  std::vector<Shape> s = {{0},        {0}, {1},   {7}, {3, 5}, {16384}, {16385}, {3 * 16384 + 5},
                          {1000, 37}, {1}, {2, 0}};
  for (int i = 0; i < 290; ++i) s.push_back({int64_t(1 + (i * 977) % 5000)});
  s.push_back({0});
  return s;
}

std::vector<Tensor> rand_list(const std::vector<Shape>& s, uint64_t seed, float scale = 1.0f) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < s.size(); ++i) out.push_back(randn(s[i], seed + i, scale));
  return out;
}

std::vector<Tensor> to_dev(const std::vector<Tensor>& ts, Device d) {
  std::vector<Tensor> out;
  for (auto& t : ts) out.push_back(t.to(d).clone());
  return out;
}

template <typename T = Tensor>
std::vector<T*> ptrs(std::vector<Tensor>& ts) {
  std::vector<T*> out;
  for (auto& t : ts) out.push_back(&t);
  return out;
}

TEST(MultiTensorCuda, SumSquaresEqualsPerTensorBitwiseAndCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto s = shapes();
  auto host = rand_list(s, 1);
  auto dev = to_dev(host, Device::cuda);
  const std::vector<double> each = sum_squares_each(ptrs<const Tensor>(dev));
  ASSERT_EQ(each.size(), dev.size());
  double want = 0, cpu_total = 0;
  for (size_t i = 0; i < dev.size(); ++i) {
    const double d = sum_squares(dev[i]), c = sum_squares(host[i]);
    EXPECT_EQ(each[i], d) << i;
    EXPECT_NEAR(each[i], c, 1e-10 * c) << i;
    want += d;
    cpu_total += c;
  }
  const double many = sum_squares_many(ptrs<const Tensor>(dev));
  EXPECT_EQ(many, want);
  EXPECT_NEAR(many, cpu_total, 1e-12 * cpu_total);
}

TEST(MultiTensorCuda, ScaleEqualsPerTensorBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto s = shapes();
  auto a = to_dev(rand_list(s, 2), Device::cuda), b = to_dev(a, Device::cuda);
  scale_many(ptrs(a), 0.3f);
  for (auto& t : b) scale_(t, 0.3f);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(cpu(a[i]).to_vector(), cpu(b[i]).to_vector()) << i;
}

TEST(MultiTensorCuda, AdamWEqualsPerTensorBitwiseAndCpuWithin1e6) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto s = shapes();
  auto p_host = rand_list(s, 3, 0.1f);
  auto p = to_dev(p_host, Device::cuda), p_one = to_dev(p_host, Device::cuda);
  std::vector<Tensor> m, v, m_one, v_one, m_host, v_host;
  for (auto& sh : s) {
    for (auto* l : {&m, &v, &m_one, &v_one})
      l->push_back(Tensor::zeros(sh, DType::f32, Device::cuda));
    m_host.push_back(Tensor::zeros(sh));
    v_host.push_back(Tensor::zeros(sh));
  }
  AdamWParams hp;
  hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    auto g_host = rand_list(s, 1000 * step, 0.01f);
    auto g = to_dev(g_host, Device::cuda);
    adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp);
    for (size_t i = 0; i < s.size(); ++i) {
      adamw_step(p_one[i], g[i], m_one[i], v_one[i], hp);
      adamw_step(p_host[i], g_host[i], m_host[i], v_host[i], hp);
    }
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_EQ(cpu(p[i]).to_vector(), cpu(p_one[i]).to_vector()) << step << " p " << i;
      EXPECT_EQ(cpu(m[i]).to_vector(), cpu(m_one[i]).to_vector()) << step << " m " << i;
      EXPECT_EQ(cpu(v[i]).to_vector(), cpu(v_one[i]).to_vector()) << step << " v " << i;
      EXPECT_LE(gputest::rel_err(cpu(p[i]), p_host[i]), 1e-6) << step << " p " << i;
      EXPECT_LE(gputest::rel_err(cpu(m[i]), m_host[i]), 1e-6) << step << " m " << i;
      EXPECT_LE(gputest::rel_err(cpu(v[i]), v_host[i]), 1e-6) << step << " v " << i;
    }
  }
}

// AdamWParams::grad_scale folded into the multi-tensor update (float4 path on aligned tensors,
// the scalar loop on views 4 bytes off, with and without bf16 copies) is bitwise scale_many then
// the unscaled update, and leaves the gradients as they were.
TEST(MultiTensorCuda, AdamWGradScaleEqualsScaleManyFirstBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto s = shapes();
  auto views = [&](std::vector<Tensor> ts) {  // every other tensor: a view one element in
    for (size_t i = 1; i < ts.size(); i += 2) {
      const int64_t n = ts[i].numel();
      Tensor big = Tensor::zeros({n + 1}, DType::f32, Device::cuda);
      big.narrow(1, n).copy_from(ts[i].reshape({n}));
      ts[i] = big.narrow(1, n).reshape(ts[i].shape());
    }
    return ts;
  };
  for (bool with_bf16 : {false, true}) {
    auto p = views(to_dev(rand_list(s, 7, 0.1f), Device::cuda)), p_ref = to_dev(p, Device::cuda);
    std::vector<Tensor> m, v, m_ref, v_ref;
    for (auto& sh : s)
      for (auto* l : {&m, &v, &m_ref, &v_ref})
        l->push_back(Tensor::zeros(sh, DType::f32, Device::cuda));
    m = views(m), v = views(v);
    std::vector<Tensor> bf;
    std::vector<uint16_t*> bf_ptr;
    for (auto& sh : s) bf.push_back(Tensor::zeros(sh, DType::bf16, Device::cuda));
    for (auto& t : bf) bf_ptr.push_back(with_bf16 ? static_cast<uint16_t*>(t.raw()) : nullptr);
    AdamWParams hp;
    hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f;
    for (int64_t step = 1; step <= 2; ++step) {
      hp.step = step;
      auto g = views(to_dev(rand_list(s, 300 * step, 0.5f), Device::cuda));
      auto g_before = to_dev(g, Device::cuda), g_ref = to_dev(g, Device::cuda);
      scale_many(ptrs(g_ref), 0.37f);
      AdamWParams scaled = hp;
      scaled.grad_scale = 0.37f;
      adamw_step_many(
          ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), scaled,
          with_bf16 ? std::span<uint16_t* const>(bf_ptr) : std::span<uint16_t* const>());
      adamw_step_many(ptrs(p_ref), ptrs<const Tensor>(g_ref), ptrs(m_ref), ptrs(v_ref), hp);
      for (size_t i = 0; i < s.size(); ++i) {
        EXPECT_EQ(cpu(g[i]).to_vector(), cpu(g_before[i]).to_vector()) << step << " g " << i;
        EXPECT_EQ(cpu(p[i]).to_vector(), cpu(p_ref[i]).to_vector()) << step << " p " << i;
        EXPECT_EQ(cpu(m[i]).to_vector(), cpu(m_ref[i]).to_vector()) << step << " m " << i;
        EXPECT_EQ(cpu(v[i]).to_vector(), cpu(v_ref[i]).to_vector()) << step << " v " << i;
        if (with_bf16) {
          EXPECT_EQ(cpu(bf[i]).to_vector(), cpu(p_ref[i]).to(DType::bf16).to_vector())
              << step << " bf16 " << i;
        }
      }
    }
  }
}

TEST(MultiTensorCuda, DeviceMixIsAnError) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<Tensor> a = {Tensor::zeros({3}, DType::f32, Device::cuda), Tensor::zeros({3})};
  try {
    scale_many(ptrs(a), 2.0f);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("tensors[1] is on"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("one device"));
  }
}

// train::AdamW::step on GPU masters (multi-tensor path) against the former per-tensor step on the
// same GPU tensors (scale_ by the clip coefficient, then adamw_step): same norm, same weights,
// bitwise, over clipped and unclipped steps; the gradients are left unscaled.
TEST(MultiTensorCuda, AdamWStepEqualsPerTensorStepBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto s = shapes();
  auto named = [&](uint64_t seed, float scale) {
    train::NamedTensors out;
    auto ts = to_dev(rand_list(s, seed, scale), Device::cuda);
    for (size_t i = 0; i < ts.size(); ++i) out.emplace_back("t" + std::to_string(i), ts[i]);
    return out;
  };
  auto clone = [](const train::NamedTensors& ts) {
    train::NamedTensors out;
    for (auto& [n, t] : ts) out.emplace_back(n, t.clone());
    return out;
  };
  const train::AdamWConfig cfg{.lr = 1e-3, .weight_decay = 0.01, .clip_grad = 1.0};
  train::AdamW opt(cfg, {});
  train::NamedTensors p = named(5, 0.1f), p_ref = clone(p);
  std::vector<Tensor> m, v;
  for (auto& sh : s) {
    m.push_back(Tensor::zeros(sh, DType::f32, Device::cuda));
    v.push_back(Tensor::zeros(sh, DType::f32, Device::cuda));
  }
  for (int64_t step = 1; step <= 3; ++step) {
    train::NamedTensors g = named(50 * step, step == 1 ? 1.0f : 1e-4f), g_ref = clone(g),
                        g_before = clone(g);
    const auto [norm, lr] = opt.step(p, g);
    double sq = 0;
    for (auto& [n, t] : g_ref) sq += sum_squares(t);
    const double want = std::sqrt(sq);
    EXPECT_EQ(norm, want) << step;
    const double coeff = cfg.clip_grad / (want + 1e-6);
    if (coeff < 1.0)
      for (auto& [n, t] : g_ref) scale_(t, float(coeff));
    AdamWParams hp;
    hp.lr = float(lr), hp.beta1 = float(cfg.beta1), hp.beta2 = float(cfg.beta2);
    hp.eps = float(cfg.eps), hp.weight_decay = float(cfg.weight_decay), hp.step = step;
    for (size_t i = 0; i < s.size(); ++i)
      adamw_step(p_ref[i].second, g_ref[i].second, m[i], v[i], hp);
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_EQ(cpu(g[i].second).to_vector(), cpu(g_before[i].second).to_vector())
          << step << " g (the clip is folded into the update: left unscaled) " << i;
      EXPECT_EQ(cpu(p[i].second).to_vector(), cpu(p_ref[i].second).to_vector())
          << step << " p " << i;
    }
  }
}

}  // namespace
}  // namespace gyre::ops
