// ops::linear_group_backward on CUDA (backend/linear_group_ops.h): under ops::Bf16Autocast the
// packed path (backend/cuda/pack_bf16.h: one bf16 dy for all members, ONE dX GEMM) against
//  - the per-member composition of linear_backward on the GPU in the same setting: db bitwise (the
//    same column sums of the same f32 dy); dW bitwise when cuBLASLt runs the same algorithm for the
//    packed slice (leading dimension ld = Σ round_up(N_i, 128) instead of N_i) — see kDwBitwise;
//    dx within the f32 accumulation-order bound below (same bf16 operands, the sum split
//    differently);
//  - the CPU f32 op on the bf16-rounded operands (what autocast computes: 1e-5 relative, as
//    autocast_cuda_test.cc) and on the original f32 operands within the bf16 rounding bound;
//  - itself: with and without an installed Bf16WeightCache, and with f32 x or the bf16 x holding
//    its rounding, the results are the same bits (the same operands into the same GEMMs).
// Shapes: q/k/v of Qwen2.5-0.5B (K 896, N 896/128/128) and -1.5B (K 1536, N 1536/256/256) with
// biases, accumulate_dx off and on; an odd one (K 9, N 3/5/16: padded packing). Outside autocast
// the op is the composition itself: bitwise. Skips without a GPU.
//
// Bounds (elementwise; u = 2^-24 the f32 unit roundoff, a product of two bf16 values is exact in
// f32). A sum of n terms in f32, in any order or blocking, is within γ_n·Σ|terms| of the exact sum
// (γ_n = n·u/(1 − n·u) <= (n + 1)·u here); an added C (beta = 1, accumulate) is one more term.
//  - group vs composition, same operands â = bf16(dy), ŵ = bf16(w): both are f32 sums of the same
//    Σ N_i products plus dx0, so |Δ| <= 2·γ_{ΣN+4}·(Σ|â||ŵ| + |dx0|) <= (ΣN + 5)·2^-23·(...).
//  - vs the CPU op on f32 operands: rounding each operand to bf16 (round to nearest, 8 significant
//    bits: relative error <= 2^-8) moves a product a·b by <= (2^-7 + 2^-16)|a||b|; add both sides'
//    f32 summation error (2·γ_{n+4}·S) and the error of computing S = Σ|a||b| itself in f32:
//    |Δ| <= (2^-7 + 2^-14 + (n + 8)·2^-21)·S + 2^-22·|c0| with c0 the accumulated-into start.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/linear_group_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::expect_within;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

// Whether dW is expected bitwise the composition's. cuBLASLt chooses the algorithm per problem,
// leading dimensions included (backend/cuda/gemm.cc keys its plans on them); the packed slice's ld
// differs from the per-member dy's N_i, so this is a property of cuBLASLt's heuristic on the test
// machine, checked here (the bound below holds either way).
constexpr bool kDwBitwise = true;

struct Case {
  int64_t M, K;
  std::vector<int64_t> ns;
};

// One group's tensors on the host (f32) and their GPU copies.
struct Group {
  Tensor x, dx0;
  std::vector<Tensor> dy, w, dw0, db0;
  Group(const Case& c, uint64_t seed) {
    x = randn({c.M, c.K}, seed, 2.0f);
    dx0 = randn({c.M, c.K}, seed + 1);
    for (size_t i = 0; i < c.ns.size(); ++i) {
      const uint64_t s = seed + 10 * (i + 1);
      dy.push_back(randn({c.M, c.ns[i]}, s, 0.5f));
      w.push_back(randn({c.ns[i], c.K}, s + 1, 0.05f));
      dw0.push_back(randn({c.ns[i], c.K}, s + 2));
      db0.push_back(randn({c.ns[i]}, s + 3));
    }
  }
};

// The outputs of one run: dx and each member's dw, db (host copies).
struct Grads {
  Tensor dx;
  std::vector<Tensor> dw, db;
};

