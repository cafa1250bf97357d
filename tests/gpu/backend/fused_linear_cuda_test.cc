// Fused decode linears on CUDA (backend/fused_linear_ops.h, backend/cuda/gemv_fused.cu): on the
// bf16 GEMV path (autocast + weight cache, M = 1..8) each fused op is ONE kernel and bitwise equal
// to the unfused ops on the same path (linear per member; linear, linear, silu_mul; linear, add),
// with odd N and with and without bias, for rows short enough for one warp per column and long
// enough for split-K (K >= 4096: 4 warps per column, gemv_bf16_common.cuh; K = 4104 leaves the
// first warp one vector more than the others); within the GEMV tests' bound (1e-5) of the CPU f32
// ops on bf16-rounded operands; and off that path (M = 9, K % 8 != 0, no cache) they run the
// unfused ops. The same for the RMSNorm-folded ops against rms_norm followed by the GEMV path.
// Past the GEMV's rows (M = 9, 64, 256, 300: the batch-256 decode, prefill chunks) each fused op is
// bitwise the unfused cuBLASLt path (rms_norm, ops::linear per member, silu_mul, add) with one
// bf16 activation per group and the residual in the GEMM's epilogue: fewer kernels by exactly the
// casts (and the norm, the add) it saves; the rms_norm -> bf16 kernel is bitwise rms_norm then
// f32_to_bf16. The whole-MLP op (rms_norm_swiglu_mlp_residual) is bitwise the unfused ops and the
// two fused ops at every row count, one kernel (the down_proj input cast) fewer past 8 rows; its
// SwiGLU -> bf16 kernel is bitwise silu_mul then f32_to_bf16. Under autocast the SwiGLU's gate and
// up are bf16 (ops::swiglu_gate_up_dtype): every unfused reference writes them with ops::linear
// into bf16 tensors, and silu_mul over bf16 gate/up is bitwise the f32 op on the converted values.
// Skips without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/cuda/fused_gemm.h"
#include "gyre/backend/cuda/kernels.h"
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

// A bf16 [M, N] CUDA tensor: the autocast MLP's gate/up (ops::swiglu_gate_up_dtype), which the
// unfused reference writes with ops::linear.
Tensor bf16_act(int64_t M, int64_t N) { return Tensor::empty({M, N}, DType::bf16, Device::cuda); }

// The CPU reference of a fused SwiGLU over bf16 gate/up: silu_mul of the f32 CPU products rounded
// to bf16. The GPU and the CPU sum in different orders, so a product lying within that f32 noise
// of a bf16 rounding boundary rounds to the neighbouring bf16 on one side (one ulp: <= 2^-7 of
// that element); the norm-relative bound is therefore 2^-8 (u), not the f32 1e-5 — the bitwise
// checks against the unfused ops carry the exactness.
constexpr double kBf16ActTol = 1.0 / 256;
Tensor swiglu_ref(const Tensor& gate_f32, const Tensor& up_f32) {
  Tensor out;
  ops::silu_mul(round_bf16(gate_f32), round_bf16(up_f32), out);
  return out;
}

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
        Tensor g = bf16_act(M, N), u = bf16_act(M, N), want;
        ops::linear(gx, gwg, pbg, g);
        ops::linear(gx, gwu, pbu, u);
        ops::silu_mul(g, u, want);
        Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
        const size_t kernels =
            kernels_if_gemv(M, [&] { ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out); });
        EXPECT_EQ(kernels, 1u);
        expect_bitwise(out, want, "silu_mul");
        Tensor cg, cu;
        ops::linear(round_bf16(x), round_bf16(wg), bias ? bg : none, cg);
        ops::linear(round_bf16(x), round_bf16(wu), bias ? bu : none, cu);
        EXPECT_LE(rel_err(cpu(out), swiglu_ref(cg, cu)), kBf16ActTol);
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
        Tensor xn, rstd, g = bf16_act(M, N), u = bf16_act(M, N), want;
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
        Tensor cg, cu;
        ops::linear(round_bf16(cpu(xn)), round_bf16(wg), bias ? cpu(gbg) : none, cg);
        ops::linear(round_bf16(cpu(xn)), round_bf16(wu), bias ? cpu(gbu) : none, cu);
        EXPECT_LE(rel_err(cpu(out), swiglu_ref(cg, cu)), kBf16ActTol);
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
  Tensor act = Tensor::empty({M, N}, DType::f32, Device::cuda), act_want;
  Tensor g = bf16_act(M, N), u = bf16_act(M, N);
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

// ---- past the GEMV's rows: the shared-input cuBLASLt GEMMs (backend/cuda/fused_gemm.h)

const int64_t kGemmRows[] = {9, 64, 256, 300};

