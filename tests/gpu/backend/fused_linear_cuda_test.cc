// Fused decode linears on CUDA (backend/fused_linear_ops.h, backend/cuda/gemv_fused.cu): on the
// bf16 GEMV path (autocast + weight cache, M = 1..8) each fused op is ONE kernel and bitwise equal
// to the unfused ops on the same path (linear per member; linear, linear, silu_mul; linear, add),
// with odd N and with and without bias, for rows short enough for one warp per column and long
// enough for split-K (K >= 4096: 4 warps per column, gemv_bf16_common.cuh; K = 4104 leaves the
// first warp one vector more than the others); within the GEMV tests' bound (1e-5) of the CPU f32
// ops on bf16-rounded operands; and off that path (M = 9, K % 8 != 0, no cache) they run the
// unfused ops. The same for the RMSNorm-folded ops against rms_norm followed by the GEMV path.
// Skips without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/fused_rope_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::kernels_launched;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

void expect_bitwise(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<float> g = cpu(got).to_vector(), w = cpu(want).to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  EXPECT_EQ(std::memcmp(g.data(), w.data(), g.size() * sizeof(float)), 0) << what;
}

// kernels_launched(body) on the GEMV path (M <= 8); beyond it just runs body (the unfused GEMM
// path allocates scratch, which a capture may not) and returns 1.
size_t kernels_if_gemv(int64_t M, const std::function<void()>& body) {
  if (M <= 8) return kernels_launched(body);
  body();
  return 1;
}

struct Decode {  // the engine's decode setting: autocast with a bf16 weight cache
  ops::Bf16Autocast autocast;
  ops::UseBf16WeightCache use;
  explicit Decode(ops::Bf16WeightCache* c) : use(c) {}
};

TEST(FusedLinearCuda, GroupIsOneKernelAndBitwiseThePerLinearGemv) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const int64_t K = 264;
  const std::vector<int64_t> ns = {37, 13, 13};  // q, k, v-like: odd N
  std::vector<Tensor> w, b;
  for (size_t i = 0; i < ns.size(); ++i) {
    w.push_back(randn({ns[i], K}, 100 + i));
    b.push_back(randn({ns[i]}, 200 + i));
  }
  std::vector<Tensor> gw, gb;
  for (size_t i = 0; i < ns.size(); ++i) gw.push_back(gpu(w[i])), gb.push_back(gpu(b[i]));
  Tensor none;
  for (int64_t M = 1; M <= 9; ++M) {
    for (bool bias : {true, false}) {
      SCOPED_TRACE("M " + std::to_string(M) + (bias ? " bias" : ""));
      Tensor x = randn({M, K}, 10 + M), gx = gpu(x);
      std::vector<Tensor> y(ns.size()), want(ns.size());
      std::vector<const Tensor*> wp, bp;
      std::vector<Tensor*> yp;
      for (size_t i = 0; i < ns.size(); ++i) {
        wp.push_back(&gw[i]), bp.push_back(bias ? &gb[i] : &none), yp.push_back(&y[i]);
        y[i] = Tensor::empty({M, ns[i]}, DType::f32, Device::cuda);
      }
      Decode d(&cache);
      for (size_t i = 0; i < ns.size(); ++i) ops::linear(gx, gw[i], *bp[i], want[i]);
      const size_t kernels = kernels_if_gemv(M, [&] { ops::linear_group(gx, wp, bp, yp); });
      EXPECT_EQ(kernels, 1u);
      for (size_t i = 0; i < ns.size(); ++i) {
        expect_bitwise(y[i], want[i], "member " + std::to_string(i));
        Tensor ref;
        ops::linear(round_bf16(x), round_bf16(w[i]), bias ? b[i] : none, ref);
        EXPECT_LE(rel_err(cpu(y[i]), ref), 1e-5) << "member " << i;
      }
    }
  }
}

