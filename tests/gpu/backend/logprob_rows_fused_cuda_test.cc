// The fused one-pass log-prob row kernel (cuda::logprob_rows_fused, backend/cuda/
// logprob_rows_fused.cu) against the three kernels it replaces on the same f32 logits
// (logprob_chunk_stats with C = V, logprob_chunk_finish, logprob_chunk_bwd_bf16): logp / lse /
// entropy within 2e-6 (1 + |value|); dz bit for bit logprob_chunk_bwd_bf16 given the fused
// kernel's own lse / entropy, and within 1 bf16 ulp plus the propagated lse / entropy difference of
// the three kernels' dz; the same bits on a second run, from a sub-batch of rows, with the entropy
// output dropped, and written in place over the logits. V = 151936 (cluster of 8), 100000 (4),
// 60001 (4, not a multiple of 4), 40000 (2), 4099 / 17 / 1 (1, element loads); n = 0, 1, 3, 130;
// temperature 1 and 0.7; dentropy on and off; targets -1; -inf logits, and slices holding nothing
// else. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/cuda/logprob_rows_fused.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

constexpr int64_t kMaxRows = 130;

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor h = cpu(t);
  std::vector<uint8_t> b(h.nbytes());
  if (!b.empty()) std::memcpy(b.data(), h.raw(), b.size());
  return b;
}

std::vector<uint8_t> rows_bytes(const std::vector<uint8_t>& all, int64_t r0, int64_t r1,
                                size_t row_bytes) {
  return std::vector<uint8_t>(all.begin() + r0 * int64_t(row_bytes),
                              all.begin() + r1 * int64_t(row_bytes));
}

// Targets: t % 7 == 2 none (-1), else spread over the vocabulary; row 0 the last column.
std::vector<int32_t> make_targets(int64_t n, int64_t V) {
  std::vector<int32_t> tg(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) tg[size_t(t)] = t % 7 == 2 ? -1 : int32_t((t * 131 + 5) % V);
  if (n > 0) tg[0] = int32_t(V - 1);
  return tg;
}

// Logits [n, V] (scale 3) with -inf by row t % 5: 1 every third column, 2 all columns (so most of
// a cluster's slices hold nothing but -inf), 4 the first half; never the target's column nor the
// last one (no row is fully masked: its statistics would be NaN in every path).
std::vector<float> make_logits(int64_t n, int64_t V, const std::vector<int32_t>& tg) {
  std::vector<float> z = randn({n, V}, 90 + uint64_t(V), 3.0f).to_vector();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < V - 1; ++j) {
      const int k = int(t % 5);
      const bool masked = (k == 1 && j % 3 == 0) || k == 2 || (k == 4 && j < V / 2);
      if (masked && j != tg[size_t(t)]) z[size_t(t * V + j)] = -INFINITY;
    }
  return z;
}

// One bf16 unit in the last place at the magnitude of v (>= the smallest normal's).
double bf16_ulp(double v) {
  const double a = std::max(std::fabs(v), 1.1754943508222875e-38);
  return std::ldexp(1.0, int(std::floor(std::log2(a))) - 7);
}

struct Outs {
  Tensor logp, entropy, lse, dz;
  explicit Outs(int64_t n, int64_t V)
      : logp(Tensor::empty({n}, DType::f32, Device::cuda)),
        entropy(Tensor::empty({n}, DType::f32, Device::cuda)),
        lse(Tensor::empty({n}, DType::f32, Device::cuda)),
        dz(Tensor::empty({n, V}, DType::bf16, Device::cuda)) {}
};

