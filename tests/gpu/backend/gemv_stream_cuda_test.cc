// The streamed batch-1 GEMVs (backend/cuda/gemv_stream.h: weights copied into a shared-memory ring
// by cp.async.bulk) against the register kernels they replace (gemv_fused.cu at M = 1, which the
// FusedLinearCuda / FusedSwiGluCuda tests hold bitwise to the unfused ops): bit for bit, for
// gate/up + SiLU·mul and the grouped linears (q/k/v) with and without the RMSNorm prologue (and
// its side outputs) and for the residual linears, unsplit and split-K rows (S = 4, K >= 4096), the
// Qwen2.5-0.5B / 1.5B shapes, odd and tiny N, with and without biases, in place, and rings of 2 and
// 7 stages (so each stage's mbarrier goes through many phases), at M = 1, 3 and 8 rows of x (each
// row's sums in the register kernels' order). Also: the streamed path is the one taken when
// switched on, only up to gemv_stream_max_rows() rows, and it declines rows whose ring would not
// fit in shared memory. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/gemv_stream.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

// Lets every row count take the streamed kernels, and restores the defaults when a test ends.
struct StreamMode {
  StreamMode() { cuda::set_gemv_stream_max_rows(cuda::kGemvStreamMaxRows); }
  ~StreamMode() {
    cuda::set_gemv_stream_mode(-1);
    cuda::set_gemv_stream_ring_bytes(0);
    cuda::set_gemv_stream_max_rows(0);
  }
};

// The row counts every bitwise test runs: batch 1, an odd batch, the most rows.
const int64_t kRows[] = {1, 3, 8};

void expect_same(const Tensor& got, const Tensor& want, const std::string& what) {
  const std::vector<float> g = cpu(got).to_vector(), w = cpu(want).to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  size_t first = g.size();
  for (size_t i = 0; i < g.size(); ++i)
    if (std::memcmp(&g[i], &w[i], sizeof(float)) != 0) {
      first = i;
      break;
    }
  EXPECT_EQ(first, g.size()) << what << ": first differing element " << first << " of " << g.size()
                             << " (" << (first < g.size() ? g[first] : 0.0f) << " vs "
                             << (first < g.size() ? w[first] : 0.0f) << ")";
}

Tensor bf16_weight(int64_t N, int64_t K, uint64_t seed) {
  return gpu(randn({N, K}, seed, 0.05f).to(DType::bf16));
}
const uint16_t* u16(const Tensor& t) { return t.data<uint16_t>(); }
Tensor filled(const Shape& s, float v) { return gpu(Tensor::full(s, v)); }

// A weight's output columns N and row length K.
struct Shape2 {
  int64_t N, K;
};

// 96 KB (the default: ring 2..7 by shape) and the extremes of the ring (1 GB: the most that fits).
const int64_t kRingBytes[] = {96 * 1024, 1, int64_t(1) << 30};

TEST(GemvStreamCuda, SiluMulIsBitwiseTheRegisterKernel) {
  GYRE_SKIP_WITHOUT_GPU();
  StreamMode restore;
  // 1.5B / 0.5B gate/up, split-K rows (4096: S = 4; 4104 odd past it), tiny and odd N.
  for (Shape2 s : {Shape2{8960, 1536}, Shape2{4864, 896}, Shape2{133, 4096}, Shape2{300, 4104},
                   Shape2{37, 64}, Shape2{1, 8}}) {
    const int64_t N = s.N, K = s.K;
    Tensor wg = bf16_weight(N, K, 10 + N), wu = bf16_weight(N, K, 11 + N);
    Tensor bg = gpu(randn({N}, 12)), bu = gpu(randn({N}, 13)), nw = gpu(randn({K}, 15));
    for (int64_t M : kRows)
      for (bool norm : {true, false})
        for (bool bias : {true, false})
          for (int64_t ring : kRingBytes) {
            Tensor x = gpu(randn({M, K}, 14 + K + M, 3.0f));
            const std::string what = "M " + std::to_string(M) + " N " + std::to_string(N) + " K " +
                                     std::to_string(K) + (norm ? " norm" : "") +
                                     (bias ? " bias" : "") + " ring bytes " + std::to_string(ring);
            SCOPED_TRACE(what);
            cuda::set_gemv_stream_ring_bytes(ring);
            // Different sentinels: a launch that wrote nothing cannot pass.
            Tensor want = filled({M, N}, -3.5f), got = filled({M, N}, -7.25f);
            Tensor xn_want = filled({M, K}, -3.5f), xn_got = filled({M, K}, -7.25f);
            Tensor rs_want = filled({M}, -3.5f), rs_got = filled({M}, -7.25f);
            const float* pbg = bias ? bg.f32() : nullptr;
            const float* pbu = bias ? bu.f32() : nullptr;
            for (int on : {0, 1}) {
              cuda::set_gemv_stream_mode(on ? cuda::kGemvStreamSiluMul : 0);
              Tensor& y = on ? got : want;
              if (norm) {
                cuda::RmsPrologue n;
                n.w = nw.f32(), n.eps = 1e-6, n.xn = (on ? xn_got : xn_want).f32();
                n.rstd = (on ? rs_got : rs_want).f32();
                EXPECT_EQ(cuda::gemv_stream_silu_mul(x.f32(), &n, u16(wg), pbg, u16(wu), pbu, M, N,
                                                     K, y.f32()),
                          bool(on));
                // And through the public entry point (the same kernel: the same bits again).
                cuda::linear_gemv_bf16_silu_mul_rms(x.f32(), n, u16(wg), pbg, u16(wu), pbu, M, N, K,
                                                    y.f32());
              } else {
                cuda::linear_gemv_bf16_silu_mul(x.f32(), u16(wg), pbg, u16(wu), pbu, M, N, K,
                                                y.f32());
              }
            }
            expect_same(got, want, "silu_mul");
            if (norm) {
              expect_same(xn_got, xn_want, "rms_norm side output");
              expect_same(rs_got, rs_want, "rstd side output");
            }
          }
  }
}

