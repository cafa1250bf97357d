// ops::linear_token_logprobs_with_grad on CUDA under bf16 autocast (the one-pass head over token
// chunks, cuda::linear_token_logprobs_with_grad_autocast) against the CPU f32 reference on the
// bf16-rounded operands — the bounds the two-pass autocast head meets (logprob_chunk_cuda_test.cc)
// — and against the two-pass head on the GPU; a claimed deferred-zero dw; the token-chunk size.
// Skips without a visible GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

constexpr double kU = 1.0 / 256;  // bf16 unit roundoff 2^-8: dz is rounded to bf16 once

Tensor make_targets(int64_t T, int64_t V) {
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = t % 7 == 2 ? -1 : int32_t((t * 131 + 5) % V);
  if (T > 0) tg[0] = int32_t(V - 1);
  return Tensor::from_vector(tg, {T});
}

struct Result {
  Tensor logp, entropy, lse, dh, dw;
};

// The op under test (entropy requested when `want_entropy`; dw accumulated onto dw0 when defined).
Result one_pass(const Tensor& h, const Tensor& w, const Tensor& tg, float tau, const Tensor& dlogp,
                const Tensor& dent, const Tensor& dw0, bool want_entropy) {
  Result r;
  if (want_entropy) r.entropy = Tensor::empty({h.size(0)}, DType::f32, h.device());
  if (dw0.defined()) r.dw = dw0.clone();
  ops::linear_token_logprobs_with_grad(h, w, tg, tau, dlogp, dent, r.logp, r.entropy, r.lse, r.dh,
                                       r.dw);
  return r;
}

// The two-pass head: linear_token_logprobs, then its backward (default vocabulary chunk).
Result two_pass(const Tensor& h, const Tensor& w, const Tensor& tg, float tau, const Tensor& dlogp,
                const Tensor& dent, const Tensor& dw0) {
  Result r;
  r.entropy = Tensor::empty({h.size(0)}, DType::f32, h.device());
  ops::linear_token_logprobs(h, w, tg, tau, 0, r.logp, r.entropy, r.lse);
  if (dw0.defined()) r.dw = dw0.clone();
  ops::linear_token_logprobs_backward(h, w, tg, tau, 0, r.lse, r.entropy, dlogp, dent, r.dh, r.dw);
  return r;
}

// dw - dw0: the accumulated part (host).
Tensor added(const Tensor& dw, const Tensor& dw0) {
  Tensor d = cpu(dw).clone(), neg = cpu(dw0).clone();
  ops::scale_(neg, -1.0f);
  ops::add_(d, neg);
  return d;
}

struct Case {
  int64_t T, H, V;
  float tau;
  bool dentropy, dw, cache;
};

// T = 1 and 7 (one token chunk), 129 and 300 (token chunks of 64 rows: 64 + 64 + 1 and four full
// ones + 44); H 64 / 60 (odd rows of the bf16 operands); V 3001 / 500; temperature 0.7 / 1;
// dentropy, dw and a Bf16WeightCache (the op reads the cached copy, else rounds w itself) on / off.
const Case kCases[] = {
    {1, 64, 3001, 0.7f, true, true, false},   {7, 60, 3001, 1.0f, false, true, false},
    {129, 64, 3001, 0.7f, true, true, false}, {129, 64, 500, 1.0f, false, false, true},
    {300, 60, 3001, 0.7f, true, true, true},  {300, 64, 500, 1.0f, true, true, false},
};

std::string name(const Case& c) {
  return std::to_string(c.T) + "x" + std::to_string(c.H) + " V " + std::to_string(c.V) + " tau " +
         std::to_string(c.tau) + (c.dentropy ? " dentropy" : "") + (c.dw ? " dw" : "") +
         (c.cache ? " cache" : "");
}

TEST(LogprobWithGradCuda, TokenChunksOfAnEighthOfTheLogitsAtMost) {
  // f32 logits + bf16 dz per chunk row: 6 bytes x V, within 1/8 of T x V x 4 bytes.
  for (int64_t T : {int64_t(1), int64_t(63), int64_t(767), int64_t(768), int64_t(16384)}) {
    const int64_t rows = cuda::logprob_grad_rows_per_chunk(T);
    EXPECT_GE(rows, 1) << T;
    EXPECT_LE(rows, T) << T;
    if (T >= 768) {
      EXPECT_LE(rows * 6 * 8, T * 4) << T;
      EXPECT_EQ(rows % 64, 0) << T;
    }
  }
  EXPECT_EQ(cuda::logprob_grad_rows_per_chunk(16384), 1344);
}