TEST(LogprobRowsFusedCuda, MatchesTheThreeChunkKernels) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t V : {151936, 100000, 60001, 40000, 4099, 17, 1}) {
    const int K = cuda::logprob_rows_fused_cluster(V);
    SCOPED_TRACE(testing::Message() << "V " << V << " cluster " << K);
    ASSERT_GT(K, 0);
    EXPECT_EQ(K, V == 151936 || V == 100000 || V == 60001 ? (V == 151936 ? 8 : 4)
                 : V == 40000                             ? 2
                                                          : 1);
    const std::vector<int32_t> tg = make_targets(kMaxRows, V);
    const std::vector<float> z = make_logits(kMaxRows, V, tg);
    const std::vector<float> dlogp = randn({kMaxRows}, 91).to_vector(),
                             dent = randn({kMaxRows}, 92, 0.3f).to_vector();
    const Tensor z_g = gpu(Tensor::from_vector(z, {kMaxRows, V}));
    const Tensor tg_g = gpu(Tensor::from_vector(tg, {kMaxRows}));
    const Tensor dlogp_g = gpu(Tensor::from_vector(dlogp, {kMaxRows}));
    const Tensor dent_g = gpu(Tensor::from_vector(dent, {kMaxRows}));
    for (int64_t n : {0, 1, 3, 130}) {
      for (float tau : {1.0f, 0.7f}) {
        for (bool with_dent : {true, false}) {
          SCOPED_TRACE(testing::Message() << "n " << n << " tau " << tau
                                          << (with_dent ? " dentropy" : " no dentropy"));
          const float* dent_p = with_dent ? dent_g.f32() : nullptr;
          // The three kernels.
          Outs ref(n, V);
          Tensor stats = Tensor::empty({std::max<int64_t>(n, 1), 4}, DType::f32, Device::cuda);
          cuda::logprob_chunk_stats(z_g.f32(), tg_g.i32(), n, V, 0, tau, false, stats.f32());
          cuda::logprob_chunk_finish(stats.f32(), tg_g.i32(), n, ref.logp.f32(), ref.entropy.f32(),
                                     ref.lse.f32());
          cuda::logprob_chunk_bwd_bf16(z_g.f32(), tg_g.i32(), n, V, 0, tau, ref.lse.f32(),
                                       ref.entropy.f32(), dlogp_g.f32(), dent_p,
                                       ref.dz.data<uint16_t>());
          // The fused kernel, dz into its own buffer.
          Outs got(n, V);
          cuda::logprob_rows_fused(z_g.f32(), tg_g.i32(), n, V, tau, dlogp_g.f32(), dent_p,
                                   got.logp.f32(), got.entropy.f32(), got.lse.f32(),
                                   got.dz.data<uint16_t>(), V);
          if (n == 0) continue;  // nothing launched, nothing to compare
          // The statistics: elementwise within 2e-6 (1 + |ref|); logp exactly 0 without a target.
          for (auto [g, w, what] :
               {std::tuple{&got.logp, &ref.logp, "logp"}, std::tuple{&got.lse, &ref.lse, "lse"},
                std::tuple{&got.entropy, &ref.entropy, "entropy"}}) {
            const Tensor want = cpu(*w);
            std::vector<double> tol;
            for (float v : want.to_vector()) tol.push_back(2e-6 * (1.0 + std::fabs(double(v))));
            gputest::expect_within(cpu(*g), want, tol, what);
          }
          const std::vector<float> lp = cpu(got.logp).to_vector();
          for (int64_t t = 0; t < n; ++t) {
            if (tg[size_t(t)] < 0) {
              EXPECT_EQ(lp[size_t(t)], 0.0f) << "row " << t;
            }
          }
          // dz: bit for bit the backward kernel run on the fused kernel's own lse / entropy.
          const std::vector<uint8_t> dz_bits = bytes_of(got.dz);
          {
            Tensor self = Tensor::empty({n, V}, DType::bf16, Device::cuda);
            cuda::logprob_chunk_bwd_bf16(z_g.f32(), tg_g.i32(), n, V, 0, tau, got.lse.f32(),
                                         got.entropy.f32(), dlogp_g.f32(), dent_p,
                                         self.data<uint16_t>());
            EXPECT_TRUE(bytes_of(self) == dz_bits) << "dz vs bwd_bf16 on the fused lse / entropy";
          }
          // dz against the three kernels' dz: 1 bf16 ulp (the two roundings) plus the change that
          // the lse / entropy differences (and the f32 roundings they move) propagate through
          // dz_value: d dz = mul·p·(|g_lp| + |g_h|(|lp + h| + 1))·δ, δ = |ΔL| + |ΔH| + 2^-22·(|z|
          // + |L| + |h| + 1). Counted too: how many exceed 1 ulp (only where dz's terms cancel).
          {
            // bf16 tensors read back as their f32 values.
            const std::vector<float> a = cpu(got.dz).to_vector(), b = cpu(ref.dz).to_vector();
            const std::vector<float> L1 = cpu(got.lse).to_vector(), L0 = cpu(ref.lse).to_vector(),
                                     H1 = cpu(got.entropy).to_vector(),
                                     H0 = cpu(ref.entropy).to_vector();
            const double mul = double(1.0f / tau), eps = std::ldexp(1.0, -22);
            int64_t bad = 0, over_ulp = 0;
            for (int64_t t = 0; t < n; ++t) {
              const double g_lp = tg[size_t(t)] < 0 ? 0.0 : dlogp[size_t(t)];
              const double g_h = with_dent ? dent[size_t(t)] : 0.0;
              const double h = g_h != 0 ? H0[size_t(t)] : 0.0, L = L0[size_t(t)];
              const double delta = std::fabs(double(L1[size_t(t)]) - L) +
                                   (g_h != 0 ? std::fabs(double(H1[size_t(t)]) - h) : 0.0);
              for (int64_t j = 0; j < V; ++j) {
                const size_t i = size_t(t * V + j);
                const double x = double(z[i]) * mul, lp = x - L;
                const double p = std::isinf(x) ? 0.0 : std::exp(lp);
                const double hit = j == tg[size_t(t)] ? std::fabs(g_lp) : 0.0;
                const double d = delta + eps * (std::fabs(x) + std::fabs(L) + std::fabs(h) + 1);
                const double prop =
                    2 * mul *
                    (p * (std::fabs(g_lp) + std::fabs(g_h) * (std::fabs(lp + h) + 1)) * d +
                     eps * hit);
                const double va = a[i], vb = b[i];
                const double diff = std::fabs(va - vb);
                const double ulp = bf16_ulp(std::max(std::fabs(va), std::fabs(vb)));
                over_ulp += diff > ulp;
                if (!(diff <= ulp + prop) && ++bad <= 3)
                  ADD_FAILURE() << "dz[" << t << ", " << j << "]: fused " << va << " three kernels "
                                << vb << " bound " << ulp + prop;
              }
            }
            EXPECT_EQ(bad, 0);
            std::printf("V %lld n %lld tau %g%s: %lld of %lld dz elements > 1 bf16 ulp apart\n",
                        (long long)V, (long long)n, double(tau), with_dent ? " dentropy" : "",
                        (long long)over_ulp, (long long)(n * V));
          }
          // Deterministic: a second run gives the same bits.
          {
            Outs again(n, V);
            cuda::logprob_rows_fused(z_g.f32(), tg_g.i32(), n, V, tau, dlogp_g.f32(), dent_p,
                                     again.logp.f32(), again.entropy.f32(), again.lse.f32(),
                                     again.dz.data<uint16_t>(), V);
            EXPECT_TRUE(bytes_of(again.dz) == dz_bits) << "second run dz";
            EXPECT_TRUE(bytes_of(again.logp) == bytes_of(got.logp)) << "second run logp";
            EXPECT_TRUE(bytes_of(again.entropy) == bytes_of(got.entropy)) << "second run entropy";
            EXPECT_TRUE(bytes_of(again.lse) == bytes_of(got.lse)) << "second run lse";
          }
          // Rows [1, n) alone: the same bits as in the full batch (a row's results do not depend on
          // the other rows of its launch). Entropy not written: the same dz, logp and lse.
          if (n > 1) {
            Outs sub(n - 1, V);
            cuda::logprob_rows_fused(z_g.f32() + V, tg_g.i32() + 1, n - 1, V, tau,
                                     dlogp_g.f32() + 1, with_dent ? dent_g.f32() + 1 : nullptr,
                                     sub.logp.f32(), nullptr, sub.lse.f32(),
                                     sub.dz.data<uint16_t>(), V);
            EXPECT_TRUE(bytes_of(sub.dz) == rows_bytes(dz_bits, 1, n, size_t(V) * 2))
                << "rows 1.. alone, dz";
            EXPECT_TRUE(bytes_of(sub.logp) == rows_bytes(bytes_of(got.logp), 1, n, 4))
                << "rows 1.. alone, logp";
            EXPECT_TRUE(bytes_of(sub.lse) == rows_bytes(bytes_of(got.lse), 1, n, 4))
                << "rows 1.. alone, lse";
          }
          // In place: bf16 row r over the first 2V bytes of f32 row r (ldz = 2V), the same bits.
          {
            Tensor zin = gpu(Tensor::from_vector(
                std::vector<float>(z.begin(), z.begin() + size_t(n * V)), {n, V}));
            Outs inpl(n, V);
            cuda::logprob_rows_fused(zin.f32(), tg_g.i32(), n, V, tau, dlogp_g.f32(), dent_p,
                                     inpl.logp.f32(), inpl.entropy.f32(), inpl.lse.f32(),
                                     reinterpret_cast<uint16_t*>(zin.f32()), 2 * V);
            const std::vector<uint8_t> zb = bytes_of(zin);
            std::vector<uint8_t> dz_in;
            for (int64_t t = 0; t < n; ++t)
              dz_in.insert(dz_in.end(), zb.begin() + t * V * 4, zb.begin() + t * V * 4 + V * 2);
            EXPECT_TRUE(dz_in == dz_bits) << "in place dz";
            EXPECT_TRUE(bytes_of(inpl.logp) == bytes_of(got.logp)) << "in place logp";
            EXPECT_TRUE(bytes_of(inpl.lse) == bytes_of(got.lse)) << "in place lse";
            EXPECT_TRUE(bytes_of(inpl.entropy) == bytes_of(got.entropy)) << "in place entropy";
          }
        }
      }
    }
  }
}

// The size limits: a row of 8 x 27648 logits fits a cluster of 8; one more logit does not
// (logprob_rows_fused_supported false: the one-pass head takes its three-kernel fallback); the
// process-wide switch turns the kernel off and back on.
TEST(LogprobRowsFusedCuda, SupportedSizesAndSwitch) {
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(1), 1);
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(27648), 1);
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(27649), 2);
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(151936), 8);
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(8 * 27648), 8);
  EXPECT_EQ(cuda::logprob_rows_fused_cluster(8 * 27648 + 1), 0);
  EXPECT_FALSE(cuda::logprob_rows_fused_supported(8 * 27648 + 1));
  EXPECT_TRUE(cuda::logprob_rows_fused_supported(151936));
  const bool prev = cuda::set_logprob_rows_fused_enabled(false);
  EXPECT_TRUE(prev);
  EXPECT_FALSE(cuda::logprob_rows_fused_supported(151936));
  EXPECT_FALSE(cuda::set_logprob_rows_fused_enabled(prev));
  EXPECT_TRUE(cuda::logprob_rows_fused_supported(151936));
}

}  // namespace
}  // namespace gyre