// A bf16 CUDA tensor holding x's rounding (the values autocast rounds an f32 x to).
Tensor bf16_of(const Tensor& gx) {
  Tensor xb = Tensor::empty(gx.shape(), DType::bf16, Device::cuda);
  cuda::f32_to_bf16(gx.f32(), xb.data<uint16_t>(), gx.numel());
  return xb;
}

// Runs the group op (grouped) or the per-member composition on copies of g's tensors on `dev`;
// `round` replaces dy, w, x by their bf16 roundings first (the CPU reference of autocast).
Grads run(const Group& g, Device dev, bool grouped, bool accumulate, bool x_bf16 = false,
          bool round = false) {
  auto on = [&](const Tensor& t) { return t.to(dev); };
  auto r = [&](const Tensor& t) { return round ? round_bf16(t) : t; };
  Tensor x = on(r(g.x));
  if (x_bf16) x = bf16_of(x);
  Tensor dx = on(g.dx0).clone();
  std::vector<Tensor> dy, w, dw, db;
  for (size_t i = 0; i < g.dy.size(); ++i) {
    dy.push_back(on(r(g.dy[i])));
    w.push_back(on(r(g.w[i])));
    dw.push_back(on(g.dw0[i]).clone());
    db.push_back(on(g.db0[i]).clone());
  }
  if (round) {  // db sums the f32 dy (autocast rounds only the GEMM operands)
    for (size_t i = 0; i < g.dy.size(); ++i) {
      Tensor none, dyf = on(g.dy[i]), xin = on(g.x);
      ops::linear_backward(dyf, xin, w[i], none, none, db[i]);
    }
  }
  if (grouped) {
    std::vector<ops::LinearGroupMember> ms;
    for (size_t i = 0; i < dy.size(); ++i)
      ms.push_back({&dy[i], &w[i], &dw[i], round ? nullptr : &db[i]});
    ops::linear_group_backward(ms, x, dx, accumulate);
  } else {
    Tensor none;
    for (size_t i = 0; i < dy.size(); ++i)
      ops::linear_backward(dy[i], x, w[i], dx, dw[i], round ? none : db[i],
                           i == 0 ? accumulate : true);
  }
  Grads out{cpu(dx), {}, {}};
  for (size_t i = 0; i < dy.size(); ++i) out.dw.push_back(cpu(dw[i])), out.db.push_back(cpu(db[i]));
  return out;
}

void expect_bitwise(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << what;
}

std::vector<float> abs_of(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  for (float& x : v) x = std::fabs(x);
  return v;
}

// Σ|a||b| for dx (Σ_i |dy_i|·|w_i|, [M, K]) and each dW (|dy_i|^T·|x|, [N_i, K]), in f32 on the
// CPU; `round` takes the operands' bf16 roundings.
struct AbsProducts {
  std::vector<float> dx;
  std::vector<std::vector<float>> dw;
  std::vector<std::vector<float>> db;  // Σ_m |dy_i[m, n]|
};
AbsProducts abs_products(const Case& c, const Group& g, bool round) {
  auto r = [&](const Tensor& t) { return round ? round_bf16(t) : t; };
  AbsProducts s;
  s.dx.assign(size_t(c.M * c.K), 0.0f);
  const std::vector<float> ax = abs_of(r(g.x));
  for (size_t i = 0; i < c.ns.size(); ++i) {
    const int64_t N = c.ns[i];
    const std::vector<float> ady = abs_of(r(g.dy[i])), aw = abs_of(r(g.w[i]));
    ops::gemm(Device::cpu, false, false, c.M, c.K, N, 1.0f, ady.data(), N, aw.data(), c.K, 1.0f,
              s.dx.data(), c.K);
    std::vector<float> sw(size_t(N * c.K), 0.0f);
    ops::gemm(Device::cpu, true, false, N, c.K, c.M, 1.0f, ady.data(), N, ax.data(), c.K, 0.0f,
              sw.data(), c.K);
    s.dw.push_back(std::move(sw));
    const std::vector<float> dyf = abs_of(g.dy[i]);
    std::vector<float> sb(size_t(N), 0.0f);
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < N; ++n) sb[size_t(n)] += dyf[size_t(m * N + n)];
    s.db.push_back(std::move(sb));
  }
  return s;
}