TEST(FusedLinearCuda, GroupLargerThanOneLaunchAndFallbacks) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  // 4104: split-K; 259: K % 8 != 0, so linear's GEMM path and no fusion
  for (int64_t K : {896, 4104, 259}) {
    const std::vector<int64_t> ns = {5, 129, 1, 33, 7, 11};  // two launches of <= 4 members
    std::vector<Tensor> gw, gb;
    for (size_t i = 0; i < ns.size(); ++i) {
      gw.push_back(gpu(randn({ns[i], K}, 300 + i + K)));
      gb.push_back(gpu(randn({ns[i]}, 400 + i)));
    }
    for (int64_t M : {1, 4, 8}) {
      SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M));
      Tensor gx = gpu(randn({M, K}, 20 + M));
      std::vector<Tensor> y(ns.size()), want(ns.size());
      std::vector<const Tensor*> wp, bp;
      std::vector<Tensor*> yp;
      for (size_t i = 0; i < ns.size(); ++i)
        wp.push_back(&gw[i]), bp.push_back(&gb[i]), yp.push_back(&y[i]);
      Decode d(&cache);
      ops::linear_group(gx, wp, bp, yp);
      for (size_t i = 0; i < ns.size(); ++i) {
        ops::linear(gx, gw[i], gb[i], want[i]);
        expect_bitwise(y[i], want[i], "member " + std::to_string(i));
      }
    }
  }
}

TEST(FusedLinearCuda, SiluMulIsOneKernelAndBitwiseLinearsThenSiluMul) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t K : {896, 4104, 264}) {  // 4104: split-K
    const int64_t N = K == 896 ? 4863 : 77;
    Tensor wg = randn({N, K}, 1 + K), wu = randn({N, K}, 2 + K), bg = randn({N}, 3),
           bu = randn({N}, 4);
    Tensor gwg = gpu(wg), gwu = gpu(wu), gbg = gpu(bg), gbu = gpu(bu), none;
    for (int64_t M = 1; M <= 9; ++M) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) + (bias ? " bias" : ""));
        Tensor x = randn({M, K}, 30 + M, 2.0f), gx = gpu(x);
        const Tensor& pbg = bias ? gbg : none;
        const Tensor& pbu = bias ? gbu : none;
        Decode d(&cache);
        Tensor g, u, want;
        ops::linear(gx, gwg, pbg, g);
        ops::linear(gx, gwu, pbu, u);
        ops::silu_mul(g, u, want);
        Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
        const size_t kernels =
            kernels_if_gemv(M, [&] { ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out); });
        EXPECT_EQ(kernels, 1u);
        expect_bitwise(out, want, "silu_mul");
        Tensor cg, cu, ref;
        ops::linear(round_bf16(x), round_bf16(wg), bias ? bg : none, cg);
        ops::linear(round_bf16(x), round_bf16(wu), bias ? bu : none, cu);
        ops::silu_mul(cg, cu, ref);
        EXPECT_LE(rel_err(cpu(out), ref), 1e-5);
      }
    }
  }
}

TEST(FusedLinearCuda, AddResidualIsOneKernelAndBitwiseLinearThenAdd) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t K : {4864, 264}) {
    const int64_t N = K == 4864 ? 895 : 33;
    Tensor w = randn({N, K}, 5 + K), b = randn({N}, 6);
    Tensor gw = gpu(w), gb = gpu(b), none;
    for (int64_t M = 1; M <= 9; ++M) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) + (bias ? " bias" : ""));
        Tensor x = randn({M, K}, 40 + M), r = randn({M, N}, 50 + M), gx = gpu(x), gr = gpu(r);
        const Tensor& pb = bias ? gb : none;
        Decode d(&cache);
        Tensor want;
        ops::linear(gx, gw, pb, want);
        ops::add(want, gr, want);
        Tensor y = Tensor::empty({M, N}, DType::f32, Device::cuda);
        const size_t kernels =
            kernels_if_gemv(M, [&] { ops::linear_add_residual(gx, gw, pb, gr, y); });
        EXPECT_EQ(kernels, 1u);
        expect_bitwise(y, want, "linear + residual");
        Tensor in_place = gr.clone();  // y is the residual tensor
        ops::linear_add_residual(gx, gw, pb, in_place, in_place);
        expect_bitwise(in_place, want, "in place");
        Tensor ref;
        ops::linear(round_bf16(x), round_bf16(w), bias ? b : none, ref);
        ops::add(ref, r, ref);
        EXPECT_LE(rel_err(cpu(y), ref), 1e-5);
      }
    }
  }
}