// The kernels of body's second run (the first caches the bf16 weights, builds the cuBLASLt plans
// and leaves the temporaries' blocks in the pool, so the capture allocates nothing); body then
// runs once more for real (kernels_launched).
size_t kernels_warm(const std::function<void()>& body) {
  body();
  return kernels_launched(body);
}

void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  const Tensor g = cpu(got), w = cpu(want);
  ASSERT_EQ(g.nbytes(), w.nbytes()) << what;
  EXPECT_EQ(std::memcmp(g.raw(), w.raw(), g.nbytes()), 0) << what;
}

// rms_norm_fwd_bf16 is rms_norm then f32_to_bf16, bit for bit, and its optional f32 outputs are
// rms_norm's: H not a multiple of 8 (or of the block's 256 threads), one row and more rows than
// one grid (65535 blocks, so blocks loop), rows of zeros (eps = 0: inf * 0 = NaN), a NaN, huge
// values.
TEST(FusedLinearCuda, RmsNormBf16IsBitwiseRmsNormThenCast) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t H : {5, 13, 259, 896, 4863}) {
    for (int64_t M : {1, 3, 300, 65537}) {
      if (M * H > 8'000'000) continue;
      for (float eps : {1e-6f, 0.0f}) {
        SCOPED_TRACE("H " + std::to_string(H) + " M " + std::to_string(M) + " eps " +
                     std::to_string(eps));
        std::vector<float> xv = randn({M, H}, 800 + H + M, 3.0f).to_vector();
        if (M >= 3) {
          for (int64_t c = 0; c < H; ++c) xv[size_t(H + c)] = 0.0f;  // row 1: zeros
          xv[size_t(2 * H + H / 2)] = std::nanf("");                 // row 2: a NaN
        }
        xv[0] = 3.0e38f;  // row 0: the f64 sum of squares does not overflow, bf16 may round up
        Tensor gx = gpu(Tensor::from_vector(xv, {M, H})), gnw = gpu(randn({H}, 801 + H));
        Tensor xn, rstd;
        ops::rms_norm(gx, gnw, eps, xn, rstd);
        Tensor want = Tensor::empty({M, H}, DType::bf16, Device::cuda);
        cuda::f32_to_bf16(xn.f32(), static_cast<uint16_t*>(want.raw()), M * H);
        Tensor got = Tensor::empty({M, H}, DType::bf16, Device::cuda);
        cuda::rms_norm_fwd_bf16(gx.f32(), gnw.f32(), M, H, double(eps),
                                static_cast<uint16_t*>(got.raw()), nullptr, nullptr);
        expect_same_bytes(got, want, "bf16, no f32 outputs");
        Tensor got2 = Tensor::empty({M, H}, DType::bf16, Device::cuda);
        Tensor yn = Tensor::empty({M, H}, DType::f32, Device::cuda);
        Tensor rs = Tensor::empty({M}, DType::f32, Device::cuda);
        cuda::rms_norm_fwd_bf16(gx.f32(), gnw.f32(), M, H, double(eps),
                                static_cast<uint16_t*>(got2.raw()), yn.f32(), rs.f32());
        expect_same_bytes(got2, want, "bf16 with f32 outputs");
        expect_same_bytes(yn, xn, "f32 y");
        expect_same_bytes(rs, rstd, "rstd");
      }
    }
  }
}

