// ops::Bf16Autocast on the CUDA backend: linear and attention (forward and backward) over f32
// tensors must equal the CPU f32 reference run on the bf16-rounded operands — that is exactly what
// autocast computes (operands rounded to bf16, f32 accumulate) — so the linear bounds are f32
// bounds (1e-5 relative). Attention adds the flash kernel's own roundings (P before P·V, the
// output, dQ/dK/dV) with the bounds of bf16_cuda_test.cc. Outside a scope, and for head dims the
// flash kernels do not cover, the ops stay on the exact f32 path. A linear into a bf16 y (the
// autocast MLP's gate/up) is the f32 result rounded once to nearest even: bitwise f32_to_bf16 of
// the f32 y on the GEMV, exact on integer operands, one bf16 rounding of the CPU op past 8 rows.
// Skips without a visible GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

TEST(CudaAutocast, ScopeNestsAndRestores) {
  EXPECT_FALSE(ops::bf16_autocast());
  {
    ops::Bf16Autocast on;
    EXPECT_TRUE(ops::bf16_autocast());
    {
      ops::Bf16Autocast off(false);
      EXPECT_FALSE(ops::bf16_autocast());
    }
    EXPECT_TRUE(ops::bf16_autocast());
  }
  EXPECT_FALSE(ops::bf16_autocast());
}

TEST(CudaAutocast, LinearForwardBackwardEqualF32OnRoundedOperands) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 131, N = 77, K = 259;  // odd sizes
  Tensor x = randn({M, K}, 1), w = randn({N, K}, 2), b = randn({N}, 3), dy = randn({M, N}, 4);
  // Reference: the CPU f32 op on the operands autocast rounds (x, w, dy); the bias and the bias
  // gradient stay f32.
  Tensor xr = round_bf16(x), wr = round_bf16(w), dyr = round_bf16(dy);
  Tensor y, dx = Tensor::zeros({M, K}), dw = Tensor::zeros({N, K}), db = Tensor::zeros({N}), none;
  ops::linear(xr, wr, b, y);
  ops::linear_backward(dyr, xr, wr, dx, dw, none);
  ops::linear_backward(dy, xr, wr, none, none, db);

  Tensor gx = gpu(x), gw = gpu(w), gb = gpu(b), gdy = gpu(dy), gy, gdx = gpu(Tensor::zeros({M, K}));
  Tensor gdw = gpu(Tensor::zeros({N, K})), gdb = gpu(Tensor::zeros({N}));
  {
    ops::Bf16Autocast autocast;
    ops::linear(gx, gw, gb, gy);
    ops::linear_backward(gdy, gx, gw, gdx, gdw, gdb);
  }
  EXPECT_LE(rel_err(cpu(gy), y), 1e-5);
  EXPECT_LE(rel_err(cpu(gdx), dx), 1e-5);
  EXPECT_LE(rel_err(cpu(gdw), dw), 1e-5);
  EXPECT_LE(rel_err(cpu(gdb), db), 1e-5);
  // ... and it really is the bf16 path: the unrounded f32 result differs by ~2^-9 relative.
  Tensor y32;
  ops::linear(x, w, b, y32);
  EXPECT_GT(rel_err(cpu(gy), y32), 1e-4);
  EXPECT_LE(rel_err(cpu(gy), y32), 1e-2);

  // Accumulating dx and dw (micro-batches) adds on top in f32.
  {
    ops::Bf16Autocast autocast;
    ops::linear_backward(gdy, gx, gw, gdx, gdw, gdb, /*accumulate_dx=*/true);
  }
  Tensor dx2 = dx.clone();
  ops::scale_(dx2, 2.0f);
  Tensor dw2 = dw.clone();
  ops::scale_(dw2, 2.0f);
  EXPECT_LE(rel_err(cpu(gdx), dx2), 1e-5);
  EXPECT_LE(rel_err(cpu(gdw), dw2), 1e-5);
}