// Against the CPU f32 composition on the bf16-rounded h and w: the forward within f32 summation
// order (1e-5 relative), dh and dw within the bf16 rounding of dz (2^-8 relative).
TEST(LogprobWithGradCuda, MatchesCpuOnRoundedOperands) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& k : kCases) {
    SCOPED_TRACE(name(k));
    const Tensor h = randn({k.T, k.H}, 41), w = randn({k.V, k.H}, 42, 0.3f);
    const Tensor tg = make_targets(k.T, k.V), dlogp = randn({k.T}, 43);
    const Tensor dent = k.dentropy ? randn({k.T}, 44, 0.3f) : Tensor();
    const Tensor dw0 = k.dw ? randn({k.V, k.H}, 45, 0.01f) : Tensor();
    const Result ref = one_pass(round_bf16(h), round_bf16(w), tg, k.tau, dlogp, dent, dw0, true);
    Result got;
    {
      ops::Bf16Autocast autocast;
      ops::Bf16WeightCache cache;
      ops::UseBf16WeightCache use(k.cache ? &cache : nullptr);
      got = one_pass(gpu(h), gpu(w), gpu(tg), k.tau, gpu(dlogp), k.dentropy ? gpu(dent) : Tensor(),
                     k.dw ? gpu(dw0) : Tensor(), true);
    }
    EXPECT_LE(rel_err(cpu(got.logp), ref.logp), 1e-5);
    EXPECT_LE(rel_err(cpu(got.entropy), ref.entropy), 1e-5);
    EXPECT_LE(rel_err(cpu(got.lse), ref.lse), 1e-5);
    EXPECT_LE(rel_err(cpu(got.dh), ref.dh), kU);
    EXPECT_EQ(got.dw.defined(), k.dw);
    if (k.dw) {
      EXPECT_LE(rel_err(added(got.dw, dw0), added(ref.dw, dw0)), kU);
    }
    const std::vector<float> lp = cpu(got.logp).to_vector();
    for (size_t i = 0; i < lp.size(); ++i) {
      if (tg.i32()[i] < 0) {
        EXPECT_EQ(lp[i], 0.0f) << "position " << i;
      }
    }
  }
}

// Against the two-pass head on the GPU (what the trainer's PPO path runs): the same statistics of
// the same f32 logits merged over one chunk instead of several, and dz rounded from them.
TEST(LogprobWithGradCuda, AgreesWithTheTwoPassHead) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& k : kCases) {
    SCOPED_TRACE(name(k));
    const Tensor h = gpu(randn({k.T, k.H}, 51)), w = gpu(randn({k.V, k.H}, 52, 0.3f));
    const Tensor tg = gpu(make_targets(k.T, k.V)), dlogp = gpu(randn({k.T}, 53));
    const Tensor dent = k.dentropy ? gpu(randn({k.T}, 54, 0.3f)) : Tensor();
    const Tensor dw0 = k.dw ? gpu(randn({k.V, k.H}, 55, 0.01f)) : Tensor();
    ops::Bf16Autocast autocast;
    const Result want = two_pass(h, w, tg, k.tau, dlogp, dent, dw0);
    // Entropy not requested: the backward's entropy lives in the op's scratch.
    const Result got = one_pass(h, w, tg, k.tau, dlogp, dent, dw0, false);
    EXPECT_FALSE(got.entropy.defined());
    EXPECT_LE(rel_err(cpu(got.logp), cpu(want.logp)), 1e-5);
    EXPECT_LE(rel_err(cpu(got.lse), cpu(want.lse)), 1e-5);
    EXPECT_LE(rel_err(cpu(got.dh), cpu(want.dh)), kU);
    if (k.dw) {
      EXPECT_LE(rel_err(added(got.dw, dw0), added(want.dw, dw0)), kU);
    }
  }
}

// A dw holding deferred zeros (Gradients::zero) is claimed: the first token chunk's dW GEMM
// overwrites it, the later ones add — the gradient of an eagerly zeroed dw, and nothing pending.
TEST(LogprobWithGradCuda, OverwritesAClaimedDeferredZeroGradient) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 300, H = 64, V = 1000;
  const Tensor h = gpu(randn({T, H}, 61)), w = gpu(randn({V, H}, 62, 0.1f));
  const Tensor tg = gpu(make_targets(T, V)), dlogp = gpu(randn({T}, 63));
  ops::Bf16Autocast autocast;
  const Result eager = one_pass(h, w, tg, 1.0f, dlogp, Tensor(), gpu(Tensor::zeros({V, H})), false);
  Tensor logp, entropy, lse, dh, dw = gpu(Tensor::full({V, H}, 8.0f));
  dw.zero_deferred();
  ops::linear_token_logprobs_with_grad(h, w, tg, 1.0f, dlogp, Tensor(), logp, entropy, lse, dh, dw);
  EXPECT_FALSE(dw.storage()->zero_pending());
  // beta 0 on the first chunk instead of beta 1 onto zeros: the same values (x + 0 = x).
  const std::vector<float> a = cpu(dw).to_vector(), b = cpu(eager.dw).to_vector();
  int64_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  EXPECT_EQ(differ, 0);
}

TEST(LogprobWithGradCuda, BadShapesAreErrorsNamingTheArgument) {
  GYRE_SKIP_WITHOUT_GPU();
  const Tensor h = gpu(randn({10, 8}, 71)), w = gpu(randn({50, 8}, 72));
  const Tensor tg = gpu(make_targets(10, 50));
  ops::Bf16Autocast autocast;
  Tensor logp, entropy, lse, dh, dw;
  try {
    ops::linear_token_logprobs_with_grad(h, w, tg, 1.0f, gpu(randn({9}, 73)), Tensor(), logp,
                                         entropy, lse, dh, dw);
    FAIL() << "a 9-element dlogp for 10 rows was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dlogp"), std::string::npos) << e.what();
  }
  Tensor bad_dw = gpu(Tensor::zeros({49, 8}));
  EXPECT_THROW(ops::linear_token_logprobs_with_grad(h, w, tg, 1.0f, gpu(randn({10}, 74)), Tensor(),
                                                    logp, entropy, lse, dh, bad_dw),
               Error);
}

}  // namespace
}  // namespace gyre