// The bf16 bound of the header comment: coef(n)·S + 2^-22·|c0|.
std::vector<double> bf16_bound(const std::vector<float>& S, const Tensor& c0, int64_t n) {
  const double coef =
      std::ldexp(1.0, -7) + std::ldexp(1.0, -14) + double(n + 8) * std::ldexp(1.0, -21);
  const std::vector<float> a = abs_of(c0);
  std::vector<double> t(S.size());
  for (size_t i = 0; i < S.size(); ++i) t[i] = coef * S[i] + std::ldexp(1.0, -22) * a[i];
  return t;
}

// The accumulation-order bound of the header comment: (n + 5)·2^-23·(S + |c0|).
std::vector<double> order_bound(const std::vector<float>& S, const Tensor& c0, int64_t n) {
  const std::vector<float> a = abs_of(c0);
  std::vector<double> t(S.size());
  for (size_t i = 0; i < S.size(); ++i)
    t[i] = double(n + 5) * std::ldexp(1.0, -23) * (double(S[i]) + a[i]);
  return t;
}

TEST(LinearGroupCuda, AutocastPackedPathAgainstCompositionAndCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const std::vector<Case> cases = {
      {300, 896, {896, 128, 128}}, {1000, 1536, {1536, 256, 256}}, {7, 9, {3, 5, 16}}};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const Group g(c, seed += 100);
    int64_t sum_n = 0;
    for (int64_t n : c.ns) sum_n += n;
    const AbsProducts s_round = abs_products(c, g, true), s_f32 = abs_products(c, g, false);
    for (bool acc : {false, true}) {
      const std::string shape = "M " + std::to_string(c.M) + " K " + std::to_string(c.K) + " N " +
                                std::to_string(c.ns[0]) + (acc ? " accumulate" : "");
      SCOPED_TRACE(shape);
      // dx's start enters the sums only when accumulated into (else it is overwritten).
      const Tensor dx_c0 = acc ? g.dx0 : Tensor::zeros(g.dx0.shape());
      const Grads cpu_f32 = run(g, Device::cpu, true, acc);
      const Grads cpu_rounded = run(g, Device::cpu, true, acc, false, true);
      Grads first;  // the first packed run: every other setting must give its bits
      for (bool cached : {false, true}) {
        for (bool x_bf16 : {false, true}) {
          SCOPED_TRACE(std::string(cached ? "cache" : "no cache") + (x_bf16 ? " bf16 x" : ""));
          ops::Bf16WeightCache cache;
          ops::Bf16Autocast autocast;
          ops::UseBf16WeightCache use(cached ? &cache : nullptr);
          const Grads got = run(g, Device::cuda, true, acc, x_bf16);
          const Grads comp = run(g, Device::cuda, false, acc, x_bf16);
          // vs the per-member composition on the GPU.
          expect_within(got.dx, comp.dx, order_bound(s_round.dx, dx_c0, sum_n),
                        "dx vs composition");
          EXPECT_LE(rel_err(got.dx, comp.dx), 1e-5);
          for (size_t i = 0; i < c.ns.size(); ++i) {
            const std::string m = " member " + std::to_string(i);
            expect_bitwise(got.db[i], comp.db[i], "db vs composition" + m);
            if (kDwBitwise) expect_bitwise(got.dw[i], comp.dw[i], "dw vs composition" + m);
            expect_within(got.dw[i], comp.dw[i], order_bound(s_round.dw[i], g.dw0[i], c.M),
                          "dw vs composition" + m);
          }
          // vs the CPU f32 op on the rounded operands (autocast's arithmetic) and on f32 ones.
          EXPECT_LE(rel_err(got.dx, cpu_rounded.dx), 1e-5);
          expect_within(got.dx, cpu_rounded.dx, order_bound(s_round.dx, dx_c0, sum_n),
                        "dx vs CPU on rounded operands");
          expect_within(got.dx, cpu_f32.dx, bf16_bound(s_f32.dx, dx_c0, sum_n), "dx vs CPU f32");
          for (size_t i = 0; i < c.ns.size(); ++i) {
            const std::string m = " member " + std::to_string(i);
            EXPECT_LE(rel_err(got.dw[i], cpu_rounded.dw[i]), 1e-5) << m;
            EXPECT_LE(rel_err(got.db[i], cpu_rounded.db[i]), 1e-5) << m;
            expect_within(got.dw[i], cpu_f32.dw[i], bf16_bound(s_f32.dw[i], g.dw0[i], c.M),
                          "dw vs CPU f32" + m);
            expect_within(got.db[i], cpu_f32.db[i], order_bound(s_f32.db[i], g.db0[i], c.M),
                          "db vs CPU f32" + m);
          }
          // The cache and a bf16 x change nothing: the same operands into the same GEMMs.
          if (!first.dx.defined()) {
            first = got;
            continue;
          }
          expect_bitwise(got.dx, first.dx, "dx vs the first setting");
          for (size_t i = 0; i < c.ns.size(); ++i) {
            expect_bitwise(got.dw[i], first.dw[i], "dw vs the first setting");
            expect_bitwise(got.db[i], first.db[i], "db vs the first setting");
          }
        }
      }
    }
  }
}

