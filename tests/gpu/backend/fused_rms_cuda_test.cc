// The RMSNorm-folded fused linears on CUDA (backend/fused_linear_ops.h: rms_norm_linear_group, the
// decode layer's input norm + q/k/v, and rms_norm_linear_silu_mul, its post-attention norm + gate/
// up): on the bf16 GEMV path (autocast + weight cache, H % 8 == 0, M = 1..8) each is ONE kernel and
// bitwise rms_norm followed by the GEMV path's unfused ops, rms_norm's outputs bitwise rms_norm's;
// off that path (H % 8 != 0, M = 9, a misaligned norm weight) the unfused ops run. And
// rms_norm_fwd_bf16 (backend/cuda/fused_gemm.h, the norm of the fused GEMMs past the GEMV's rows)
// is bitwise rms_norm then f32_to_bf16. Past the GEMV's rows the RMSNorm-folded ops are checked
// with their families: fused_linear_group_cuda_test.cc and fused_swiglu_cuda_test.cc.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/cuda/fused_gemm.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::bf16_act;
using gputest::cpu;
using gputest::Decode;
using gputest::expect_bitwise;
using gputest::expect_same_bytes;
using gputest::gpu;
using gputest::kBf16ActTol;
using gputest::kernels_launched;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;
using gputest::swiglu_ref;

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

// rms_norm_fwd_bf16 is rms_norm then f32_to_bf16, bit for bit, and its optional f32 outputs are
// rms_norm's: H not a multiple of 4, 8 or of the block's 256 threads, through every kernel (a
// block per row below 2048 rows, a warp per row replaying that block's sums from 2048), one row
// and more rows than one grid (65535 blocks of 8 rows, so warps loop), rows that start off a
// 16-byte boundary, rows of zeros (eps = 0: inf * 0 = NaN), a NaN, huge values.
TEST(FusedLinearCuda, RmsNormBf16IsBitwiseRmsNormThenCast) {
  GYRE_SKIP_WITHOUT_GPU();
  // H % 4 == 0 up to 2048 (4, 132, 896, 1536, 2048): the warp kernel holding the row in
  // registers; 2052: its loop kernel's float4 path; the rest its scalar path.
  for (int64_t H : {4, 5, 13, 132, 259, 896, 1536, 2048, 2052, 4863}) {
    for (int64_t M : {1, 3, 300, 2047, 2048, 4099, 65537, 524300}) {
      // 524300 rows: more than the grid's 65535 blocks of 8 rows, so warps loop.
      if (M * H > 8'000'000 && !(H == 5 && M == 524300)) continue;
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
  // H % 4 == 0 but rows that start off a 16-byte boundary (x one float into its buffer): the
  // scalar paths, the same bits — of the block kernel (37 rows) and of the warp kernel (4099).
  for (const int64_t M : {37, 4099}) {
    const int64_t H = 896;
    Tensor buf = gpu(randn({M * H + 1}, 811, 2.0f)), gnw = gpu(randn({H}, 812));
    const std::vector<float> all = cpu(buf).to_vector();
    Tensor gx = gpu(Tensor::from_vector(std::vector<float>(all.begin() + 1, all.end()), {M, H}));
    Tensor xn, rstd;
    ops::rms_norm(gx, gnw, 1e-6f, xn, rstd);
    Tensor want = Tensor::empty({M, H}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(xn.f32(), static_cast<uint16_t*>(want.raw()), M * H);
    Tensor got = Tensor::empty({M, H}, DType::bf16, Device::cuda);
    cuda::rms_norm_fwd_bf16(buf.f32() + 1, gnw.f32(), M, H, 1e-6, static_cast<uint16_t*>(got.raw()),
                            nullptr, nullptr);
    expect_same_bytes(got, want, "misaligned rows, M " + std::to_string(M));
  }
}

}  // namespace
}  // namespace gyre