TEST(GemvStreamCuda, ResidualIsBitwiseTheRegisterKernelAndInPlace) {
  GYRE_SKIP_WITHOUT_GPU();
  StreamMode restore;
  // 1.5B down / o_proj, 0.5B down, split-K past the deep batch (9224), short rows.
  for (Shape2 s : {Shape2{1536, 8960}, Shape2{1536, 1536}, Shape2{896, 4864}, Shape2{131, 9224},
                   Shape2{33, 264}, Shape2{5, 8}}) {
    const int64_t N = s.N, K = s.K;
    Tensor w = bf16_weight(N, K, 20 + N), b = gpu(randn({N}, 21));
    for (int64_t M : kRows)
      for (bool bias : {true, false})
        for (int64_t ring : kRingBytes) {
          Tensor x = gpu(randn({M, K}, 22 + K + M)), r = gpu(randn({M, N}, 23 + M));
          const std::string what = "M " + std::to_string(M) + " N " + std::to_string(N) + " K " +
                                   std::to_string(K) + (bias ? " bias" : "") + " ring bytes " +
                                   std::to_string(ring);
          SCOPED_TRACE(what);
          cuda::set_gemv_stream_ring_bytes(ring);
          const float* pb = bias ? b.f32() : nullptr;
          Tensor want = filled({M, N}, -3.5f), got = filled({M, N}, -7.25f);
          cuda::set_gemv_stream_mode(0);
          cuda::linear_gemv_bf16_residual(x.f32(), u16(w), pb, r.f32(), M, N, K, want.f32());
          cuda::set_gemv_stream_mode(cuda::kGemvStreamAll);
          // Every shape here fits (8 staged rows of 9224 and a ring of 2 columns: 216 KB).
          EXPECT_TRUE(cuda::gemv_stream_residual(x.f32(), u16(w), pb, r.f32(), M, N, K, got.f32()));
          expect_same(got, want, "residual");
          Tensor in_place = r.clone();
          cuda::linear_gemv_bf16_residual(x.f32(), u16(w), pb, in_place.f32(), M, N, K,
                                          in_place.f32());
          expect_same(in_place, want, "in place");
        }
  }
}

