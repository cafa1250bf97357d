// ops::swiglu_gate_up_backward (backend/swiglu_backward_ops.h) on the CPU: bitwise the composition
// silu_mul_backward + two linear_backward calls (the second accumulating into dx) in f32 and f64,
// odd sizes (M = 1, I = 3 / 5 / 20 / 131: not multiples of 4 or 128; x with a leading shape), with
// dx / dw_gate / dw_up each defined or not, empty products (M, I or H = 0); errors that say what is
// wrong before anything changes. Also ops::linear_group_backward_packed's CPU refusal (it runs on
// CUDA under autocast only). The CUDA paths: tests/gpu/backend/swiglu_backward_cuda_test.cc.
#include "gyre/backend/swiglu_backward_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gyre/backend/linear_group_ops.h"
#include "gyre/core/error.h"
#include "test_util.h"
#include "unit/backend/philox_tensors.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  return test::philox_randn(s, seed, 17, dt);
}

using test::expect_same_bytes;

// The inputs of one call: x [lead.., H], gate / up / dact [lead.., I], weights [I, H].
struct Inputs {
  Tensor dact, gate, up, x, w_gate, w_up;
  Inputs(const Shape& lead, int64_t H, int64_t I, DType dt, uint64_t seed) {
    Shape xs = lead, gs = lead;
    xs.push_back(H), gs.push_back(I);
    dact = randn(gs, seed, dt), gate = randn(gs, seed + 1, dt), up = randn(gs, seed + 2, dt);
    x = randn(xs, seed + 3, dt);
    w_gate = randn({I, H}, seed + 4, dt), w_up = randn({I, H}, seed + 5, dt);
  }
};

// The outputs: dx starts as garbage (overwritten), dw_* as values accumulated into; each is left
// undefined (not computed) where asked.
struct Outputs {
  Tensor dx, dw_gate, dw_up;
};
Outputs outputs(const Inputs& in, bool dx, bool dw_gate, bool dw_up, uint64_t seed) {
  Outputs o;
  const DType dt = in.x.dtype();
  if (dx) o.dx = randn(in.x.shape(), seed + 10, dt);
  if (dw_gate) o.dw_gate = randn(in.w_gate.shape(), seed + 11, dt);
  if (dw_up) o.dw_up = randn(in.w_up.shape(), seed + 12, dt);
  return o;
}
Outputs clone(const Outputs& o) {
  auto c = [](const Tensor& t) { return t.defined() ? t.clone() : Tensor(); };
  return {c(o.dx), c(o.dw_gate), c(o.dw_up)};
}

// The op against the composition it is defined as, on the same inputs.
void expect_composition(const Shape& lead, int64_t H, int64_t I, DType dt, bool dx, bool dw_gate,
                        bool dw_up, uint64_t seed) {
  const Inputs in(lead, H, I, dt, seed);
  Outputs got = outputs(in, dx, dw_gate, dw_up, seed), want = clone(got);
  swiglu_gate_up_backward(in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up, got.dx, got.dw_gate,
                          got.dw_up);
  Tensor dgate, dup, none;
  silu_mul_backward(in.dact, in.gate, in.up, dgate, dup);
  linear_backward(dgate, in.x, in.w_gate, want.dx, want.dw_gate, none);
  linear_backward(dup, in.x, in.w_up, want.dx, want.dw_up, none, /*accumulate_dx=*/true);
  expect_same_bytes(got.dx, want.dx, "dx");
  expect_same_bytes(got.dw_gate, want.dw_gate, "dw_gate");
  expect_same_bytes(got.dw_up, want.dw_up, "dw_up");
}

TEST(SwigluGateUpBackwardCpu, BitwiseTheComposition) {
  struct Size {
    Shape lead;
    int64_t H, I;
  };
  const std::vector<Size> sizes = {{{1}, 9, 5},    {{7}, 40, 20},   {{7}, 9, 3},
                                   {{5}, 16, 131}, {{2, 3}, 12, 7}, {{1}, 1, 1}};
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64})
    for (const Size& s : sizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " lead " + shape_str(s.lead) + " H " +
                   std::to_string(s.H) + " I " + std::to_string(s.I));
      expect_composition(s.lead, s.H, s.I, dt, true, true, true, seed += 100);
    }
}