// The RMSNorm-folded group (the decode layer's input norm + q/k/v): ONE kernel on the GEMV path
// (H % 8 == 0, M <= 8) — also when rms_norm's outputs are requested — and bitwise rms_norm then
// the per-linear GEMV, for Qwen2.5 hidden sizes (0.5B, 1.5B, 7B), H = 4104 (split-K: 2 columns per
// 256-thread block) and H = 5 (no GEMV: the unfused ops); rms_norm's outputs bitwise rms_norm's;
// within 1e-5 of the CPU ops.
TEST(FusedLinearCuda, RmsNormGroupIsOneKernelAndBitwiseRmsNormThenGemv) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  for (int64_t H : {896, 1536, 3584, 4104, 5}) {
    const bool gemv = H % 8 == 0;
    // More column tiles than resident blocks at H 896 (8 columns a block) and 4104 (split-K: 2
    // a block), so at M = 1 a block loops over several tiles reusing its rstd and the split-K
    // shared slots; a partial last tile in both.
    const std::vector<int64_t> ns = H == 896    ? std::vector<int64_t>{2901, 301, 301}
                                    : H == 4104 ? std::vector<int64_t>{701, 97, 97}
                                                : std::vector<int64_t>{37, 13, 13};
    Tensor nw = randn({H}, 500 + H), gnw = gpu(nw);
    std::vector<Tensor> w, gw, gb;
    for (size_t i = 0; i < ns.size(); ++i) {
      w.push_back(randn({ns[i], H}, 510 + i + H, 0.05f));
      gw.push_back(gpu(w.back()));
      gb.push_back(gpu(randn({ns[i]}, 520 + i)));
    }
    for (int64_t M = 1; M <= 9; ++M) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("H " + std::to_string(H) + " M " + std::to_string(M) + (bias ? " bias" : ""));
        Tensor x = randn({M, H}, 530 + M + H, 3.0f), gx = gpu(x);
        std::vector<Tensor> y(ns.size()), want(ns.size());
        std::vector<const Tensor*> wp, bp;
        std::vector<Tensor*> yp;
        for (size_t i = 0; i < ns.size(); ++i) {
          wp.push_back(&gw[i]), bp.push_back(bias ? &gb[i] : &none), yp.push_back(&y[i]);
          y[i] = Tensor::empty({M, ns[i]}, DType::f32, Device::cuda);
        }
        Decode d(&cache);
        Tensor xn, rstd;
        ops::rms_norm(gx, gnw, eps, xn, rstd);
        for (size_t i = 0; i < ns.size(); ++i) ops::linear(xn, gw[i], *bp[i], want[i]);
        Tensor xn_out = Tensor::empty({M, H}, DType::f32, Device::cuda);
        Tensor rstd_out = Tensor::empty({M}, DType::f32, Device::cuda);
        for (bool outputs : {false, true}) {
          SCOPED_TRACE(outputs ? "with rms_norm's outputs" : "without rms_norm's outputs");
          auto body = [&] {
            ops::rms_norm_linear_group(gx, gnw, eps, wp, bp, yp, outputs ? &xn_out : nullptr,
                                       outputs ? &rstd_out : nullptr);
          };
          if (gemv && M <= 8) {
            EXPECT_EQ(kernels_launched(body), 1u);
          } else {
            body();
          }
          for (size_t i = 0; i < ns.size(); ++i)
            expect_bitwise(y[i], want[i], "member " + std::to_string(i));
        }
        expect_bitwise(xn_out, xn, "xn_out");
        expect_bitwise(rstd_out, rstd, "rstd_out");
        Tensor xn_cpu, rstd_cpu;
        ops::rms_norm(x, nw, eps, xn_cpu, rstd_cpu);
        EXPECT_LE(rel_err(cpu(xn), xn_cpu), gputest::kF32Tol);
        if (!gemv) continue;  // the CPU reference below models the bf16 GEMV
        for (size_t i = 0; i < ns.size(); ++i) {
          Tensor ref;
          ops::linear(round_bf16(cpu(xn)), round_bf16(w[i]), bias ? cpu(gb[i]) : none, ref);
          EXPECT_LE(rel_err(cpu(y[i]), ref), 1e-5) << "member " << i;
        }
      }
    }
  }
}