// The engine's decode linears (a Bf16WeightCache installed): batches of up to 8 rows take the GEMV
// kernel (gemv_bf16.cu), larger ones and unsupported layouts (K % 8 != 0, a misaligned x) the
// GEMM; every case equals the CPU f32 op on the rounded operands.
TEST(CudaAutocast, CachedWeightLinearSmallBatchesEqualF32OnRoundedOperands) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t K : {264, 259, 8, 896}) {
    const int64_t N = K == 896 ? 4864 : 77;
    Tensor w = randn({N, K}, 20 + K), gw = gpu(w);  // one weight per K: the cache keys on it
    for (int64_t M : {1, 2, 3, 5, 8, 9}) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("M " + std::to_string(M) + " N " + std::to_string(N) + " K " +
                     std::to_string(K) + (bias ? " bias" : ""));
        Tensor x = randn({M, K}, 10 + M), b = randn({N}, 30);
        Tensor y, none;
        ops::linear(round_bf16(x), round_bf16(w), bias ? b : none, y);
        Tensor gy;
        {
          ops::Bf16Autocast autocast;
          ops::UseBf16WeightCache use(&cache);
          ops::linear(gpu(x), gw, bias ? gpu(b) : none, gy);
        }
        EXPECT_LE(rel_err(cpu(gy), y), 1e-5);
      }
    }
  }
  // A row view that starts 4 bytes into its buffer: not 16-byte aligned, so the GEMM path.
  const int64_t M = 2, K = 264, N = 33;
  Tensor flat = randn({M * K + 1}, 40), w = randn({N, K}, 41);
  Tensor x = flat.narrow(1, M * K).reshape({M, K});
  Tensor y, none;
  ops::linear(round_bf16(x.clone()), round_bf16(w), none, y);
  Tensor gflat = gpu(flat), gw = gpu(w), gy;
  {
    ops::Bf16Autocast autocast;
    ops::UseBf16WeightCache use(&cache);
    ops::linear(gflat.narrow(1, M * K).reshape({M, K}), gw, none, gy);
  }
  EXPECT_LE(rel_err(cpu(gy), y), 1e-5);
}

TEST(CudaAutocast, LinearEmptyInnerDimensionIsTheBias) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::zeros({5, 0}), w = Tensor::zeros({3, 0}), b = randn({3}, 9);
  Tensor gy;
  ops::Bf16Autocast autocast;
  ops::linear(gpu(x), gpu(w), gpu(b), gy);
  std::vector<float> y = cpu(gy).to_vector(), bv = b.to_vector();
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(y[size_t(r * 3 + c)], bv[size_t(c)]);
}

// ---- linear into a bf16 y (the autocast MLP's gate/up; ops::swiglu_gate_up_dtype)

Tensor bf16_gpu(int64_t M, int64_t N) { return Tensor::empty({M, N}, DType::bf16, Device::cuda); }

std::vector<uint16_t> bits_of(const Tensor& t) {
  const Tensor h = cpu(t);
  return std::vector<uint16_t>(h.data<uint16_t>(), h.data<uint16_t>() + h.numel());
}

// Up to 8 rows where the GEMV applies (K % 8 == 0; K = 4104: split-K), with the engine's weight
// cache and without one (the weight rounded per call): a bf16 y is exactly the f32 y rounded by
// f32_to_bf16 — the GEMV's f32 columns, then one round-to-nearest-even conversion — which is also
// what the fused gate/up GEMV computes in registers (fused_swiglu_cuda_test.cc).
TEST(CudaAutocast, LinearIntoBf16AtDecodeRowsIsTheF32LinearRounded) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t K : {264, 896, 4104}) {
    const int64_t N = K == 896 ? 4863 : 77;
    Tensor gw = gpu(randn({N, K}, 50 + K, 0.05f)), gb = gpu(randn({N}, 51)), none;
    for (bool cached : {true, false}) {
      for (int64_t M = 1; M <= 8; ++M) {
        for (bool bias : {true, false}) {
          SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) +
                       (bias ? " bias" : "") + (cached ? " weight cache" : ""));
          Tensor gx = gpu(randn({M, K}, 52 + M, 3.0f)), y32, yb = bf16_gpu(M, N);
          {
            ops::Bf16Autocast autocast;
            ops::UseBf16WeightCache use(cached ? &cache : nullptr);
            ops::linear(gx, gw, bias ? gb : none, y32);
            ops::linear(gx, gw, bias ? gb : none, yb);
          }
          Tensor want = bf16_gpu(M, N);
          ops::copy(y32, want);  // f32_to_bf16 on the device
          EXPECT_TRUE(bits_of(yb) == bits_of(want));
        }
      }
    }
  }
}

