// The fused linear + residual on CUDA (ops::linear_add_residual, backend/fused_linear_ops.h: the
// decode layer's o_proj and down_proj with the residual add). On the bf16 GEMV path (autocast +
// weight cache, M = 1..8, backend/cuda/gemv_fused.cu) it is ONE kernel and bitwise linear then add
// on the same path, with odd N, with and without bias, split-K (K = 4864; 8960 and 9216 with each
// lane's share in one deeper batch at M = 1) and in place; within 1e-5
// of the CPU f32 ops on bf16-rounded operands; without the weight cache the unfused ops run. Past
// the GEMV's rows (M = 9, 64, 256, 300) it is bitwise the unfused cuBLASLt path, the residual in
// the GEMM's epilogue where that is bitwise (backend/cuda/fused_gemm.h): one kernel (the add) fewer
// without a bias. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

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

TEST(FusedLinearCuda, AddResidualIsOneKernelAndBitwiseLinearThenAdd) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  // K 8960 and 9216: 8.75 and 9 vectors a lane at S = 4 — the deeper one-batch kernel at M = 1
  // (gemv::deep_batch_for); 9224 (10 a lane) is past it again.
  for (int64_t K : {4864, 8960, 9216, 9224, 264}) {
    const int64_t N = K == 4864 ? 895 : (K > 4864 ? 131 : 33);
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

// A bf16 x (the attention's bf16 output feeding o_proj, rope_attention_ops.h) gives bitwise the
// op on the f32 tensor holding the same values: past 8 rows without a bias the residual GEMM reads
// x as its operand directly (one kernel fewer: no input cast), elsewhere — 1..8 rows (the GEMV), a
// bias, a view off cuBLASLt's 256-byte alignment — x is widened first. With and without a weight
// cache; y separate, the residual itself, or allocated. Outside autocast a bf16 x is an error.
TEST(FusedLinearCuda, AddResidualOverABf16XIsTheF32OpOnTheSameValues) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t K = 896, N = 896;
  Tensor gw = gpu(randn({N, K}, 1200, 0.05f)), gb = gpu(randn({N}, 1201)), none;
  for (bool cached : {false, true}) {
    ops::Bf16WeightCache cache;
    ops::Bf16Autocast autocast;
    std::optional<ops::UseBf16WeightCache> use;
    if (cached) use.emplace(&cache);
    for (int64_t M : {1, 8, 9, 300}) {
      for (bool bias : {false, true}) {
        SCOPED_TRACE(std::string(cached ? "cache" : "no cache") + " M " + std::to_string(M) +
                     (bias ? " bias" : ""));
        // x16 holds bf16 values; x32 the same values in f32.
        Tensor x32 = gpu(round_bf16(randn({M, K}, 1210 + M))), gr = gpu(randn({M, N}, 1220 + M));
        Tensor x16 = Tensor::empty({M, K}, DType::bf16, Device::cuda);
        ops::copy(x32, x16);
        const Tensor& pb = bias ? gb : none;
        Tensor want;
        ops::linear_add_residual(x32, gw, pb, gr, want);
        Tensor y;
        ops::linear_add_residual(x16, gw, pb, gr, y);
        expect_bitwise(y, want, "allocated y");
        Tensor in_place = gr.clone();
        ops::linear_add_residual(x16, gw, pb, in_place, in_place);
        expect_bitwise(in_place, want, "y is the residual");
        if (M == 300) {
          // A bf16 view 8 elements into its storage: off the 256-byte alignment.
          Tensor big = Tensor::empty({M * K + 8}, DType::bf16, Device::cuda);
          Tensor view = big.narrow(8, M * K).reshape({M, K});
          ops::copy(x16, view);
          Tensor yv;
          ops::linear_add_residual(view, gw, pb, gr, yv);
          expect_bitwise(yv, want, "misaligned bf16 view");
          if (!bias) {
            const size_t n16 = kernels_warm([&] { ops::linear_add_residual(x16, gw, pb, gr, y); });
            const size_t n32 = kernels_warm([&] { ops::linear_add_residual(x32, gw, pb, gr, y); });
            EXPECT_EQ(n32 - n16, 1u) << "the input cast";
          }
        }
      }
    }
  }
  Tensor x16 = Tensor::empty({9, K}, DType::bf16, Device::cuda), y;
  ops::copy(gpu(randn({9, K}, 1)), x16);
  try {
    ops::linear_add_residual(x16, gw, none, gpu(randn({9, N}, 2)), y);
    ADD_FAILURE() << "a bf16 x outside autocast must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside an ops::Bf16Autocast scope"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace gyre