// linear_group / rms_norm_linear_group past the GEMV's rows: bitwise (rms_norm, then) ops::linear
// per member, with and without bias, norm and rms_norm's outputs; Qwen2.5-0.5B's q/k/v shape and
// an odd one (K % 8 != 0, odd N). Kernels at M = 256: the casts of all members but one are gone
// (and the norm is the cast): 1 norm kernel + the 3 GEMMs.
TEST(FusedLinearCuda, GemmGroupRoundsTheInputOnceAndIsBitwiseThePerLinearGemm) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  struct Case {
    int64_t K;
    std::vector<int64_t> ns;
  };
  for (const Case& cs : {Case{896, {896, 128, 128}}, Case{259, {37, 13, 13}}}) {
    const int64_t K = cs.K;
    const size_t L = cs.ns.size();
    Tensor gnw = gpu(randn({K}, 900 + K));
    std::vector<Tensor> gw, gb;
    for (size_t i = 0; i < L; ++i) {
      gw.push_back(gpu(randn({cs.ns[i], K}, 910 + i + K, 0.05f)));
      gb.push_back(gpu(randn({cs.ns[i]}, 920 + i)));
    }
    for (int64_t M : kGemmRows) {
      for (bool bias : {true, false}) {
        for (bool norm : {false, true}) {
          SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) +
                       (bias ? " bias" : "") + (norm ? " norm" : ""));
          Tensor gx = gpu(randn({M, K}, 930 + M + K, 3.0f));
          std::vector<Tensor> y(L), want(L);
          std::vector<const Tensor*> wp, bp;
          std::vector<Tensor*> yp;
          for (size_t i = 0; i < L; ++i) {
            wp.push_back(&gw[i]), bp.push_back(bias ? &gb[i] : &none), yp.push_back(&y[i]);
            want[i] = Tensor::empty({M, cs.ns[i]}, DType::f32, Device::cuda);
          }
          Decode d(&cache);
          Tensor xn = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd = Tensor::empty({M}, DType::f32, Device::cuda);
          auto unfused = [&] {
            if (norm) ops::rms_norm(gx, gnw, eps, xn, rstd);
            for (size_t i = 0; i < L; ++i) ops::linear(norm ? xn : gx, gw[i], *bp[i], want[i]);
          };
          unfused();
          Tensor xn_out = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd_out = Tensor::empty({M}, DType::f32, Device::cuda);
          for (bool outputs : {false, true}) {
            if (outputs && !norm) continue;
            SCOPED_TRACE(outputs ? "with rms_norm's outputs" : "");
            for (Tensor& t : y) t = Tensor();  // allocated by the op
            if (norm)
              ops::rms_norm_linear_group(gx, gnw, eps, wp, bp, yp, outputs ? &xn_out : nullptr,
                                         outputs ? &rstd_out : nullptr);
            else
              ops::linear_group(gx, wp, bp, yp);
            for (size_t i = 0; i < L; ++i)
              expect_bitwise(y[i], want[i], "member " + std::to_string(i));
          }
          if (norm) {
            expect_bitwise(xn_out, xn, "xn_out");
            expect_bitwise(rstd_out, rstd, "rstd_out");
          }
          if (M != 256 || K != 896) continue;
          // Kernel counts, outputs preallocated.
          auto fused = [&] {
            if (norm)
              ops::rms_norm_linear_group(gx, gnw, eps, wp, bp, yp);
            else
              ops::linear_group(gx, wp, bp, yp);
          };
          const size_t n_fused = kernels_warm(fused), n_unfused = kernels_warm(unfused);
          // unfused: [rms_norm] + L x (f32_to_bf16 + GEMM); fused: 1 (cast or norm) + L GEMMs.
          EXPECT_EQ(n_unfused - n_fused, norm ? L : L - 1);
          // The GEMMs alone, over an input already in bf16: the fused op adds one kernel to them.
          Tensor xb = Tensor::empty({M, K}, DType::bf16, Device::cuda);
          cuda::f32_to_bf16((norm ? xn : gx).f32(), static_cast<uint16_t*>(xb.raw()), M * K);
          std::vector<const uint16_t*> wb;
          for (size_t i = 0; i < L; ++i) wb.push_back(cache.bf16(gw[i]));
          const size_t n_gemms = kernels_warm([&] {
            for (size_t i = 0; i < L; ++i)
              cuda::linear_gemm_bf16(static_cast<const uint16_t*>(xb.raw()), wb[i],
                                     bias ? gb[i].f32() : nullptr, M, cs.ns[i], K, want[i].f32());
          });
          EXPECT_EQ(n_fused, 1 + n_gemms);
          for (size_t i = 0; i < L; ++i)
            expect_bitwise(y[i], want[i], "member " + std::to_string(i) + " (GEMMs alone)");
        }
      }
    }
  }
}