// Past 8 rows (the cuBLASLt GEMM writing bf16, or with a bias the f32 GEMM then f32_to_bf16), and
// at any row count where the GEMV does not apply (K % 8 != 0): every element within one bf16
// rounding of the CPU f32 op on the rounded operands — |got - ref| <= 2^-8 (1 + 2^-8) |ref| plus
// the f32 reordering noise (1e-5 of the rms) — with and without a weight cache; Qwen2.5-0.5B's
// gate/up shape and odd ones.
TEST(CudaAutocast, LinearIntoBf16PastEightRowsIsOneBf16RoundingOfTheCpuOp) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  struct Case {
    int64_t K, N;
  };
  for (const Case& cs : {Case{896, 4864}, Case{259, 77}, Case{264, 33}}) {
    const int64_t K = cs.K, N = cs.N;
    Tensor w = randn({N, K}, 60 + K, 0.05f), b = randn({N}, 61), none;
    Tensor gw = gpu(w), gb = gpu(b);
    for (int64_t M : {3, 9, 64, 300}) {
      if (M <= 8 && K % 8 == 0) continue;  // the GEMV: the test above
      for (bool cached : {true, false}) {
        for (bool bias : {true, false}) {
          SCOPED_TRACE("K " + std::to_string(K) + " N " + std::to_string(N) + " M " +
                       std::to_string(M) + (bias ? " bias" : "") + (cached ? " weight cache" : ""));
          const Tensor x = randn({M, K}, 62 + M, 3.0f);
          Tensor yb = bf16_gpu(M, N);
          {
            ops::Bf16Autocast autocast;
            ops::UseBf16WeightCache use(cached ? &cache : nullptr);
            ops::linear(gpu(x), gw, bias ? gb : none, yb);
          }
          Tensor ref;
          ops::linear(round_bf16(x), round_bf16(w), bias ? b : none, ref);
          const std::vector<float> got = cpu(yb).to_vector(), r = ref.to_vector();
          double ss = 0;
          for (float v : r) ss += double(v) * v;
          const double rms = std::sqrt(ss / double(r.size()));
          // bf16 keeps 8 significant bits: round to nearest moves a value by at most half a unit in
          // the last place, 2^-8 of it (the unit roundoff; a bound of 2^-9 fails ~1/4 of elements).
          const double rel = std::ldexp(1.0, -8) * (1.0 + 1.0 / 256);
          size_t bad = 0;
          for (size_t i = 0; i < r.size(); ++i)
            bad += !(std::fabs(double(got[i]) - r[i]) <= rel * std::fabs(r[i]) + 1e-5 * rms);
          EXPECT_EQ(bad, 0u) << "of " << r.size();
        }
      }
    }
  }
}

// Integer operands make every f32 sum exact whatever the order (|sums| < 2^24), so the bf16 y
// must be the CPU's round-to-nearest-even of the exact value bit for bit — on the GEMV (M <= 8),
// the bf16-output GEMM and the biased GEMM + f32_to_bf16 alike. Values past 256 have bf16 spacings
// of 2 and more: ties (an odd integer between two even ones) come up often, and any truncation,
// round-half-up or double rounding (split-K partials in bf16) would show.
TEST(CudaAutocast, LinearIntoBf16RoundsTheExactSumToNearestEven) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto ints = gputest::small_ints;
  ops::Bf16WeightCache cache;
  const int64_t K = 64, N = 77;
  const Tensor w = ints({N, K}, 70, 16.0f), b = ints({N}, 71, 1000.0f);
  const Tensor gw = gpu(w), gb = gpu(b), none;
  for (int64_t M : {1, 5, 8, 9, 300}) {
    for (bool cached : {true, false}) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("M " + std::to_string(M) + (bias ? " bias" : "") +
                     (cached ? " weight cache" : ""));
        const Tensor x = ints({M, K}, 72 + M, 16.0f);
        Tensor yb = bf16_gpu(M, N), ref;
        {
          ops::Bf16Autocast autocast;
          ops::UseBf16WeightCache use(cached ? &cache : nullptr);
          ops::linear(gpu(x), gw, bias ? gb : none, yb);
        }
        ops::linear(x, w, bias ? b : none, ref);  // exact: integers, |sums| < 2^24
        const Tensor want = ref.to(DType::bf16);  // f32_to_bf16: round to nearest even
        EXPECT_TRUE(bits_of(yb) == std::vector<uint16_t>(want.data<uint16_t>(),
                                                         want.data<uint16_t>() + want.numel()));
      }
    }
  }
}

