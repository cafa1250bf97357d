// Programmatic dependent launch (backend/cuda/pdl.cuh) in the decode kernels: a long chain of
// GEMVs where every kernel reads what the previous one wrote (the residual stream of a decode
// step: folded-RMSNorm q/k/v group, gate/up SiLU·mul, down and o residuals, the plain GEMV) gives
// bitwise the results of the same chain with a host synchronisation after every launch (where no
// kernel can overlap its predecessor). A kernel that read x before its pdl_wait would see the
// previous layer's output half written or not at all: each layer writes a fresh buffer filled
// with NaN beforehand, so a stale read shows up as NaN or a mismatch. Run several times, since a
// race need not show every time. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pdl.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre {
namespace {

using gputest::gpu;
using gputest::randn;

// One decoder-like layer's weights, bf16 on the device: qkv group [3 x H/2.. columns] over H,
// gate/up [I, H], down [H, I], o [H, Hq] (o's input is the group's first member).
struct LayerWeights {
  int64_t H, I, Q;
  Tensor norm_w;  // f32 [H]
  std::unique_ptr<cuda::DeviceBuffer> wq, wk, wg, wu, wd, wo;
  Tensor wo_f32;  // wo's f32 source, for the chain that rewrites wo right before its GEMV
};

std::unique_ptr<cuda::DeviceBuffer> bf16_weights(int64_t n, int64_t k, uint64_t seed) {
  Tensor w = gpu(randn({n, k}, seed, 0.5f / float(k) * 8.0f));
  auto b = std::make_unique<cuda::DeviceBuffer>(size_t(n * k) * 2);
  cuda::f32_to_bf16(w.f32(), b->as<uint16_t>(), n * k);
  cuda::sync();  // w is freed at the end of this scope
  return b;
}

struct Chain {
  int64_t H = 896, I = 4864, Q = 896, M = 1;
  std::vector<LayerWeights> layers;
  Tensor x0;
  // Every intermediate output its own buffer (NaN-filled before each run).
  std::vector<Tensor> q, k, act, h1, h2;
  std::unique_ptr<cuda::DeviceBuffer> wl;  // "lm_head" [V, H]
  int64_t V = 5000;
  Tensor logits;

  explicit Chain(int n_layers, int64_t rows) : M(rows) {
    for (int l = 0; l < n_layers; ++l) {
      LayerWeights w{H, I, Q, gpu(randn({H}, 100 + l, 0.1f)), {}, {}, {}, {}, {}, {}, {}};
      std::vector<float> nw = w.norm_w.to(Device::cpu).to_vector();
      for (float& v : nw) v += 1.0f;
      w.norm_w = gpu(Tensor::from_vector(nw, {H}));
      w.wq = bf16_weights(Q, H, 200 + l);
      w.wk = bf16_weights(128, H, 300 + l);
      w.wg = bf16_weights(I, H, 400 + l);
      w.wu = bf16_weights(I, H, 500 + l);
      w.wd = bf16_weights(H, I, 600 + l);
      w.wo = bf16_weights(H, Q, 700 + l);
      w.wo_f32 = gpu(randn({H, Q}, 700 + l, 0.5f / float(Q) * 8.0f));
      layers.push_back(std::move(w));
    }
    wl = bf16_weights(V, H, 999);
    x0 = gpu(randn({M, H}, 7, 1.0f));
  }

  void reset_outputs() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto fresh = [&](int64_t n, int64_t c) {
      return gpu(Tensor::from_vector(std::vector<float>(size_t(n * c), nan), {n, c}));
    };
    q.clear(), k.clear(), act.clear(), h1.clear(), h2.clear();
    for (size_t l = 0; l < layers.size(); ++l) {
      q.push_back(fresh(M, Q));
      k.push_back(fresh(M, 128));
      act.push_back(fresh(M, I));
      h1.push_back(fresh(M, H));
      h2.push_back(fresh(M, H));
    }
    logits = fresh(M, V);
    cuda::sync();
  }