// linear_silu_mul / rms_norm_linear_silu_mul past the GEMV's rows: bitwise (rms_norm,) linear,
// linear, silu_mul; Qwen2.5-0.5B's gate/up shape and an odd one. At M = 256 one cast (and the
// norm) fewer.
TEST(FusedLinearCuda, GemmSiluMulRoundsTheInputOnceAndIsBitwiseLinearsThenSiluMul) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  for (int64_t K : {896, 259}) {
    const int64_t N = K == 896 ? 4864 : 77;
    Tensor gnw = gpu(randn({K}, 1000 + K));
    Tensor gwg = gpu(randn({N, K}, 1001 + K, 0.05f)), gwu = gpu(randn({N, K}, 1002 + K, 0.05f));
    Tensor gbg = gpu(randn({N}, 1003)), gbu = gpu(randn({N}, 1004));
    for (int64_t M : kGemmRows) {
      for (bool bias : {true, false}) {
        for (bool norm : {false, true}) {
          SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) +
                       (bias ? " bias" : "") + (norm ? " norm" : ""));
          Tensor gx = gpu(randn({M, K}, 1010 + M + K, 3.0f));
          const Tensor& pbg = bias ? gbg : none;
          const Tensor& pbu = bias ? gbu : none;
          Decode d(&cache);
          Tensor xn = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd = Tensor::empty({M}, DType::f32, Device::cuda);
          Tensor g = bf16_act(M, N), u = bf16_act(M, N);
          Tensor want = Tensor::empty({M, N}, DType::f32, Device::cuda);
          auto unfused = [&] {
            if (norm) ops::rms_norm(gx, gnw, eps, xn, rstd);
            ops::linear(norm ? xn : gx, gwg, pbg, g);
            ops::linear(norm ? xn : gx, gwu, pbu, u);
            ops::silu_mul(g, u, want);
          };
          unfused();
          Tensor xn_out = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd_out = Tensor::empty({M}, DType::f32, Device::cuda);
          Tensor out;
          for (bool outputs : {false, true}) {
            if (outputs && !norm) continue;
            SCOPED_TRACE(outputs ? "with rms_norm's outputs" : "");
            out = Tensor();  // allocated by the op
            if (norm)
              ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, out,
                                            outputs ? &xn_out : nullptr,
                                            outputs ? &rstd_out : nullptr);
            else
              ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out);
            expect_bitwise(out, want, "silu_mul");
          }
          if (norm) {
            expect_bitwise(xn_out, xn, "xn_out");
            expect_bitwise(rstd_out, rstd, "rstd_out");
          }
          if (M != 256 || K != 896) continue;
          auto fused = [&] {
            if (norm)
              ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, out);
            else
              ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out);
          };
          const size_t n_fused = kernels_warm(fused), n_unfused = kernels_warm(unfused);
          // unfused: [rms_norm] + 2 x (f32_to_bf16 + GEMM) + silu_mul; fused: 1 + 2 GEMMs +
          // silu_mul (with a bias each bf16-output GEMM is the f32 GEMM + f32_to_bf16 in both).
          EXPECT_EQ(n_unfused - n_fused, norm ? 2u : 1u);
          expect_bitwise(out, want, "silu_mul after the counts");
        }
      }
    }
  }
}

// linear_add_residual past the GEMV's rows: bitwise linear then add, with y a separate tensor, y
// the residual itself and y undefined; Qwen2.5-0.5B's o_proj and down_proj shapes (down_proj's
// cuBLASLt GEMM is split-K with a separate reduction at M = 256) and an odd one. Without a bias
// the add is the GEMM's epilogue: one kernel (the add) fewer at the Qwen shapes.
TEST(FusedLinearCuda, GemmAddResidualIsBitwiseLinearThenAdd) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  Tensor none;
  struct Case {
    int64_t K, N;
  };
  // The 0.5B o_proj / down_proj, the 1.5B ones (K 8960: another cuBLASLt algorithm, possibly
  // split-K) and an odd shape.
  for (const Case& cs :
       {Case{896, 896}, Case{4864, 896}, Case{1536, 1536}, Case{8960, 1536}, Case{259, 33}}) {
    const int64_t K = cs.K, N = cs.N;
    Tensor gw = gpu(randn({N, K}, 1100 + K, 0.05f)), gb = gpu(randn({N}, 1101));
    for (int64_t M : kGemmRows) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("K " + std::to_string(K) + " N " + std::to_string(N) + " M " +
                     std::to_string(M) + (bias ? " bias" : ""));
        Tensor gx = gpu(randn({M, K}, 1110 + M + K)), gr = gpu(randn({M, N}, 1120 + M, 4.0f));
        const Tensor& pb = bias ? gb : none;
        Decode d(&cache);
        Tensor t = Tensor::empty({M, N}, DType::f32, Device::cuda);
        Tensor want = Tensor::empty({M, N}, DType::f32, Device::cuda);
        auto unfused = [&] {
          ops::linear(gx, gw, pb, t);
          ops::add(t, gr, want);
        };
        unfused();
        Tensor y = Tensor::empty({M, N}, DType::f32, Device::cuda);
        ops::linear_add_residual(gx, gw, pb, gr, y);
        expect_bitwise(y, want, "separate y");
        Tensor in_place = gr.clone();  // y is the residual tensor
        ops::linear_add_residual(gx, gw, pb, in_place, in_place);
        expect_bitwise(in_place, want, "y is the residual");
        Tensor fresh;
        ops::linear_add_residual(gx, gw, pb, gr, fresh);
        expect_bitwise(fresh, want, "y allocated");
        expect_bitwise(gr, gpu(randn({M, N}, 1120 + M, 4.0f)), "residual unchanged");
        if (M == 300 && K == 896) {
          // A residual that is a view 16 bytes into its storage (not 256-byte aligned):
          // cuBLASLt's C alignment assumption fails, so the op falls back — the GEMM into the
          // (aligned) output, then add; in place on the view, the GEMM into a temporary — still
          // bitwise linear then add.
          Tensor big_r = gpu(randn({M * N + 4}, 1130 + M, 4.0f));
          Tensor r_view = big_r.narrow(4, M * N).reshape({M, N});
          Tensor want_v = Tensor::empty({M, N}, DType::f32, Device::cuda);
          ops::linear(gx, gw, pb, t);
          ops::add(t, r_view, want_v);
          Tensor y_sep = Tensor::empty({M, N}, DType::f32, Device::cuda);
          ops::linear_add_residual(gx, gw, pb, r_view, y_sep);
          expect_bitwise(y_sep, want_v, "misaligned residual view, separate output");
          ops::linear_add_residual(gx, gw, pb, r_view, r_view);
          expect_bitwise(r_view, want_v, "misaligned residual view, in place");
        }
        if (M != 256 || K == 259) continue;
        const size_t n_fused = kernels_warm([&] { ops::linear_add_residual(gx, gw, pb, gr, y); });
        const size_t n_unfused = kernels_warm(unfused);
        // unfused: f32_to_bf16 + GEMM + add; fused without a bias: f32_to_bf16 + the same GEMM.
        EXPECT_EQ(n_unfused - n_fused, bias ? 0u : 1u);
        expect_bitwise(y, want, "after the counts");
      }
    }
  }
}