TEST(SwigluGateUpBackwardCpu, UndefinedOutputsAreNotComputed) {
  uint64_t seed = 500;
  for (bool dx : {false, true})
    for (bool dwg : {false, true})
      for (bool dwu : {false, true}) {
        SCOPED_TRACE(std::string(dx ? "dx " : "") + (dwg ? "dw_gate " : "") + (dwu ? "dw_up" : ""));
        expect_composition({7}, 9, 5, DType::f32, dx, dwg, dwu, seed += 100);
      }
}

TEST(SwigluGateUpBackwardCpu, EmptyProducts) {
  // M = 0: dx empty, dw unchanged; I = 0: dx overwritten with zeros; H = 0: dx, dw empty.
  expect_composition({0}, 9, 5, DType::f32, true, true, true, 31);
  expect_composition({7}, 9, 0, DType::f32, true, true, true, 32);
  expect_composition({7}, 0, 5, DType::f32, true, true, true, 33);
  const Inputs in({4}, 6, 0, DType::f32, 34);
  Tensor dx = randn({4, 6}, 35), none1, none2;
  swiglu_gate_up_backward(in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up, dx, none1, none2);
  EXPECT_EQ(dx.to_vector(), std::vector<float>(24, 0.0f));
}

TEST(SwigluGateUpBackwardCpu, ErrorsSayWhatIsWrongAndChangeNothing) {
  const int64_t M = 7, H = 9, I = 5;
  const Inputs in({M}, H, I, DType::f32, 1);
  Outputs out = outputs(in, true, true, true, 2);
  const Outputs before = clone(out);
  auto call = [&](const Tensor& dact, const Tensor& gate, const Tensor& up, const Tensor& x,
                  const Tensor& wg, const Tensor& wu, Tensor& dx, Tensor& dwg, Tensor& dwu) {
    return error_of([&] { swiglu_gate_up_backward(dact, gate, up, x, wg, wu, dx, dwg, dwu); });
  };
  // Replaces the input `which` (0 dact, 1 gate, 2 up, 3 x, 4 w_gate, 5 w_up) by t.
  auto with_input = [&](int which, const Tensor& t) {
    Tensor v[6] = {in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up};
    v[which] = t;
    return call(v[0], v[1], v[2], v[3], v[4], v[5], out.dx, out.dw_gate, out.dw_up);
  };
  const std::string op = "ops::swiglu_gate_up_backward: ";

  EXPECT_THAT(with_input(1, Tensor()), HasSubstr(op + "input 'gate' is undefined"));
  EXPECT_THAT(with_input(3, Tensor()), HasSubstr(op + "input 'x' is undefined"));
  const Tensor gate16 = Tensor::zeros({M, I}, DType::bf16);
  EXPECT_THAT(with_input(1, gate16), HasSubstr("'gate' is bf16 but 'up' is f32; pass both bf16"));
  EXPECT_THAT(
      call(in.dact, gate16, gate16, in.x, in.w_gate, in.w_up, out.dx, out.dw_gate, out.dw_up),
      HasSubstr("bf16 'gate'/'up' on cpu: only the CUDA backend reads bf16"));
  EXPECT_THAT(with_input(0, Tensor::zeros({M, I}, DType::bf16)),
              HasSubstr("'dact' is bf16, which is read only with bf16 'gate'/'up' on CUDA under "
                        "ops::Bf16Autocast (here: gate f32, cpu, autocast off)"));
  EXPECT_THAT(with_input(3, Tensor::zeros({M, H}, DType::bf16)),
              HasSubstr("'x' is bf16, which only the CUDA backend takes"));
  EXPECT_THAT(with_input(5, randn({I, H}, 3, DType::f64)),
              HasSubstr("'w_up' is f64 but 'dact' is f32; use one float dtype"));
  EXPECT_THAT(with_input(4, randn({I * H}, 4)),
              HasSubstr("'w_gate' has shape [45], expected [I, H]"));
  EXPECT_THAT(with_input(5, randn({I, H + 1}, 5)),
              HasSubstr("'w_up' has shape [5, 10], expected w_gate's [5, 9]"));
  EXPECT_THAT(with_input(3, randn({M, H + 1}, 6)),
              HasSubstr("'x' has shape [7, 10], expected [.., 9] (w_gate is [I, H] = [5, 9])"));
  EXPECT_THAT(with_input(1, randn({M - 1, I}, 7)),
              HasSubstr("'gate' has shape [6, 5], expected 7 rows (x's) of I = 5"));
  EXPECT_THAT(with_input(2, randn({M, I + 1}, 8)),
              HasSubstr("'up' has shape [7, 6], expected gate's [7, 5]"));
  EXPECT_THAT(with_input(0, randn({1, M, I}, 9)),
              HasSubstr("'dact' has shape [1, 7, 5], expected gate's [7, 5]"));
  {
    Tensor dx_bad = randn({M, H - 1}, 10);
    EXPECT_THAT(
        call(in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up, dx_bad, out.dw_gate, out.dw_up),
        HasSubstr("'dx' has shape [7, 8], expected x's rows and width ([7, 9])"));
    Tensor dx16 = Tensor::zeros({M, H}, DType::bf16);
    EXPECT_THAT(
        call(in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up, dx16, out.dw_gate, out.dw_up),
        HasSubstr("'dx' is bf16, but the up projection's product is added into it"));
    Tensor dwu_bad = randn({I + 1, H}, 11);
    EXPECT_THAT(
        call(in.dact, in.gate, in.up, in.x, in.w_gate, in.w_up, out.dx, out.dw_gate, dwu_bad),
        HasSubstr("'dw_up' has shape [6, 9], expected the weights' [5, 9]"));
  }
  // Every rejected call could have written dx and dw_gate before failing on a later argument.
  expect_same_bytes(out.dx, before.dx, "dx");
  expect_same_bytes(out.dw_gate, before.dw_gate, "dw_gate");
  expect_same_bytes(out.dw_up, before.dw_up, "dw_up");
}

