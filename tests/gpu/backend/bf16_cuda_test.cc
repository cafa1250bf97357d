// The bf16 tensor-core paths against the CPU f32 reference run on the same bf16-rounded inputs.
//
// Bounds (documented in docs/cuda.md): with u = 2^-8 the bf16 unit roundoff, the flash kernel
// rounds P to bf16 before P·V and rounds its output to bf16, which gives a norm-relative error of
// about u/2..u; we allow 1e-2 (2.5 u) for the output and 2e-2 (5 u) for dQ/dK/dV, whose dS =
// P (dP − D) also cancels. lse is accumulated in f32 from exact bf16 products: 1e-5. bf16 GEMM
// and bf16-logit log-probs see exactly representable inputs and accumulate in f32: 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <iterator>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

Tensor to_bf16_gpu(const Tensor& t) { return gpu(t.to(DType::bf16)); }
Tensor from_bf16_gpu(const Tensor& t) { return cpu(t).to(DType::f32); }

TEST(CudaBf16, FlashAttentionForwardBackward) {
  GYRE_SKIP_WITHOUT_GPU();
  // (D, Hq, Hkv): GQA groups of 2 and of 7 (Qwen2.5-0.5B's 14 / 2, where the backward splits the
  // group over blocks).
  const std::vector<std::array<int64_t, 3>> shapes = {{64, 4, 2}, {128, 4, 2}, {64, 14, 2}};
  for (const auto& [D, Hq, Hkv] : shapes) {
    const std::vector<int32_t> cu_v = {0, 0, 1, 131, 388, 452};
    const int64_t T = cu_v.back(), B = int64_t(cu_v.size()) - 1;
    int64_t max_len = 0;
    for (int64_t b = 0; b < B; ++b) max_len = std::max<int64_t>(max_len, cu_v[b + 1] - cu_v[b]);
    Tensor cu = Tensor::from_vector(cu_v, {B + 1});
    Tensor q = round_bf16(randn({T, Hq, D}, 1)), k = round_bf16(randn({T, Hkv, D}, 2));
    Tensor v = round_bf16(randn({T, Hkv, D}, 3)), dout = round_bf16(randn({T, Hq, D}, 4));
    const float scale = 1.0f / std::sqrt(float(D));
    Tensor o, lse, dq, dk, dv;
    ops::attention_varlen(q, k, v, cu, scale, o, lse);
    ops::attention_varlen_backward(dout, q, k, v, o, lse, cu, scale, dq, dk, dv);

    Tensor gq = to_bf16_gpu(q), gk = to_bf16_gpu(k), gv = to_bf16_gpu(v), gdo = to_bf16_gpu(dout);
    Tensor gcu = gpu(cu);
    Tensor go = Tensor::empty({T, Hq, D}, DType::bf16, Device::cuda);
    Tensor glse = Tensor::empty({T, Hq}, DType::f32, Device::cuda);
    go.fill(NAN);  // every element must be written
    glse.fill(NAN);
    cuda::flash_attention_bf16_fwd(gq.data<uint16_t>(), gk.data<uint16_t>(), gv.data<uint16_t>(),
                                   gcu.i32(), B, max_len, T, Hq, Hkv, D, scale, go.data<uint16_t>(),
                                   glse.f32());
    EXPECT_LE(rel_err(from_bf16_gpu(go), o), 1e-2) << "D " << D << " Hq " << Hq;
    EXPECT_LE(rel_err(cpu(glse), lse), 1e-5) << "D " << D << " Hq " << Hq;
    Tensor gdq = Tensor::empty({T, Hq, D}, DType::bf16, Device::cuda);
    Tensor gdk = Tensor::empty({T, Hkv, D}, DType::bf16, Device::cuda);
    Tensor gdv = Tensor::empty({T, Hkv, D}, DType::bf16, Device::cuda);
    Tensor partials = Tensor::empty({T, Hq, D}, DType::f32, Device::cuda);
    Tensor delta = Tensor::empty({T, Hq}, DType::f32, Device::cuda);
    const auto backward = [&] {
      for (Tensor* t : {&gdq, &gdk, &gdv}) t->fill(NAN);  // every element must be written
      partials.fill(NAN);  // the split partials are written before they are read
      cuda::flash_attention_bf16_bwd(gdo.data<uint16_t>(), gq.data<uint16_t>(), gk.data<uint16_t>(),
                                     gv.data<uint16_t>(), go.data<uint16_t>(), glse.f32(),
                                     gcu.i32(), B, max_len, T, Hq, Hkv, D, scale,
                                     gdq.data<uint16_t>(), gdk.data<uint16_t>(),
                                     gdv.data<uint16_t>(), partials.f32(), delta.f32());
    };
    backward();
    EXPECT_LE(rel_err(from_bf16_gpu(gdq), dq), 2e-2) << "D " << D << " Hq " << Hq;
    EXPECT_LE(rel_err(from_bf16_gpu(gdk), dk), 2e-2) << "D " << D << " Hq " << Hq;
    EXPECT_LE(rel_err(from_bf16_gpu(gdv), dv), 2e-2) << "D " << D << " Hq " << Hq;
    // No atomics anywhere (docs/cuda.md): a second run is bitwise the first.
    const auto bits = [](const Tensor& g) {
      const Tensor h = cpu(g);
      return std::vector<uint16_t>(h.data<uint16_t>(), h.data<uint16_t>() + h.numel());
    };
    const std::vector<uint16_t> dq1 = bits(gdq), dk1 = bits(gdk), dv1 = bits(gdv);
    backward();
    EXPECT_TRUE(bits(gdq) == dq1) << "D " << D << " Hq " << Hq;
    EXPECT_TRUE(bits(gdk) == dk1) << "D " << D << " Hq " << Hq;
    EXPECT_TRUE(bits(gdv) == dv1) << "D " << D << " Hq " << Hq;
  }
}