// SwiGLU over bf16 gate/up (the autocast MLP's pre-activations, silu_bf16.cu): ops::silu_mul and
// ops::silu_mul_backward are bitwise the f32 ops on the values converted to f32, and
// silu_mul_fwd_bf16 (the fused MLP's bf16 activation) is that forward then f32_to_bf16 — odd
// sizes, one element, more elements than one grid covers (65535 blocks of 256: threads loop), and
// every pairing of special gate and up values — NaN, ±inf, ±0, huge (silu(g) * u overflowing f32,
// or rounding past the largest bf16), exp(-g) overflowing (g = -100), denormals. Sizes that are a
// multiple of 4 take the kernels' 4-wide accesses (silu_bf16.cu), the others one element at a
// time; both loop past one grid (65535 blocks of 256 threads).
TEST(FusedLinearCuda, SiluMulOverBf16GateUpIsBitwiseTheF32OpsOnTheConvertedValues) {
  GYRE_SKIP_WITHOUT_GPU();
  const float inf = INFINITY, nan = std::nanf("");
  const std::vector<float> special = {nan,      inf,      -inf,  0.0f,   -0.0f,   3.0e38f,
                                      -3.0e38f, 3.39e38f, 88.7f, -88.7f, -100.0f, 100.0f,
                                      1e-40f,   -1e-40f,  1.0f,  -1.0f,  20.0f,   -20.0f};
  const size_t S = special.size();
  // n normal values (a random block of at most 2^20, repeated: the large sizes stay cheap).
  auto values = [](int64_t n, uint64_t seed) {
    const int64_t m = std::min<int64_t>(n, int64_t(1) << 20);
    const std::vector<float> block = randn({m}, seed, 4.0f).to_vector();
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = block[i % size_t(m)];
    return v;
  };
  for (int64_t n :
       {int64_t(1), int64_t(7), int64_t(259), int64_t(S * S), int64_t(4863), int64_t(256) * 4864,
        int64_t(256) * 4864 + 1, int64_t(65535) * 256 + 3, int64_t(65535) * 256 * 4 + 8}) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<float> g = values(n, 1300 + n), u = values(n, 1301 + n);
    for (size_t i = 0; i < S * S && i < size_t(n); ++i)
      g[i] = special[i / S], u[i] = special[i % S];
    if (n > 1000) u[size_t(n) - 1] = nan, g[size_t(n) - 2] = -inf;  // the last elements too
    // bf16 gate/up on the device (the host rounding is f32_to_bf16's), and their f32 values.
    Tensor gb = gpu(Tensor::from_vector(g, {n}).to(DType::bf16));
    Tensor ub = gpu(Tensor::from_vector(u, {n}).to(DType::bf16));
    Tensor gf = Tensor::empty({n}, DType::f32, Device::cuda);
    Tensor uf = Tensor::empty({n}, DType::f32, Device::cuda);
    ops::copy(gb, gf);
    ops::copy(ub, uf);
    Tensor act, act_f32;
    ops::silu_mul(gb, ub, act);
    ops::silu_mul(gf, uf, act_f32);
    EXPECT_EQ(act.dtype(), DType::f32);
    expect_same_bytes(act, act_f32, "silu_mul over bf16 gate/up");
    Tensor dout = gpu(Tensor::from_vector(values(n, 1302 + n), {n})), dg, du, dg_f32, du_f32;
    ops::silu_mul_backward(dout, gb, ub, dg, du);
    ops::silu_mul_backward(dout, gf, uf, dg_f32, du_f32);
    expect_same_bytes(dg, dg_f32, "silu_mul_backward dgate over bf16 gate/up");
    expect_same_bytes(du, du_f32, "silu_mul_backward dup over bf16 gate/up");
    Tensor want = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(act.f32(), static_cast<uint16_t*>(want.raw()), n);
    Tensor got = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::silu_mul_fwd_bf16(static_cast<const uint16_t*>(gb.raw()),
                            static_cast<const uint16_t*>(ub.raw()),
                            static_cast<uint16_t*>(got.raw()), n);
    expect_same_bytes(got, want, "silu_mul_fwd_bf16");
    // The ops with bf16 outputs (the training backward's GEMM operands): act, dgate and dup
    // rounded once — f32_to_bf16 of the f32 outputs, bitwise.
    Tensor act16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    ops::silu_mul(gb, ub, act16);
    expect_same_bytes(act16, want, "ops::silu_mul into bf16");
    Tensor dg16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    Tensor du16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    ops::silu_mul_backward(dout, gb, ub, dg16, du16);
    Tensor dg_want = Tensor::empty({n}, DType::bf16, Device::cuda);
    Tensor du_want = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(dg.f32(), static_cast<uint16_t*>(dg_want.raw()), n);
    cuda::f32_to_bf16(du.f32(), static_cast<uint16_t*>(du_want.raw()), n);
    expect_same_bytes(dg16, dg_want, "ops::silu_mul_backward dgate into bf16");
    expect_same_bytes(du16, du_want, "ops::silu_mul_backward dup into bf16");
  }
}