// Outside autocast the op runs the composition itself (f32 GEMMs): bitwise. Under autocast with
// an empty product (M = 0) it runs the composition too.
TEST(LinearGroupCuda, F32AndEmptyProductsAreTheComposition) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& c : {Case{300, 896, {896, 128, 128}}, Case{0, 896, {896, 128, 128}}}) {
    for (bool autocast_on : {false, true}) {
      // Under autocast only the empty product runs the composition (M = 300 takes the packed
      // path: AutocastPackedPathAgainstCompositionAndCpu).
      if (!autocast_on && c.M == 0) continue;
      if (autocast_on && c.M != 0) continue;
      SCOPED_TRACE("M " + std::to_string(c.M) + (autocast_on ? " autocast" : ""));
      const Group g(c, 77);
      ops::Bf16Autocast autocast(autocast_on);
      for (bool acc : {false, true}) {
        const Grads got = run(g, Device::cuda, true, acc), comp = run(g, Device::cuda, false, acc);
        expect_bitwise(got.dx, comp.dx, "dx");
        for (size_t i = 0; i < c.ns.size(); ++i) {
          expect_bitwise(got.dw[i], comp.dw[i], "dw " + std::to_string(i));
          expect_bitwise(got.db[i], comp.db[i], "db " + std::to_string(i));
        }
      }
    }
  }
}

TEST(LinearGroupCuda, MixedDevicesAndBf16XOutsideAutocastAreErrors) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 5, K = 16;
  Tensor x = gpu(randn({M, K}, 1)), dx = gpu(randn({M, K}, 2));
  Tensor dy0 = gpu(randn({M, 8}, 3)), w0 = gpu(randn({8, K}, 4)), dw0 = gpu(randn({8, K}, 5));
  Tensor dy1 = gpu(randn({M, 4}, 6)), w1 = gpu(randn({4, K}, 7));
  Tensor dw1_host = randn({4, K}, 8);
  const std::vector<float> dx_before = cpu(dx).to_vector();
  std::vector<ops::LinearGroupMember> ms = {{&dy0, &w0, &dw0, nullptr},
                                            {&dy1, &w1, &dw1_host, nullptr}};
  EXPECT_NE(test::error_of([&] {
              ops::linear_group_backward(ms, x, dx);
            }).find("tensor 'members[1].dw' is on cpu but 'x' is on cuda"),
            std::string::npos);
  ms[1].dw = nullptr;
  Tensor xb = bf16_of(x);
  EXPECT_NE(test::error_of([&] {
              ops::linear_group_backward(ms, xb, dx);
            }).find("'x' is bf16, which only the CUDA backend takes under ops::Bf16Autocast"),
            std::string::npos);
  EXPECT_EQ(cpu(dx).to_vector(), dx_before);
}

}  // namespace
}  // namespace gyre