// A bf16 y needs autocast (the f32 path writes f32): a clear error, nothing written. K = 0 under
// autocast: the bias rows, rounded.
TEST(CudaAutocast, LinearIntoBf16NeedsAutocast) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor gx = gpu(randn({9, 16}, 80)), gw = gpu(randn({5, 16}, 81)), yb = bf16_gpu(9, 5), none;
  try {
    ops::linear(gx, gw, none, yb);
    ADD_FAILURE() << "a bf16 y accepted without autocast";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("Bf16Autocast"), std::string::npos) << e.what();
  }
  Tensor x0 = gpu(Tensor::zeros({5, 0})), w0 = gpu(Tensor::zeros({3, 0}));
  const Tensor b = randn({3}, 82);
  Tensor y0 = bf16_gpu(5, 3);
  {
    ops::Bf16Autocast autocast;
    ops::linear(x0, w0, gpu(b), y0);
  }
  const std::vector<float> y = cpu(y0).to_vector(), bv = b.to_vector();
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t c = 0; c < 3; ++c)
      EXPECT_EQ(y[size_t(r * 3 + c)], bf16_to_f32(f32_to_bf16(bv[size_t(c)])));
}

TEST(CudaAutocast, AttentionForwardBackwardUseFlashBf16) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t D : {64, 128}) {
    const std::vector<int32_t> cu_v = {0, 0, 1, 131, 388, 452};  // an empty and a 1-token sequence
    const int64_t T = cu_v.back(), Hq = 4, Hkv = 2, B = int64_t(cu_v.size()) - 1;
    Tensor cu = Tensor::from_vector(cu_v, {B + 1});
    Tensor q = randn({T, Hq, D}, 1), k = randn({T, Hkv, D}, 2), v = randn({T, Hkv, D}, 3);
    Tensor dout = randn({T, Hq, D}, 4);
    const float scale = 1.0f / std::sqrt(float(D));
    Tensor o, lse, dq, dk, dv;
    Tensor qr = round_bf16(q), kr = round_bf16(k), vr = round_bf16(v), dor = round_bf16(dout);
    ops::attention_varlen(qr, kr, vr, cu, scale, o, lse);
    ops::attention_varlen_backward(dor, qr, kr, vr, o, lse, cu, scale, dq, dk, dv);

    Tensor gq = gpu(q), gk = gpu(k), gv = gpu(v), gcu = gpu(cu), go, glse, gdq, gdk, gdv;
    {
      ops::Bf16Autocast autocast;
      ops::attention_varlen(gq, gk, gv, gcu, scale, go, glse);
      ops::attention_varlen_backward(gpu(dout), gq, gk, gv, go, glse, gcu, scale, gdq, gdk, gdv);
    }
    EXPECT_EQ(go.dtype(), DType::f32);
    EXPECT_LE(rel_err(cpu(go), o), 1e-2) << D;
    EXPECT_LE(rel_err(cpu(glse), lse), 1e-5) << D;
    EXPECT_LE(rel_err(cpu(gdq), dq), 2e-2) << D;
    EXPECT_LE(rel_err(cpu(gdk), dk), 2e-2) << D;
    EXPECT_LE(rel_err(cpu(gdv), dv), 2e-2) << D;
    // The output went through bf16: every value is exactly representable in bf16.
    std::vector<float> ov = cpu(go).to_vector();
    size_t inexact = 0;
    for (float x : ov) inexact += bf16_to_f32(f32_to_bf16(x)) != x;
    EXPECT_EQ(inexact, 0u) << D;
  }
}

TEST(CudaAutocast, AttentionOtherHeadDimsStayExactF32) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t D = 32, Hq = 2, Hkv = 1;  // no flash kernel for D = 32: the f32 kernel runs
  const std::vector<int32_t> cu_v = {0, 17, 50};
  const int64_t T = cu_v.back();
  Tensor cu = Tensor::from_vector(cu_v, {3});
  Tensor q = randn({T, Hq, D}, 5), k = randn({T, Hkv, D}, 6), v = randn({T, Hkv, D}, 7);
  Tensor o, lse, go, glse;
  ops::attention_varlen(q, k, v, cu, 0.17f, o, lse);
  ops::Bf16Autocast autocast;
  ops::attention_varlen(gpu(q), gpu(k), gpu(v), gpu(cu), 0.17f, go, glse);
  EXPECT_LE(rel_err(cpu(go), o), gputest::kF32Tol);
  EXPECT_LE(rel_err(cpu(glse), lse), gputest::kF32Tol);
}

TEST(CudaAutocast, CpuTensorsIgnoreTheScope) {
  Tensor x = randn({9, 13}, 1), w = randn({5, 13}, 2), y, y_scope;
  ops::linear(x, w, Tensor(), y);
  {
    ops::Bf16Autocast autocast;
    ops::linear(x, w, Tensor(), y_scope);
  }
  EXPECT_EQ(y.to_vector(), y_scope.to_vector());
}

}  // namespace
}  // namespace gyre