// The RMSNorm-folded gate/up (the decode layer's post-attention norm + SwiGLU input): ONE kernel
// on the GEMV path and bitwise rms_norm, linear, linear, silu_mul; same sizes as above.
TEST(FusedLinearCuda, RmsNormSiluMulIsOneKernelAndBitwiseRmsNormThenLinearsThenSiluMul) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  for (int64_t H : {896, 1536, 3584, 4104, 5}) {
    const bool gemv = H % 8 == 0;
    // 4104: split-K with more column tiles than resident blocks (a block loops over several).
    const int64_t N = H == 896 ? 4863 : H == 4104 ? 1201 : 129;
    Tensor nw = randn({H}, 600 + H), gnw = gpu(nw);
    Tensor wg = randn({N, H}, 601 + H, 0.05f), wu = randn({N, H}, 602 + H, 0.05f);
    Tensor gwg = gpu(wg), gwu = gpu(wu), gbg = gpu(randn({N}, 603)), gbu = gpu(randn({N}, 604));
    for (int64_t M = 1; M <= 9; ++M) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("H " + std::to_string(H) + " M " + std::to_string(M) + (bias ? " bias" : ""));
        Tensor x = randn({M, H}, 610 + M + H, 3.0f), gx = gpu(x);
        const Tensor& pbg = bias ? gbg : none;
        const Tensor& pbu = bias ? gbu : none;
        Decode d(&cache);
        Tensor xn, rstd, g, u, want;
        ops::rms_norm(gx, gnw, eps, xn, rstd);
        ops::linear(xn, gwg, pbg, g);
        ops::linear(xn, gwu, pbu, u);
        ops::silu_mul(g, u, want);
        Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
        Tensor xn_out = Tensor::empty({M, H}, DType::f32, Device::cuda);
        Tensor rstd_out = Tensor::empty({M}, DType::f32, Device::cuda);
        for (bool outputs : {false, true}) {
          SCOPED_TRACE(outputs ? "with rms_norm's outputs" : "without rms_norm's outputs");
          auto body = [&] {
            ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, out,
                                          outputs ? &xn_out : nullptr,
                                          outputs ? &rstd_out : nullptr);
          };
          if (gemv && M <= 8) {
            EXPECT_EQ(kernels_launched(body), 1u);
          } else {
            body();
          }
          expect_bitwise(out, want, "silu_mul");
        }
        expect_bitwise(xn_out, xn, "xn_out");
        expect_bitwise(rstd_out, rstd, "rstd_out");
        if (!gemv) continue;
        Tensor cg, cu, ref;
        ops::linear(round_bf16(cpu(xn)), round_bf16(wg), bias ? cpu(gbg) : none, cg);
        ops::linear(round_bf16(cpu(xn)), round_bf16(wu), bias ? cpu(gbu) : none, cu);
        ops::silu_mul(cg, cu, ref);
        EXPECT_LE(rel_err(cpu(out), ref), 1e-5);
      }
    }
  }
}

// A norm weight the prologue cannot read as 16-byte vectors (a view at a 4-byte offset) takes the
// unfused ops — rms_norm, then the fused GEMV: two kernels, the same bits.
TEST(FusedLinearCuda, RmsNormWithAMisalignedNormWeightRunsRmsNormThenTheFusedGemv) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const int64_t H = 896, M = 2, N = 33;
  Tensor big = gpu(randn({H + 1}, 700)), gnw = big.narrow(1, H);
  Tensor gx = gpu(randn({M, H}, 701)), gw = gpu(randn({N, H}, 702, 0.05f)), none;
  Decode d(&cache);
  Tensor xn, rstd, want, y = Tensor::empty({M, N}, DType::f32, Device::cuda);
  ops::rms_norm(gx, gnw, 1e-6f, xn, rstd);
  ops::linear(xn, gw, none, want);
  const Tensor* wp[] = {&gw};
  const Tensor* bp[] = {&none};
  Tensor* yp[] = {&y};
  // The unfused path allocates rms_norm's temporaries: run each op once first, so the capture
  // below reuses the allocator's cached blocks instead of allocating.
  ops::rms_norm_linear_group(gx, gnw, 1e-6f, wp, bp, yp);
  EXPECT_EQ(kernels_launched([&] { ops::rms_norm_linear_group(gx, gnw, 1e-6f, wp, bp, yp); }), 2u);
  expect_bitwise(y, want, "misaligned norm weight");
  Tensor act = Tensor::empty({M, N}, DType::f32, Device::cuda), g, u, act_want;
  ops::linear(xn, gw, none, g);
  ops::linear(xn, gw, none, u);
  ops::silu_mul(g, u, act_want);
  ops::rms_norm_linear_silu_mul(gx, gnw, 1e-6f, gw, none, gw, none, act);
  EXPECT_EQ(kernels_launched(
                [&] { ops::rms_norm_linear_silu_mul(gx, gnw, 1e-6f, gw, none, gw, none, act); }),
            2u);
  expect_bitwise(act, act_want, "misaligned norm weight, silu_mul");
}

