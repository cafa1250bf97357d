// The fused linear group on CUDA (ops::linear_group, backend/fused_linear_ops.h: the decode layer's
// q/k/v projections over one input). On the bf16 GEMV path (autocast + weight cache, M = 1..8,
// backend/cuda/gemv_fused.cu) it is ONE kernel and bitwise ops::linear per member on the same path,
// with odd N and with and without bias, for rows short enough for one warp per column and long
// enough for split-K (K >= 4096: 4 warps per column, gemv_bf16_common.cuh; K = 4104 leaves the
// first warp one vector more than the others), more members than one launch takes; within the
// GEMV tests' bound (1e-5) of the CPU f32 ops on bf16-rounded operands; and off that path (M = 9,
// K % 8 != 0) it runs the unfused ops. Past the GEMV's rows (M = 9, 64, 256, 300) linear_group and
// rms_norm_linear_group are bitwise the unfused cuBLASLt path with one bf16 input per group
// (backend/cuda/fused_gemm.h): fewer kernels by exactly the casts (and the norm) they save. The
// RMSNorm-folded group on the GEMV path: fused_rms_cuda_test.cc. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::Decode;
using gputest::expect_bitwise;
using gputest::gpu;
using gputest::kernels_if_gemv;
using gputest::kernels_warm;
using gputest::kGemmRows;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

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

}  // namespace
}  // namespace gyre