// cuda::f32_to_bf16 (four elements per thread where src / dst are aligned, the scalar kernel for
// the rest and for unaligned pointers) gives the host's round-to-nearest-even bits for every
// element — sizes around the vector width, offsets that misalign either side, NaN, ±Inf, ±0,
// subnormals and ties.
TEST(CudaBf16, F32ToBf16IsTheHostRoundingAtEveryAlignment) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<float> v = randn({4103}, 77, 3.0f).to_vector();
  const float specials[] = {NAN,         INFINITY, -INFINITY, 0.0f,
                            -0.0f,       1e-40f,   -1e-40f,   1.00390625f /* a tie: 1 + 2^-8 */,
                            1.01171875f, 3.4e38f};
  for (size_t i = 0; i < std::size(specials); ++i) v[i * 7] = specials[i];
  const Tensor src = gpu(Tensor::from_vector(v, {int64_t(v.size())}));
  Tensor dst = Tensor::empty({int64_t(v.size()) + 8}, DType::bf16, Device::cuda);
  for (int64_t n : {1, 3, 4, 5, 8, 1027, 4096}) {
    for (int64_t src_off : {0, 1, 4}) {
      for (int64_t dst_off : {0, 1, 4}) {
        dst.zero();
        cuda::f32_to_bf16(src.f32() + src_off, dst.data<uint16_t>() + dst_off, n);
        const Tensor got = cpu(dst);
        const uint16_t* g = got.data<uint16_t>();
        int64_t bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t want = f32_to_bf16(v[size_t(src_off + i)]);
          const bool both_nan =
              std::isnan(v[size_t(src_off + i)]) && std::isnan(bf16_to_f32(g[dst_off + i]));
          bad += g[dst_off + i] != want && !both_nan;
        }
        EXPECT_EQ(bad, 0) << "n " << n << " src offset " << src_off << " dst offset " << dst_off;
        EXPECT_EQ(g[dst_off + n], 0) << "wrote past n (n " << n << ")";
      }
    }
  }
}

