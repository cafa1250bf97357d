// ops::swiglu_gate_up_backward on CUDA (backend/swiglu_backward_ops.h). Under ops::Bf16Autocast
// with bf16 gate/up (written by ops::linear into bf16 tensors, as the autocast MLP's forward) the
// packed path — the SwiGLU backward writing dgate | dup into one bf16 buffer
// (cuda::silu_mul_bwd_bf16_packed), ONE dX GEMM, the dW GEMMs on its column slices — against the
// composition silu_mul_backward (bf16 dgate/dup) + two linear_backward calls on the GPU in the same
// setting:
//  - the packed buffer's dgate / dup columns hold silu_mul_backward's bits, its padding zeros
//    (filled with NaN bits first), on the wide (I % 4 == 0) and the scalar (I = 19) path;
//  - dW_gate / dW_up bitwise (kDwBitwise: the same GEMM with leading dimension ld instead of I);
//  - dx within the accumulation-order bound (one f32 sum over 2I products instead of two sums
//    added; linear_group_cuda_test.cc's header): |Δ| <= (2I + 5)·2^-23·S, S = Σ|dgate||ŵ_gate| +
//    |dup||ŵ_up| over the bf16 operands (computed here in f32 on the GPU: the factor 1.01 covers
//    that sum's own rounding);
//  - itself across settings: with and without an installed Bf16WeightCache and with an f32 x or
//    the bf16 x holding its rounding, the same bits (the same operands into the same GEMMs);
//  - ops::linear_group_backward_packed over the kernel's buffer: the op's bits.
// f32 and bf16 dact; shapes (M, H, I) = Qwen2.5-0.5B's (300, 896, 4864), -1.5B's (1000, 1536,
// 8960) and an odd one (7, 40, 20: padded layout). Off the packed path (f32 gate/up, autocast off,
// M = 0) the op is the composition: bitwise. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pack_bf16.h"
#include "gyre/backend/linear_group_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/swiglu_backward_ops.h"
#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::expect_bitwise;
using gputest::expect_within;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;

// Whether dW is expected bitwise the composition's: a property of cuBLASLt's heuristic for the
// slice's leading dimension on the test machine (as linear_group_cuda_test.cc's kDwBitwise).
constexpr bool kDwBitwise = true;

struct Case {
  int64_t M, H, I;
};

// A bf16 CUDA tensor holding the rounding of the f32 CUDA tensor t.
Tensor bf16_of(const Tensor& t) {
  Tensor b = Tensor::empty(t.shape(), DType::bf16, Device::cuda);
  cuda::f32_to_bf16(t.f32(), b.data<uint16_t>(), t.numel());
  return b;
}

// One case's GPU tensors: gate / up bf16 = ops::linear(x, w) under autocast (as the MLP forward
// writes them), dact f32 and its bf16 rounding, and the starting values of dx (garbage: it is
// overwritten) and dw_gate / dw_up (accumulated into).
struct Inputs {
  Tensor x, x16, w_gate, w_up, gate, up, dact, dact16, dx0, dwg0, dwu0;
  Inputs(const Case& c, uint64_t seed) {
    x = gpu(randn({c.M, c.H}, seed, 1.0f));
    x16 = bf16_of(x);
    w_gate = gpu(randn({c.I, c.H}, seed + 1, 0.05f));
    w_up = gpu(randn({c.I, c.H}, seed + 2, 0.05f));
    gate = Tensor::empty({c.M, c.I}, DType::bf16, Device::cuda);
    up = Tensor::empty({c.M, c.I}, DType::bf16, Device::cuda);
    {
      ops::Bf16Autocast autocast;
      Tensor none;
      ops::linear(x, w_gate, none, gate);
      ops::linear(x, w_up, none, up);
    }
    dact = gpu(randn({c.M, c.I}, seed + 3, 0.5f));
    dact16 = bf16_of(dact);
    dx0 = gpu(randn({c.M, c.H}, seed + 4));
    dwg0 = gpu(randn({c.I, c.H}, seed + 5));
    dwu0 = gpu(randn({c.I, c.H}, seed + 6));
  }
};