// ops::linear_backward under autocast with dy and/or x already bf16 (the training backward's
// act, dgate, dup): dx, dw bitwise the f32 call on the same values (f32 tensors holding the bf16
// values: the autocast path rounds them to the same bits), with and without a weight cache and an
// accumulating dx; empty products; the errors (bf16 dy with a bias gradient, outside autocast,
// f32 outputs required).
TEST(FusedLinearCuda, LinearBackwardTakesBf16DyAndXBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t M : {1, 9, 300}) {
    for (bool cached : {false, true}) {
      const int64_t N = 264, K = 136;
      SCOPED_TRACE("M " + std::to_string(M) + (cached ? " cache" : ""));
      Tensor gw = gpu(randn({N, K}, 1400, 0.05f));
      Tensor dy16 = gpu(randn({M, N}, 1401 + M).to(DType::bf16));
      Tensor x16 = gpu(randn({M, K}, 1402 + M).to(DType::bf16));
      Tensor dy32 = Tensor::empty({M, N}, DType::f32, Device::cuda);
      Tensor x32 = Tensor::empty({M, K}, DType::f32, Device::cuda);
      ops::copy(dy16, dy32);
      ops::copy(x16, x32);
      for (int which = 0; which < 3; ++which) {  // bf16 dy, bf16 x, both
        const Tensor& dy = which != 1 ? dy16 : dy32;
        const Tensor& x = which != 0 ? x16 : x32;
        Tensor dx = gpu(randn({M, K}, 1403)), dw = gpu(randn({N, K}, 1404)), db;
        Tensor dx_want = dx.clone(), dw_want = dw.clone(), db_want;
        ops::Bf16Autocast autocast;
        ops::UseBf16WeightCache use(cached ? &cache : nullptr);
        ops::linear_backward(dy, x, gw, dx, dw, db, /*accumulate_dx=*/true);
        ops::linear_backward(dy32, x32, gw, dx_want, dw_want, db_want, true);
        expect_same_bytes(dx, dx_want, "dx");
        expect_same_bytes(dw, dw_want, "dw");
      }
    }
  }
  Tensor gw = gpu(randn({8, 16}, 1410)), none;
  Tensor dy16 = gpu(randn({4, 8}, 1411).to(DType::bf16)), x = gpu(randn({4, 16}, 1412));
  Tensor dx, dw, db = Tensor::zeros({8}, DType::f32, Device::cuda);
  {
    ops::Bf16Autocast autocast;
    EXPECT_THROW(ops::linear_backward(dy16, x, gw, dx, dw, db), Error);  // db needs the f32 dy
    Tensor dx0 = gpu(randn({4, 16}, 1413)), no_dw, no_db;
    Tensor empty_w = Tensor::empty({0, 16}, DType::f32, Device::cuda);
    Tensor empty_dy = Tensor::empty({4, 0}, DType::bf16, Device::cuda);
    ops::linear_backward(empty_dy, x, empty_w, dx0, no_dw, no_db);  // N = 0: dx = 0
    for (float v : cpu(dx0).to_vector()) EXPECT_EQ(v, 0.0f);
  }
  Tensor dx1, dw1, db1;
  EXPECT_THROW(ops::linear_backward(dy16, x, gw, dx1, dw1, db1), Error);  // no autocast
}