  // The decode step's order of dependent launches; sync_each puts the host between them.
  // rewrite_wo: each layer's o_proj weights are first overwritten with NaN, then converted again
  // from f32 right before the GEMV that reads them early (the weight cache's pattern: conversion,
  // pdl_barrier(), PDL GEMV).
  std::vector<float> run(bool sync_each, bool rewrite_wo = false) {
    reset_outputs();
    auto step = [&] {
      if (sync_each) cuda::sync();
    };
    const float* x = x0.f32();
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerWeights& w = layers[l];
      cuda::RmsPrologue nrm;
      nrm.w = w.norm_w.f32();
      nrm.eps = 1e-6;
      cuda::GemvGroup g;
      g.count = 2;
      g.w[0] = w.wq->as<uint16_t>(), g.y[0] = q[l].f32(), g.n[0] = Q;
      g.w[1] = w.wk->as<uint16_t>(), g.y[1] = k[l].f32(), g.n[1] = 128;
      cuda::linear_gemv_bf16_group_rms(x, nrm, g, M, H);
      step();
      if (rewrite_wo) {
        const int64_t n = H * Q;
        EXPECT_EQ(cudaMemsetAsync(w.wo->as<uint16_t>(), 0xff, size_t(n) * 2, cuda::stream()),
                  cudaSuccess);
        cuda::f32_to_bf16(w.wo_f32.f32(), w.wo->as<uint16_t>(), n);
        cuda::pdl_barrier();
        EXPECT_TRUE(cuda::pdl_barrier_pending());
      }
      // o_proj with the residual: h1 = x + q · wo^T
      cuda::linear_gemv_bf16_residual(q[l].f32(), w.wo->as<uint16_t>(), nullptr, x, M, H, Q,
                                      h1[l].f32());
      EXPECT_FALSE(cuda::pdl_barrier_pending()) << "the GEMV's launch takes the barrier";
      step();
      cuda::linear_gemv_bf16_silu_mul_rms(h1[l].f32(), nrm, w.wg->as<uint16_t>(), nullptr,
                                          w.wu->as<uint16_t>(), nullptr, M, I, H, act[l].f32());
      step();
      // down_proj (K = I >= 4096: the split-K variant) with the residual: h2 = h1 + act · wd^T
      cuda::linear_gemv_bf16_residual(act[l].f32(), w.wd->as<uint16_t>(), nullptr, h1[l].f32(), M,
                                      H, I, h2[l].f32());
      step();
      x = h2[l].f32();
    }
    cuda::linear_gemv_bf16(x, wl->as<uint16_t>(), nullptr, M, V, H, logits.f32());
    cuda::sync();
    std::vector<float> out = logits.to(Device::cpu).to_vector();
    for (auto& t : h2) {
      std::vector<float> v = t.to(Device::cpu).to_vector();
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }
};

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, int run) {
  ASSERT_EQ(got.size(), want.size());
  size_t nan = 0, diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != got[i]) ++nan;
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) ++diff;
  }
  EXPECT_EQ(nan, 0u) << "run " << run << ": NaN outputs (a kernel read its input before it was "
                     << "written)";
  EXPECT_EQ(diff, 0u) << "run " << run << ": " << diff << " of " << got.size()
                      << " values differ from the synchronised chain";
}

TEST(PdlChainCuda, DecodeGemvChainIsBitwiseTheSynchronisedChain) {
  GYRE_SKIP_WITHOUT_GPU();
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  const char* env = std::getenv("GYRE_PDL");
  const bool disabled = env && std::strcmp(env, "0") == 0;
  if (major >= 9 && !disabled) {
    EXPECT_TRUE(cuda::pdl_enabled()) << "sm_" << major << "x has programmatic dependent launch";
  }
  for (int64_t M : {1, 3}) {
    Chain c(12, M);
    const std::vector<float> want = c.run(/*sync_each=*/true);
    for (float v : want) ASSERT_TRUE(v == v) << "the synchronised chain must be finite";
    for (int r = 0; r < 8; ++r) expect_same_bits(c.run(/*sync_each=*/false), want, r);
  }
}

// Weights rewritten right before the PDL GEMV that loads them before its pdl_wait: pdl_barrier()
// makes that GEMV an ordinary launch, so it never sees the NaN fill or a half-done conversion.
TEST(PdlChainCuda, WeightsWrittenRightBeforeAGemvAreVisibleToIt) {
  GYRE_SKIP_WITHOUT_GPU();
  EXPECT_FALSE(cuda::pdl_barrier_pending());
  Chain c(12, 1);
  const std::vector<float> want = c.run(/*sync_each=*/true);
  for (float v : want) ASSERT_TRUE(v == v) << "the synchronised chain must be finite";
  for (int r = 0; r < 8; ++r)
    expect_same_bits(c.run(/*sync_each=*/false, /*rewrite_wo=*/true), want, r);
  EXPECT_FALSE(cuda::pdl_barrier_pending());
}

}  // namespace
}  // namespace gyre