struct Grads {
  Tensor dx, dw_gate, dw_up;  // host copies
};

// The op (composition = false) or the composition on copies of the inputs' outputs, in the
// caller's autocast / cache setting.
Grads run(const Inputs& in, const Tensor& dact, const Tensor& x, bool composition) {
  Tensor dx = in.dx0.clone(), dwg = in.dwg0.clone(), dwu = in.dwu0.clone();
  if (composition) {
    const DType gdt =
        in.gate.dtype() == DType::bf16 && ops::bf16_autocast() ? DType::bf16 : DType::f32;
    Tensor dgate = Tensor::empty(in.gate.shape(), gdt, Device::cuda);
    Tensor dup = Tensor::empty(in.gate.shape(), gdt, Device::cuda), none;
    ops::silu_mul_backward(dact, in.gate, in.up, dgate, dup);
    ops::linear_backward(dgate, x, in.w_gate, dx, dwg, none);
    ops::linear_backward(dup, x, in.w_up, dx, dwu, none, /*accumulate_dx=*/true);
  } else {
    ops::swiglu_gate_up_backward(dact, in.gate, in.up, x, in.w_gate, in.w_up, dx, dwg, dwu);
  }
  return {cpu(dx), cpu(dwg), cpu(dwu)};
}

// silu_mul_backward's bf16 dgate / dup (the composition's GEMM operands), on the GPU.
void bf16_grads(const Inputs& in, const Tensor& dact, Tensor& dgate, Tensor& dup) {
  dgate = Tensor::empty(in.gate.shape(), DType::bf16, Device::cuda);
  dup = Tensor::empty(in.gate.shape(), DType::bf16, Device::cuda);
  ops::silu_mul_backward(dact, in.gate, in.up, dgate, dup);
}

// The packed buffer as silu_mul_bwd_bf16_packed writes it, over a buffer filled with NaN bits
// first (so unwritten padding shows), as a host tensor.
Tensor packed_grads(const Tensor& dact, const Tensor& gate, const Tensor& up, int64_t M,
                    int64_t I) {
  const cuda::GateUpPacking p = cuda::gate_up_packing(I);
  Tensor host = Tensor::empty({M, p.ld}, DType::bf16);
  std::memset(host.raw(), 0xff, host.nbytes());
  Tensor packed = gpu(host);
  const bool d16 = dact.dtype() == DType::bf16;
  cuda::silu_mul_bwd_bf16_packed(d16 ? nullptr : dact.f32(), d16 ? dact.data<uint16_t>() : nullptr,
                                 gate.data<uint16_t>(), up.data<uint16_t>(), M, I,
                                 packed.data<uint16_t>(), p.off, p.ld);
  return cpu(packed);
}

// packed's columns hold dgate at [0, I), dup at [off, off + I), zeros elsewhere (bit for bit).
void expect_packed_layout(const Tensor& packed, const Tensor& dgate, const Tensor& dup, int64_t M,
                          int64_t I) {
  const cuda::GateUpPacking p = cuda::gate_up_packing(I);
  const Tensor g = cpu(dgate), u = cpu(dup);
  const uint16_t* pk = packed.data<uint16_t>();
  const uint16_t *gb = g.data<uint16_t>(), *ub = u.data<uint16_t>();
  int bad = 0;
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < p.ld; ++c) {
      uint16_t want = 0;
      if (c < I)
        want = gb[r * I + c];
      else if (c >= p.off && c < p.off + I)
        want = ub[r * I + c - p.off];
      if (pk[r * p.ld + c] != want && ++bad <= 3)
        ADD_FAILURE() << "packed[" << r << ", " << c << "] = " << pk[r * p.ld + c] << ", want "
                      << want << " (I " << I << ", off " << p.off << ", ld " << p.ld << ")";
    }
  EXPECT_EQ(bad, 0);
}

// |a| of a CUDA tensor (any float dtype) as an f32 CUDA tensor.
Tensor abs_gpu(const Tensor& t) {
  std::vector<float> v = cpu(t).to_vector();
  for (float& x : v) x = std::fabs(x);
  return gpu(Tensor::from_vector(v, t.shape()));
}