// rms_norm_swiglu_mlp_residual (the decode layer's MLP with its residual) is bitwise the unfused
// ops (rms_norm, linear gate, linear up, silu_mul, linear down, add) and the two fused ops it is
// defined as (rms_norm_linear_silu_mul, linear_add_residual), at the GEMV's rows and past them:
// Qwen2.5-0.5B's MLP (H 896, I 4864), an odd shape (K % 8 != 0: no GEMV) and one with N != K;
// with and without gate/up biases and a down bias (a down bias: the two ops); out separate,
// allocated, the residual itself, and the residual being x (the decoder's call); a residual view
// cuBLASLt cannot take as C (not 256-byte aligned: the GEMM, then add).
TEST(FusedLinearCuda, SwigluMlpResidualIsBitwiseTheComposition) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  struct Case {
    int64_t K, I, N;
  };
  for (const Case& cs : {Case{896, 4864, 896}, Case{259, 77, 259}, Case{264, 136, 33}}) {
    const int64_t K = cs.K, I = cs.I, N = cs.N;
    Tensor gnw = gpu(randn({K}, 1200 + K));
    Tensor gwg = gpu(randn({I, K}, 1201 + K, 0.05f)), gwu = gpu(randn({I, K}, 1202 + K, 0.05f));
    Tensor gwd = gpu(randn({N, I}, 1203 + K, 0.05f));
    Tensor gbg = gpu(randn({I}, 1204)), gbu = gpu(randn({I}, 1205)), gbd = gpu(randn({N}, 1206));
    for (int64_t M : {1, 7, 8, 9, 64, 256, 300}) {
      for (bool gu_bias : {false, true}) {
        for (int variant = 0; variant < 4; ++variant) {
          // With the engine's weight cache, and without one (training / scoring: weights rounded
          // into scratch per call; at M <= 8 the unfused ops, gate/up still bf16).
          const bool down_bias = variant & 1, cached = variant & 2;
          SCOPED_TRACE("K " + std::to_string(K) + " I " + std::to_string(I) + " N " +
                       std::to_string(N) + " M " + std::to_string(M) +
                       (gu_bias ? " gate/up bias" : "") + (down_bias ? " down bias" : "") +
                       (cached ? " weight cache" : " no weight cache"));
          const Tensor& pbg = gu_bias ? gbg : none;
          const Tensor& pbu = gu_bias ? gbu : none;
          const Tensor& pbd = down_bias ? gbd : none;
          const Tensor r = randn({M, N}, 1220 + M, 4.0f);
          Tensor gx = gpu(randn({M, K}, 1210 + M + K, 3.0f)), gr = gpu(r);
          Decode d(cached ? &cache : nullptr);
          Tensor xn, rstd, act, t, want;  // the unfused ops, gate/up bf16 as the decoder's
          Tensor g = bf16_act(M, I), u = bf16_act(M, I);
          ops::rms_norm(gx, gnw, eps, xn, rstd);
          ops::linear(xn, gwg, pbg, g);
          ops::linear(xn, gwu, pbu, u);
          ops::silu_mul(g, u, act);
          ops::linear(act, gwd, pbd, t);
          ops::add(t, gr, want);
          Tensor act2, want2;  // the two fused ops
          ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, act2);
          ops::linear_add_residual(act2, gwd, pbd, gr, want2);
          expect_bitwise(want2, want, "the two fused ops vs the unfused ops");
          auto mlp = [&](const Tensor& x, const Tensor& res, Tensor& out) {
            ops::rms_norm_swiglu_mlp_residual(x, gnw, eps, gwg, pbg, gwu, pbu, gwd, pbd, res, out);
          };
          Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
          mlp(gx, gr, out);
          expect_bitwise(out, want, "separate out");
          expect_bitwise(out, want2, "separate out vs the two fused ops");
          Tensor fresh;
          mlp(gx, gr, fresh);
          expect_bitwise(fresh, want, "out allocated");
          expect_bitwise(gr, r, "residual unchanged");
          Tensor in_place = gr.clone();
          mlp(gx, in_place, in_place);
          expect_bitwise(in_place, want, "out is the residual");
          // The residual (and out) one row into a larger tensor: 256-byte aligned only when a
          // row is (N = 896), else cuBLASLt cannot take it as C.
          Tensor big = Tensor::empty({M + 1, N}, DType::f32, Device::cuda);
          Tensor r_view = big.narrow(1, M);
          r_view.copy_from(gr);
          mlp(gx, r_view, out);
          expect_bitwise(out, want, "residual view");
          mlp(gx, r_view, r_view);
          expect_bitwise(r_view, want, "out is the residual view");
          if (N != K) continue;
          // The decoder's call: the residual is x itself (out = x + mlp(rms_norm(x))).
          Tensor want_x;
          ops::add(t, gx, want_x);
          mlp(gx, gx, out);
          expect_bitwise(out, want_x, "residual is x");
          Tensor x_in_place = gx.clone();
          mlp(x_in_place, x_in_place, x_in_place);
          expect_bitwise(x_in_place, want_x, "out is the residual is x");
        }
      }
    }
  }
}