TEST(CudaBf16, GemmF32Accumulate) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 130, N = 77, K = 257;
  Tensor a = round_bf16(randn({M, K}, 1)), w = round_bf16(randn({N, K}, 2)), y;
  ops::linear(a, w, Tensor(), y);
  Tensor ga = to_bf16_gpu(a), gw = to_bf16_gpu(w);
  Tensor gy = Tensor::empty({M, N}, DType::f32, Device::cuda);
  cuda::gemm_bf16(false, true, M, N, K, 1.0f, ga.data<uint16_t>(), K, gw.data<uint16_t>(), K, 0.0f,
                  gy.f32(), N, false);
  EXPECT_LE(rel_err(cpu(gy), y), 1e-5);
  Tensor gyb = Tensor::empty({M, N}, DType::bf16, Device::cuda);
  cuda::gemm_bf16(false, true, M, N, K, 1.0f, ga.data<uint16_t>(), K, gw.data<uint16_t>(), K, 0.0f,
                  gyb.data<uint16_t>(), N, true);
  EXPECT_LE(rel_err(from_bf16_gpu(gyb), y), 4e-3);  // one bf16 rounding of the output
}

// linear_gemm_bf16_out (the bf16 gate/up GEMM of the autocast MLP): integer operands make every
// f32 sum exact in any order, so y must be the round-to-nearest-even of the exact x·wᵀ (+ b) bit
// for bit — the bf16 D epilogue without a bias (no split-K partial kept in bf16), the f32 GEMM +
// f32_to_bf16 with one. Shapes: odd N, M past one tile.
TEST(CudaBf16, LinearGemmBf16OutIsTheExactSumRoundedToNearestEven) {
  GYRE_SKIP_WITHOUT_GPU();
  auto ints = [](const Shape& s, uint64_t seed, float hi) {
    std::vector<float> v = randn(s, seed).to_vector();
    for (float& e : v) e = std::fmax(-hi, std::fmin(hi, std::round(e * hi / 2)));
    return Tensor::from_vector(v, s);
  };
  for (int64_t M : {9, 130, 1000}) {
    const int64_t N = 77, K = 256;
    const Tensor x = ints({M, K}, 90 + M, 8.0f), w = ints({N, K}, 91, 8.0f), b = ints({N}, 92, 500);
    const Tensor gx = to_bf16_gpu(x), gw = to_bf16_gpu(w), gb = gpu(b);
    for (bool bias : {false, true}) {
      Tensor ref;
      ops::linear(x, w, bias ? b : Tensor(), ref);  // exact: |sums| <= 256 * 64 + 500 < 2^24
      const Tensor want = ref.to(DType::bf16);
      Tensor got = Tensor::empty({M, N}, DType::bf16, Device::cuda);
      cuda::linear_gemm_bf16_out(gx.data<uint16_t>(), gw.data<uint16_t>(),
                                 bias ? gb.f32() : nullptr, M, N, K, got.data<uint16_t>());
      const Tensor h = cpu(got);
      EXPECT_EQ(std::memcmp(h.raw(), want.raw(), want.nbytes()), 0)
          << "M " << M << (bias ? " bias" : "");
    }
  }
}

TEST(CudaBf16, TokenLogprobsFromBf16Logits) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const int64_t V : {int64_t(32001), int64_t(32000)}) {  // scalar and 16-byte paths
    const int64_t n = 17;
    Tensor x = round_bf16(randn({n, V}, 1, 2.0f));
    std::vector<int32_t> tg(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) tg[size_t(i)] = i == 5 ? -1 : int32_t((i * 7919) % V);
    Tensor targets = Tensor::from_vector(tg, {n});
    Tensor lp, ent = Tensor::empty({n}, DType::f32);
    ops::token_logprobs(x, targets, 0.8f, lp, ent);
    Tensor gx = to_bf16_gpu(x), gt = gpu(targets);
    Tensor glp = Tensor::empty({n}, DType::f32, Device::cuda);
    Tensor gent = Tensor::empty({n}, DType::f32, Device::cuda);
    cuda::token_logprobs_fwd_bf16(gx.data<uint16_t>(), gt.i32(), n, V, 0.8f, glp.f32(), gent.f32());
    EXPECT_LE(rel_err(cpu(glp), lp), 1e-5) << V;
    EXPECT_LE(rel_err(cpu(gent), ent), 1e-5) << V;
  }
}

}  // namespace
}  // namespace gyre