// The dx bound of the header comment, elementwise: 1.01·(2I + 5)·2^-23·S.
std::vector<double> dx_bound(const Inputs& in, const Tensor& dgate, const Tensor& dup,
                             const Case& c) {
  Tensor s = Tensor::zeros({c.M, c.H}, DType::f32, Device::cuda);
  const Tensor ag = abs_gpu(dgate), au = abs_gpu(dup);
  const Tensor awg = abs_gpu(bf16_of(in.w_gate)), awu = abs_gpu(bf16_of(in.w_up));
  ops::gemm(Device::cuda, false, false, c.M, c.H, c.I, 1.0f, ag.f32(), c.I, awg.f32(), c.H, 0.0f,
            s.f32(), c.H);
  ops::gemm(Device::cuda, false, false, c.M, c.H, c.I, 1.0f, au.f32(), c.I, awu.f32(), c.H, 1.0f,
            s.f32(), c.H);
  const std::vector<float> sv = cpu(s).to_vector();
  const double coef = 1.01 * double(2 * c.I + 5) * std::ldexp(1.0, -23);
  std::vector<double> t(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) t[i] = coef * sv[i];
  return t;
}

TEST(SwigluBackwardCuda, PackedKernelWritesSiluMulBackwardBits) {
  GYRE_SKIP_WITHOUT_GPU();
  // I = 19 (and M odd): the scalar path; the others the 4-wide one, with and without padding.
  for (const Case& c : {Case{300, 896, 4864}, Case{7, 40, 20}, Case{5, 40, 19}, Case{1, 8, 129}}) {
    const Inputs in(c, 10 + c.I);
    for (bool d16 : {false, true}) {
      SCOPED_TRACE("M " + std::to_string(c.M) + " I " + std::to_string(c.I) +
                   (d16 ? " bf16 dact" : " f32 dact"));
      const Tensor& dact = d16 ? in.dact16 : in.dact;
      Tensor dgate, dup;
      bf16_grads(in, dact, dgate, dup);
      expect_packed_layout(packed_grads(dact, in.gate, in.up, c.M, c.I), dgate, dup, c.M, c.I);
    }
  }
}

TEST(SwigluBackwardCuda, AutocastPackedPathAgainstComposition) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (const Case& c : {Case{300, 896, 4864}, Case{1000, 1536, 8960}, Case{7, 40, 20}}) {
    const Inputs in(c, seed += 100);
    for (bool d16 : {false, true}) {
      const std::string shape = "M " + std::to_string(c.M) + " H " + std::to_string(c.H) + " I " +
                                std::to_string(c.I) + (d16 ? " bf16 dact" : " f32 dact");
      SCOPED_TRACE(shape);
      const Tensor& dact = d16 ? in.dact16 : in.dact;
      std::vector<double> bound;
      {
        ops::Bf16Autocast autocast;
        Tensor dgate, dup;
        bf16_grads(in, dact, dgate, dup);
        bound = dx_bound(in, dgate, dup, c);
      }
      Grads first;  // the first setting's: every other one must give its bits
      for (bool cached : {false, true})
        for (bool x16 : {false, true}) {
          SCOPED_TRACE(std::string(cached ? "cache" : "no cache") + (x16 ? " bf16 x" : " f32 x"));
          ops::Bf16WeightCache cache;
          ops::Bf16Autocast autocast;
          ops::UseBf16WeightCache use(cached ? &cache : nullptr);
          const Tensor& x = x16 ? in.x16 : in.x;
          const Grads got = run(in, dact, x, false), comp = run(in, dact, x, true);
          if (kDwBitwise) {
            expect_bitwise(got.dw_gate, comp.dw_gate, "dw_gate vs composition");
            expect_bitwise(got.dw_up, comp.dw_up, "dw_up vs composition");
          }
          EXPECT_LE(rel_err(got.dw_gate, comp.dw_gate), 1e-5);
          EXPECT_LE(rel_err(got.dw_up, comp.dw_up), 1e-5);
          expect_within(got.dx, comp.dx, bound, "dx vs composition");
          // Norm-relative, as a summary: f32 sums of 2I = 17920 products cancel enough that the
          // two orders differ by 1.3e-5 of the norm at I = 8960 on the H200 (the elementwise
          // bound above is the rigorous check); 1e-4 still catches a wrong term.
          EXPECT_LE(rel_err(got.dx, comp.dx), 1e-4);
          if (!first.dx.defined()) {
            first = got;
            continue;
          }
          expect_bitwise(got.dx, first.dx, "dx vs the first setting");
          expect_bitwise(got.dw_gate, first.dw_gate, "dw_gate vs the first setting");
          expect_bitwise(got.dw_up, first.dw_up, "dw_up vs the first setting");
        }
    }
  }
}