// The names of the kernels body launches (captured like kernels_launched after a warm-up run;
// "?" for a node the runtime cannot name, e.g. a library kernel). body then runs once more.
std::vector<std::string> kernel_names_warm(const std::function<void()>& body) {
  body();
  cudaGraph_t graph = gputest::capture_graph(body);
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &n), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) {
    EXPECT_EQ(cudaGraphGetNodes(graph, nodes.data(), &n), cudaSuccess);
  }
  std::vector<std::string> names;
  for (cudaGraphNode_t node : nodes) {
    std::string name = "?";
    cudaGraphNodeType type{};
    cudaKernelNodeParams p{};
    const char* fn = nullptr;
    if (cudaGraphNodeGetType(node, &type) == cudaSuccess && type == cudaGraphNodeTypeKernel &&
        cudaGraphKernelNodeGetParams(node, &p) == cudaSuccess && p.func &&
        cudaFuncGetName(&fn, p.func) == cudaSuccess && fn)
      name = fn;
    names.push_back(name);
  }
  (void)cudaGetLastError();  // a node the runtime could not name leaves its error behind
  cudaGraphDestroy(graph);
  body();
  return names;
}

size_t count_containing(const std::vector<std::string>& names, const std::string& part) {
  size_t n = 0;
  for (const std::string& s : names) n += s.find(part) != std::string::npos;
  return n;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Kernels of rms_norm_swiglu_mlp_residual at the 0.5B MLP shape: at M = 256 without a down bias
// exactly one fewer than the two fused ops — the down_proj input cast (no f32_to_bf16 kernel; the
// norm kernel, the SwiGLU -> bf16 kernel and the GEMMs); with a down bias, and on the GEMV path
// (M = 8: two kernels), as many as the two ops (it runs them).
TEST(FusedLinearCuda, SwigluMlpResidualDropsTheDownProjCast) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  const int64_t K = 896, I = 4864, N = 896;
  Tensor none;
  Tensor gnw = gpu(randn({K}, 1400)), gwg = gpu(randn({I, K}, 1401, 0.05f));
  Tensor gwu = gpu(randn({I, K}, 1402, 0.05f)), gwd = gpu(randn({N, I}, 1403, 0.05f));
  Tensor gbd = gpu(randn({N}, 1404));
  for (int64_t M : {8, 256}) {
    for (bool down_bias : {false, true}) {
      SCOPED_TRACE("M " + std::to_string(M) + (down_bias ? " down bias" : ""));
      const Tensor& pbd = down_bias ? gbd : none;
      Tensor gx = gpu(randn({M, K}, 1410 + M, 3.0f)), gr = gpu(randn({M, N}, 1411 + M));
      Decode d(&cache);
      Tensor act = Tensor::empty({M, I}, DType::f32, Device::cuda);
      Tensor want = Tensor::empty({M, N}, DType::f32, Device::cuda);
      Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
      auto two_ops = [&] {
        ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, none, gwu, none, act);
        ops::linear_add_residual(act, gwd, pbd, gr, want);
      };
      auto fused = [&] {
        ops::rms_norm_swiglu_mlp_residual(gx, gnw, eps, gwg, none, gwu, none, gwd, pbd, gr, out);
      };
      const std::vector<std::string> n_two = kernel_names_warm(two_ops);
      const std::vector<std::string> n_fused = kernel_names_warm(fused);
      expect_bitwise(out, want, "after the counts");
      if (M <= 8) {
        EXPECT_EQ(n_fused.size(), 2u) << joined(n_fused);
        EXPECT_EQ(n_two.size(), 2u) << joined(n_two);
        continue;
      }
      if (down_bias) {
        EXPECT_EQ(n_fused.size(), n_two.size()) << joined(n_fused) << " | " << joined(n_two);
        continue;
      }
      EXPECT_EQ(n_two.size() - n_fused.size(), 1u) << joined(n_fused) << " | " << joined(n_two);
      EXPECT_EQ(count_containing(n_two, "f32_to_bf16_kernel"), 1u) << joined(n_two);
      EXPECT_EQ(count_containing(n_fused, "f32_to_bf16_kernel"), 0u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "silu_mul_bf16_kernel"), 1u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "silu_mul_fwd_kernel"), 0u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "rms_bf16_kernel"), 1u) << joined(n_fused);
    }
  }
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