// The packed grouped backward reads a bf16 dy: CUDA under autocast only.
TEST(LinearGroupBackwardPackedCpu, RunsOnlyOnCudaUnderAutocast) {
  const int64_t M = 3, K = 8;
  const Tensor x = randn({M, K}, 1), w = randn({5, K}, 2);
  Tensor dx = randn({M, K}, 3), dw = randn({5, K}, 4), db = randn({5}, 5);
  const Tensor dy = Tensor::zeros({M, 128}, DType::bf16);
  const std::vector<float> dx_before = dx.to_vector();
  std::vector<LinearGroupPackedMember> ms = {{&w, &dw, nullptr, 0}};
  EXPECT_THAT(error_of([&] { linear_group_backward_packed(dy, ms, x, dx); }),
              HasSubstr("ops::linear_group_backward_packed: runs only on CUDA under "
                        "ops::Bf16Autocast, where a bf16 dy is autocast's GEMM operand (here: "
                        "cpu, autocast off); call linear_group_backward with the f32 dy"));
  EXPECT_THAT(error_of([&] { linear_group_backward_packed(dy, {}, x, dx); }),
              HasSubstr("linear_group_backward_packed: no members"));
  ms[0].db = &db;
  EXPECT_THAT(error_of([&] { linear_group_backward_packed(dy, ms, x, dx); }),
              HasSubstr("'members[0].db' is requested, but a bias gradient sums the f32 dy"));
  EXPECT_EQ(dx.to_vector(), dx_before);
}

}  // namespace
}  // namespace gyre::ops