// ops::linear_group_backward_packed over the kernel's buffer, with the members at columns 0 and
// off: the same GEMMs as swiglu_gate_up_backward, so its bits. Then its argument errors.
TEST(SwigluBackwardCuda, LinearGroupBackwardPackedOverTheKernelsBuffer) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case c{7, 40, 20};
  const Inputs in(c, 900);
  const cuda::GateUpPacking p = cuda::gate_up_packing(c.I);
  ops::Bf16Autocast autocast;
  const Grads want = run(in, in.dact, in.x, false);
  const Tensor packed = gpu(packed_grads(in.dact, in.gate, in.up, c.M, c.I));
  Tensor dx = in.dx0.clone(), dwg = in.dwg0.clone(), dwu = in.dwu0.clone();
  std::vector<ops::LinearGroupPackedMember> ms = {{&in.w_gate, &dwg, nullptr, 0},
                                                  {&in.w_up, &dwu, nullptr, p.off}};
  ops::linear_group_backward_packed(packed, ms, in.x, dx);
  expect_bitwise(cpu(dx), want.dx, "dx");
  expect_bitwise(cpu(dwg), want.dw_gate, "dw_gate");
  expect_bitwise(cpu(dwu), want.dw_up, "dw_up");

  const std::vector<float> dx_before = cpu(dx).to_vector();
  auto err = [&](const Tensor& dy) {
    return test::error_of([&] { ops::linear_group_backward_packed(dy, ms, in.x, dx); });
  };
  ms[1].col = 64;
  EXPECT_NE(err(packed).find("'members[1].col' is 64 (N 20): it must be a multiple of 128"),
            std::string::npos);
  ms[1].col = 0;
  EXPECT_NE(err(packed).find("at or past the previous member's columns (which end at 20"),
            std::string::npos);
  ms[1].col = p.off;
  const Tensor f32_dy = Tensor::zeros({c.M, p.ld}, DType::f32, Device::cuda);
  EXPECT_NE(err(f32_dy).find("'dy_packed' is f32, expected bf16"), std::string::npos);
  const Tensor narrow = Tensor::zeros({c.M, 192}, DType::bf16, Device::cuda);
  EXPECT_NE(err(narrow).find("'dy_packed' is 192 wide; the packed width must be a multiple of"),
            std::string::npos);
  EXPECT_EQ(cpu(dx).to_vector(), dx_before);
}

// Off the packed path the op runs the composition itself: bitwise. f32 gate/up (autocast on and
// off), bf16 gate/up with autocast off (f32 dgate/dup), and an empty product under autocast.
TEST(SwigluBackwardCuda, OffThePackedPathIsTheComposition) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& c : {Case{300, 896, 4864}, Case{0, 896, 4864}}) {
    const Inputs in(c, 700 + c.M);
    Inputs f32_in = in;
    f32_in.gate = gpu(cpu(in.gate).to(DType::f32));
    f32_in.up = gpu(cpu(in.up).to(DType::f32));
    for (bool autocast_on : {false, true})
      for (bool bf16_act : {false, true}) {
        if (c.M > 0 && bf16_act && autocast_on) continue;  // the packed path (tested above)
        SCOPED_TRACE("M " + std::to_string(c.M) + (autocast_on ? " autocast" : "") +
                     (bf16_act ? " bf16 gate/up" : " f32 gate/up"));
        ops::Bf16Autocast autocast(autocast_on);
        const Inputs& use = bf16_act ? in : f32_in;
        const Grads got = run(use, use.dact, use.x, false), comp = run(use, use.dact, use.x, true);
        expect_bitwise(got.dx, comp.dx, "dx");
        expect_bitwise(got.dw_gate, comp.dw_gate, "dw_gate");
        expect_bitwise(got.dw_up, comp.dw_up, "dw_up");
      }
  }
}