TEST(FusedLinearCuda, WithoutTheWeightCacheTheUnfusedOpsRun) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 2, K = 64, N = 17;
  Tensor gx = gpu(randn({M, K}, 1)), gw = gpu(randn({N, K}, 2)), gr = gpu(randn({M, N}, 3)), none;
  ops::Bf16Autocast autocast;  // autocast alone (training-style): per-call weight conversion
  Tensor y, want;
  ops::linear_add_residual(gx, gw, none, gr, y);
  ops::linear(gx, gw, none, want);
  ops::add(want, gr, want);
  expect_bitwise(y, want, "no cache");
}

TEST(FusedLinearCuda, RopeQkIsBitwiseRopeOnQThenK) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t T : {1, 3, 8, 37}) {
    const int64_t Hq = 14, Hkv = 2, D = 64, P = 300;
    Tensor cos = gpu(randn({P, D / 2}, 1)), sin = gpu(randn({P, D / 2}, 2));
    std::vector<int32_t> p;
    for (int64_t t = 0; t < T; ++t) p.push_back(int32_t((t * 37 + 5) % P));
    Tensor pos = gpu(Tensor::from_vector(p, {T}));
    Tensor q = gpu(randn({T, Hq, D}, 3 + T)), k = gpu(randn({T, Hkv, D}, 4 + T));
    Tensor q_ref = q.clone(), k_ref = k.clone();
    ops::rope_qk_(q, k, pos, cos, sin);
    ops::rope_(q_ref, pos, cos, sin);
    ops::rope_(k_ref, pos, cos, sin);
    expect_bitwise(q, q_ref, "q, T " + std::to_string(T));
    expect_bitwise(k, k_ref, "k, T " + std::to_string(T));
    Tensor q_cpu = cpu(q_ref), k_cpu = cpu(k_ref);  // and the CPU reference within f32 rounding
    Tensor qc = cpu(gpu(randn({T, Hq, D}, 3 + T))), kc = cpu(gpu(randn({T, Hkv, D}, 4 + T)));
    ops::rope_qk_(qc, kc, cpu(pos), cpu(cos), cpu(sin));
    EXPECT_LE(rel_err(qc, q_cpu), gputest::kF32Tol);
    EXPECT_LE(rel_err(kc, k_cpu), gputest::kF32Tol);
  }
}

TEST(FusedLinearCuda, TensorsOnTwoDevicesAreNamed) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor gx = gpu(randn({2, 8}, 1)), w_cpu = randn({3, 8}, 2), none, y;
  try {
    ops::linear_add_residual(gx, w_cpu, none, gpu(randn({2, 3}, 3)), y);
    ADD_FAILURE() << "mixed devices accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("'w' is on cpu but 'x' is on cuda")) << e.what();
  }
  Tensor nw_cpu = randn({8}, 4), gw = gpu(randn({3, 8}, 5)), out;
  try {
    ops::rms_norm_linear_silu_mul(gx, nw_cpu, 1e-6f, gw, none, gw, none, out);
    ADD_FAILURE() << "mixed devices accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("'norm_w' is on cpu but 'x' is on cuda"))
        << e.what();
  }
}

}  // namespace
}  // namespace gyre
