// The rest of the FusedLinearCuda suite: ops::linear_backward under autocast over bf16 dy and/or x
// (the training backward's act, dgate, dup), the fused rope_qk_ (backend/fused_rope_ops.h) bitwise
// rope_ on q then on k, and the fused ops' errors naming tensors on two devices. The fused linears
// by op family: fused_linear_group_cuda_test.cc (q/k/v), fused_swiglu_cuda_test.cc (gate/up and the
// whole MLP), fused_residual_cuda_test.cc (o_proj / down_proj + residual), fused_rms_cuda_test.cc
// (the RMSNorm-folded ops on the GEMV path, rms_norm_fwd_bf16); their helpers:
// fused_linear_test_util.h. Skips without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/fused_rope_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::expect_bitwise;
using gputest::expect_same_bytes;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;

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

// A bf16 dx (o_proj's into the fused attention backward, down_proj's into silu_mul_backward): the
// f32 accumulation rounded once. Integer operands make every sum exact whatever the GEMM's order
// (|sums| < 2^24), so dx must be the round-to-nearest-even of the exact value bit for bit (values
// past 256 have spacings >= 2: ties are frequent, and a double rounding would show); dw and db are
// those of the f32-dx call. Errors: outside autocast, with accumulate_dx, on the CPU.
TEST(FusedLinearCuda, LinearBackwardWritesBf16DxRoundedOnce) {
  GYRE_SKIP_WITHOUT_GPU();
  const auto ints = gputest::small_ints;
  ops::Bf16WeightCache cache;
  const int64_t N = 96, K = 136;
  const Tensor w = ints({N, K}, 1420, 16.0f);
  const Tensor gw = gpu(w);
  for (int64_t M : {1, 9, 300}) {
    for (bool cached : {false, true}) {
      for (bool dy_bf16 : {false, true}) {
        SCOPED_TRACE("M " + std::to_string(M) + (cached ? " cache" : "") +
                     (dy_bf16 ? " bf16 dy" : ""));
        const Tensor dy = ints({M, N}, 1421 + M, 16.0f), x = ints({M, K}, 1422 + M, 16.0f);
        const Tensor gdy = dy_bf16 ? gpu(dy.to(DType::bf16)) : gpu(dy);
        Tensor dx16 = Tensor::empty({M, K}, DType::bf16, Device::cuda), dx32;
        Tensor dw = gpu(Tensor::zeros({N, K})), dw32 = dw.clone();
        Tensor db = dy_bf16 ? Tensor() : gpu(Tensor::zeros({N})),
               db32 = db.defined() ? db.clone() : Tensor();
        {
          ops::Bf16Autocast autocast;
          ops::UseBf16WeightCache use(cached ? &cache : nullptr);
          ops::linear_backward(gdy, gpu(x), gw, dx16, dw, db);
          ops::linear_backward(gdy, gpu(x), gw, dx32, dw32, db32);
        }
        // dx = dy · w, exact in double (integers), then rounded to nearest even.
        const std::vector<float> dyv = dy.to_vector(), wv = w.to_vector();
        std::vector<float> exact(size_t(M * K));
        for (int64_t r = 0; r < M; ++r)
          for (int64_t k = 0; k < K; ++k) {
            double acc = 0;
            for (int64_t n = 0; n < N; ++n)
              acc += double(dyv[size_t(r * N + n)]) * wv[size_t(n * K + k)];
            exact[size_t(r * K + k)] = float(acc);
          }
        const Tensor want = Tensor::from_vector(exact, {M, K}).to(DType::bf16);
        expect_same_bytes(dx16, gpu(want), "bf16 dx");
        expect_same_bytes(dw, dw32, "dw");
        if (db.defined()) expect_same_bytes(db, db32, "db");
      }
    }
  }
  Tensor dy = gpu(randn({9, 8}, 1430)), x = gpu(randn({9, 16}, 1431)),
         w8 = gpu(randn({8, 16}, 1432));
  Tensor dx16 = Tensor::empty({9, 16}, DType::bf16, Device::cuda), dw, db;
  EXPECT_THROW(ops::linear_backward(dy, x, w8, dx16, dw, db), Error);  // no autocast
  {
    ops::Bf16Autocast autocast;
    EXPECT_THROW(ops::linear_backward(dy, x, w8, dx16, dw, db, /*accumulate_dx=*/true), Error);
  }
  Tensor cdx16 = Tensor::empty({9, 16}, DType::bf16);
  EXPECT_THROW(ops::linear_backward(cpu(dy), cpu(x), cpu(w8), cdx16, dw, db), Error);
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