// Under an installed cache the op reads the gate | up copies stacked in place where they sit side
// by side (Bf16WeightCache::bf16_pair, which it asks for when neither exists yet), and copies them
// into scratch where they were made one by one: the same weight values into the same GEMM, so the
// same bits. Gradients holding deferred zeros (Tensor::zero_deferred, as Gradients::zero leaves
// them) are claimed and overwritten (beta 0): the values of an eagerly zeroed gradient, up to the
// f32 summation order of the beta-0 GEMM's own plan (norm-relative 1e-5 catches a lost or doubled
// term, and the buffer's 7s show through if beta stayed 1), then accumulated by a second call.
TEST(SwigluBackwardCuda, StackedCopiesAndClaimedDeferredZeros) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case c{300, 896, 4864};
  const Inputs in(c, 900);
  ops::Bf16Autocast autocast;
  auto run_with = [&](ops::Bf16WeightCache& cache, Tensor& dx, Tensor& dwg, Tensor& dwu) {
    ops::UseBf16WeightCache use(&cache);
    ops::swiglu_gate_up_backward(in.dact16, in.gate, in.up, in.x16, in.w_gate, in.w_up, dx, dwg,
                                 dwu);
  };
  // A fresh cache: the op pairs the copies and reads them stacked.
  ops::Bf16WeightCache paired;
  Tensor dx1 = in.dx0.clone(), dwg1 = gpu(Tensor::zeros({c.I, c.H})),
         dwu1 = gpu(Tensor::zeros({c.I, c.H}));
  run_with(paired, dx1, dwg1, dwu1);
  EXPECT_EQ(paired.bf16(in.w_up), paired.bf16(in.w_gate) + c.I * c.H) << "copies not adjacent";
  // Copies made one by one (up first, so not adjacent): stacked into scratch, the same bits.
  ops::Bf16WeightCache lone;
  lone.bf16(in.w_up);
  lone.bf16(in.w_gate);
  EXPECT_EQ(lone.bf16_pair(in.w_gate, in.w_up), nullptr);
  Tensor dx2 = in.dx0.clone(), dwg2 = gpu(Tensor::zeros({c.I, c.H})),
         dwu2 = gpu(Tensor::zeros({c.I, c.H}));
  run_with(lone, dx2, dwg2, dwu2);
  expect_bitwise(cpu(dx2), cpu(dx1), "dx, scratch stack vs paired copies");
  expect_bitwise(cpu(dwg2), cpu(dwg1), "dw_gate, scratch stack vs paired copies");
  expect_bitwise(cpu(dwu2), cpu(dwu1), "dw_up, scratch stack vs paired copies");
  // Deferred zeros over 7s: claimed, overwritten, then accumulated.
  Tensor dx3 = in.dx0.clone(), dwg3 = gpu(Tensor::full({c.I, c.H}, 7.0f)),
         dwu3 = gpu(Tensor::full({c.I, c.H}, 7.0f));
  dwg3.zero_deferred();
  dwu3.zero_deferred();
  run_with(paired, dx3, dwg3, dwu3);
  EXPECT_FALSE(dwg3.storage()->zero_pending());
  EXPECT_FALSE(dwu3.storage()->zero_pending());
  EXPECT_LE(rel_err(cpu(dwg3), cpu(dwg1)), 1e-5);
  EXPECT_LE(rel_err(cpu(dwu3), cpu(dwu1)), 1e-5);
  expect_bitwise(cpu(dx3), cpu(dx1), "dx with deferred-zero gradients");
  run_with(paired, dx3, dwg3, dwu3);
  std::vector<float> twice = cpu(dwg1).to_vector();
  for (float& v : twice) v *= 2.0f;
  EXPECT_LE(rel_err(cpu(dwg3), Tensor::from_vector(twice, {c.I, c.H})), 1e-5);
}

}  // namespace
}  // namespace gyre