TEST(GemvStreamCuda, GroupIsBitwiseTheRegisterKernel) {
  GYRE_SKIP_WITHOUT_GPU();
  StreamMode restore;
  struct GroupCase {
    int64_t K;
    std::vector<int64_t> n;
  };
  // 1.5B / 0.5B q/k/v, four members with odd sizes, split-K rows (S = 4), one tiny member.
  for (const GroupCase& gc :
       {GroupCase{1536, {1536, 256, 256}}, GroupCase{896, {896, 128, 128}},
        GroupCase{64, {37, 5, 1, 130}}, GroupCase{4096, {300, 64, 64}}, GroupCase{8, {3}}}) {
    const int64_t K = gc.K;
    std::vector<Tensor> w, b;
    for (size_t i = 0; i < gc.n.size(); ++i) {
      w.push_back(bf16_weight(gc.n[i], K, 40 + i));
      b.push_back(gpu(randn({gc.n[i]}, 50 + i)));
    }
    Tensor nw = gpu(randn({K}, 61));
    for (int64_t M : kRows)
      for (bool norm : {true, false})
        for (bool bias : {true, false})
          for (int64_t ring : kRingBytes) {
            Tensor x = gpu(randn({M, K}, 60 + K + M, 3.0f));
            const std::string what = "M " + std::to_string(M) + " K " + std::to_string(K) +
                                     " members " + std::to_string(gc.n.size()) +
                                     (norm ? " norm" : "") + (bias ? " bias" : "") +
                                     " ring bytes " + std::to_string(ring);
            SCOPED_TRACE(what);
            cuda::set_gemv_stream_ring_bytes(ring);
            std::vector<Tensor> want, got;
            for (int64_t n : gc.n) {
              want.push_back(filled({M, n}, -3.5f));
              got.push_back(filled({M, n}, -7.25f));
            }
            Tensor xn_want = filled({M, K}, -3.5f), xn_got = filled({M, K}, -7.25f);
            for (int on : {0, 1}) {
              cuda::set_gemv_stream_mode(on ? cuda::kGemvStreamGroup : 0);
              cuda::GemvGroup g;
              g.count = int(gc.n.size());
              for (int i = 0; i < g.count; ++i) {
                g.w[i] = u16(w[size_t(i)]), g.b[i] = bias ? b[size_t(i)].f32() : nullptr;
                g.y[i] = (on ? got : want)[size_t(i)].f32(), g.n[i] = gc.n[size_t(i)];
              }
              if (norm) {
                cuda::RmsPrologue n;
                n.w = nw.f32(), n.eps = 1e-6, n.xn = (on ? xn_got : xn_want).f32();
                EXPECT_EQ(cuda::gemv_stream_group(x.f32(), &n, g, M, K), bool(on));
                cuda::linear_gemv_bf16_group_rms(x.f32(), n, g, M, K);
              } else {
                cuda::linear_gemv_bf16_group(x.f32(), g, M, K);
              }
            }
            for (size_t i = 0; i < gc.n.size(); ++i)
              expect_same(got[i], want[i], "member " + std::to_string(i));
            if (norm) expect_same(xn_got, xn_want, "rms_norm side output");
          }
  }
}

TEST(GemvStreamCuda, TakenOnlyWhereSwitchedOnUpToItsRowsAndWhereTheRingFits) {
  GYRE_SKIP_WITHOUT_GPU();
  StreamMode restore;
  const int64_t N = 16, K = 1536, Ks = 8960;
  Tensor w = bf16_weight(N, Ks, 30), x = gpu(randn({2, Ks}, 31)), r = gpu(randn({2, N}, 32));
  Tensor y = Tensor::empty({2, N}, DType::f32, Device::cuda);
  const auto residual = [&](int64_t M, int64_t k) {
    return cuda::gemv_stream_residual(x.f32(), u16(w), nullptr, r.f32(), M, N, k, y.f32());
  };
  cuda::set_gemv_stream_mode(cuda::kGemvStreamResidual);  // unsplit rows only
  EXPECT_TRUE(residual(1, K));
  EXPECT_FALSE(residual(1, Ks));
  EXPECT_TRUE(residual(2, K));
  cuda::set_gemv_stream_max_rows(1);  // batch 1 only: two rows take the register kernel
  EXPECT_TRUE(residual(1, K));
  EXPECT_FALSE(residual(2, K));
  cuda::set_gemv_stream_max_rows(cuda::kGemvStreamMaxRows);
  EXPECT_FALSE(residual(9, K));  // past the kernel's rows (x has 2, nothing is read)
  cuda::set_gemv_stream_mode(cuda::kGemvStreamResidualSplit);  // split-K rows only
  EXPECT_FALSE(residual(1, K));
  EXPECT_TRUE(residual(1, Ks));
  cuda::set_gemv_stream_mode(cuda::kGemvStreamSiluMul);
  EXPECT_FALSE(residual(1, K));
  cuda::set_gemv_stream_mode(cuda::kGemvStreamSiluMul);
  // A gate/up row pair of 2 x 128 KB cannot fit in one block's shared memory: declined.
  const int64_t Kbig = 65536;
  Tensor wb = bf16_weight(2, Kbig, 33), xb = gpu(randn({1, Kbig}, 34));
  Tensor yb = Tensor::empty({1, 2}, DType::f32, Device::cuda);
  EXPECT_FALSE(cuda::gemv_stream_silu_mul(xb.f32(), nullptr, u16(wb), nullptr, u16(wb), nullptr, 1,
                                          2, Kbig, yb.f32()));
  cuda::sync();
}

}  // namespace
}  // namespace gyre
