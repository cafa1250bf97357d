// The training attention block's bf16 operands on CUDA (backend/rope_attention_ops.h,
// backend/cuda/rope_attention_bf16.h), memcmp-equal to the compositions they replace:
// - ops::linear over a bf16 x is ops::linear over the f32 tensor holding the same values: rows 1,
//   8 (the GEMV), 9, 300 (the GEMM reading x), with and without bias, f32 and bf16 y, with and
//   without a weight cache, an odd K (no GEMV at any row count), K = 0 and a misaligned x view;
// - rope_attention_varlen is rope_ twice on copies then attention_varlen (out and lse), with an
//   f32 out and with a bf16 out (the f32 out rounded: exactly the kernels' output), its saved
//   operands f32_to_bf16 of rope(q), rope(k) and v, q and k untouched;
// - the backward is attention_varlen_backward then rope_ inverse on dq and dk, with f32 or bf16
//   dout and out, bf16 or f32 saved operands;
// under GYRE_ATTENTION_BACKEND=cudnn (the flash kernels where cuDNN is missing) and =flash, at head
// dims 64 and 128, GQA 14/2 and 12/2, empty sequences, T <= 8 and T > 8, T = 0 and more tokens
// than one grid of blocks; outside autocast or at other head dims the op is the composition on the
// f32 kernels; errors are named before anything is written;
// - the backward into the q/k/v group's packed bf16 dy (rope_attention_varlen_backward_packed, then
//   linear_group_backward_packed) is rope_attention_varlen_backward then linear_group_backward:
//   the packed buffer, dx, dW and db bit for bit, padded layouts and T = 0 included; and the
//   kernel under it, cuda::rope_inverse_dqkv_packed, is rope_inverse_dqkv_f32, f32_to_bf16 into
//   the members' columns and column_sums_add, on aligned (16-byte) and unaligned layouts.
// Skips without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/cudnn_attention.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/rope_attention_bf16.h"
#include "gyre/backend/linear_group_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/rope_attention_ops.h"
#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::round_bf16;
using test::error_of;
using ::testing::HasSubstr;

using gputest::EnvScope;

// The attention backend for a scope, with cuDNN's deterministic backward (the default; the atomic
// dQ variant is not reproducible, so no two runs of it could be compared bit for bit).
struct Backend {
  EnvScope backend, det;
  explicit Backend(const char* name)
      : backend("GYRE_ATTENTION_BACKEND", name), det("GYRE_CUDNN_ATTENTION_DETERMINISTIC", "1") {}
};

Tensor to_bf16(const Tensor& t) {
  Tensor b = Tensor::empty(t.shape(), DType::bf16, t.device());
  ops::copy(t, b);  // f32_to_bf16 on the device
  return b;
}

Tensor widen(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), DType::f32, t.device());
  ops::copy(t, f);  // bf16_to_f32 on the device
  return f;
}

void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const Tensor g = cpu(got), w = cpu(want);
  ASSERT_EQ(g.nbytes(), w.nbytes()) << what;
  EXPECT_EQ(std::memcmp(g.raw(), w.raw(), g.nbytes()), 0) << what;
}

// ---- (a) ops::linear over a bf16 x --------------------------------------------------------------

TEST(RopeAttentionCuda, LinearBf16XIsTheF32LinearOnTheSameValues) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  struct Shape2 {
    int64_t N, K;
  };
  // o_proj of Qwen2.5-0.5B (896 = 14 heads of 64), an odd K (no GEMV), no inner dimension.
  for (const Shape2& s : {Shape2{896, 896}, Shape2{77, 259}, Shape2{5, 0}}) {
    Tensor gw = gpu(randn({s.N, s.K}, 10 + s.K, 0.05f)), gb = gpu(randn({s.N}, 11)), none;
    for (int64_t M : {1, 8, 9, 300}) {
      // x: bf16 values; x32 the f32 tensor holding them (what the composition's o_proj reads).
      const Tensor x32 = gpu(round_bf16(randn({M, s.K}, 12 + M, 2.0f))), x16 = to_bf16(x32);
      for (bool cached : {false, true})
        for (bool bias : {false, true})
          for (bool y16 : {false, true}) {
            const std::string what = "N " + std::to_string(s.N) + " K " + std::to_string(s.K) +
                                     " M " + std::to_string(M) + (cached ? " cache" : "") +
                                     (bias ? " bias" : "") + (y16 ? " bf16 y" : " f32 y");
            const DType ydt = y16 ? DType::bf16 : DType::f32;
            Tensor want = Tensor::empty({M, s.N}, ydt, Device::cuda);
            Tensor got = Tensor::empty({M, s.N}, ydt, Device::cuda);
            {
              ops::Bf16Autocast autocast;
              ops::UseBf16WeightCache use(cached ? &cache : nullptr);
              ops::linear(x32, gw, bias ? gb : none, want);
              ops::linear(x16, gw, bias ? gb : none, got);
            }
            expect_same_bytes(got, want, what);
          }
    }
  }
  // A view of a bf16 tensor whose first byte is not 256-byte aligned (row 1 of K = 259: 518
  // bytes in): the GEMM's operand is staged through aligned scratch, same bits.
  const int64_t M = 300, N = 77, K = 259;
  Tensor gw = gpu(randn({N, K}, 20, 0.05f)), gb = gpu(randn({N}, 21));
  const Tensor big32 = gpu(round_bf16(randn({M + 1, K}, 22, 2.0f)));
  const Tensor view16 = to_bf16(big32).narrow(1, M), view32 = big32.narrow(1, M).clone();
  Tensor want, got;
  {
    ops::Bf16Autocast autocast;
    ops::linear(view32, gw, gb, want);
    ops::linear(view16, gw, gb, got);
  }
  expect_same_bytes(got, want, "misaligned bf16 x view");
}

TEST(RopeAttentionCuda, LinearBf16XNeedsAutocast) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor x16 = to_bf16(gpu(randn({9, 16}, 30))), gw = gpu(randn({5, 16}, 31)), none, y;
  const std::string e = error_of([&] { ops::linear(x16, gw, none, y); });
  EXPECT_THAT(e, HasSubstr("ops::linear: input 'x' is bf16 outside an ops::Bf16Autocast scope"));
  EXPECT_FALSE(y.defined());
}

// ---- (b, c, d) RoPE + attention ----------------------------------------------------------------

struct Case {
  std::vector<int32_t> cu;
  int64_t Hq, Hkv, D;
};

std::string name(const Case& c, const char* backend) {
  std::string s = std::string(backend) + " heads " + std::to_string(c.Hq) + "/" +
                  std::to_string(c.Hkv) + " D " + std::to_string(c.D) + " cu {";
  for (size_t i = 0; i < c.cu.size() && i < 8; ++i) s += std::to_string(c.cu[i]) + ",";
  return s + (c.cu.size() > 8 ? "...}" : "}");
}

// One batch on the GPU: q/k/v/dout, the model's RoPE tables (HF's inv_freq, base 10000) and
// positions counting from 3 within each sequence (a prompt offset), so rows use distinct angles.
struct Inputs {
  int64_t T, P = 0;
  Tensor q, k, v, dout, cos, sin, pos, cu;
  float scale;
  Inputs(const Case& c, uint64_t seed) {
    T = c.cu.back();
    std::vector<int32_t> p;
    for (size_t b = 0; b + 1 < c.cu.size(); ++b)
      for (int32_t t = c.cu[b]; t < c.cu[b + 1]; ++t) p.push_back(3 + t - c.cu[b]);
    for (int32_t x : p) P = std::max<int64_t>(P, x + 1);
    P = std::max<int64_t>(P, 4);
    const int64_t half = c.D / 2;
    std::vector<float> cv(size_t(P * half)), sv(size_t(P * half));
    for (int64_t r = 0; r < P; ++r)
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(r) * std::pow(10000.0, -2.0 * double(i) / double(c.D));
        cv[size_t(r * half + i)] = float(std::cos(a));
        sv[size_t(r * half + i)] = float(std::sin(a));
      }
    cos = gpu(Tensor::from_vector(cv, {P, half}));
    sin = gpu(Tensor::from_vector(sv, {P, half}));
    pos = gpu(Tensor::from_vector(p, {T}));
    cu = gpu(Tensor::from_vector(c.cu, {int64_t(c.cu.size())}));
    q = gpu(randn({T, c.Hq, c.D}, seed));
    k = gpu(randn({T, c.Hkv, c.D}, seed + 1));
    v = gpu(randn({T, c.Hkv, c.D}, seed + 2));
    dout = gpu(randn({T, c.Hq, c.D}, seed + 3, 0.1f));
    scale = 1.0f / std::sqrt(float(c.D));
  }
};

// The composition the fused ops replace (the decoder layer's unfused attention block), under the
// caller's autocast setting: rope_ on copies, attention_varlen, its backward, rope_ inverse.
struct Reference {
  Tensor q_rot, k_rot, out, lse, dq, dk, dv;
  explicit Reference(const Inputs& in) {
    q_rot = in.q.clone();
    k_rot = in.k.clone();
    ops::rope_(q_rot, in.pos, in.cos, in.sin);
    ops::rope_(k_rot, in.pos, in.cos, in.sin);
    ops::attention_varlen(q_rot, k_rot, in.v, in.cu, in.scale, out, lse);
    ops::attention_varlen_backward(in.dout, q_rot, k_rot, in.v, out, lse, in.cu, in.scale, dq, dk,
                                   dv);
    ops::rope_(dq, in.pos, in.cos, in.sin, /*inverse=*/true);
    ops::rope_(dk, in.pos, in.cos, in.sin, /*inverse=*/true);
  }
};

std::vector<Case> cases() {
  std::vector<int32_t> many = {0};  // 700 sequences of 100: more tokens than one grid of blocks
  for (int i = 0; i < 700; ++i) many.push_back(many.back() + 100);
  return {
      {{0, 0, 5, 5, 137, 300}, 14, 2, 64},   // Qwen2.5-0.5B heads, empty sequences, T > 8
      {{0, 0, 5, 5, 137, 300}, 12, 2, 128},  // Qwen2.5-1.5B heads
      {{0, 3, 3, 8}, 14, 2, 64},             // T = 8: o_proj's GEMV rows
      {{0, 1}, 12, 2, 128},                  // one token
      {{0, 9}, 14, 2, 128},                  // T = 9
      {{0, 0}, 14, 2, 64},                   // T = 0 (one empty sequence)
      {many, 2, 1, 64},                      // T = 70000
  };
}

int64_t cudnn_fwd_calls() { return cuda::cudnn_attention_stats().fwd_calls; }
int64_t cudnn_bwd_calls() { return cuda::cudnn_attention_stats().bwd_calls; }

TEST(RopeAttentionCuda, ForwardIsRopeThenAttentionBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const char* backend : {"cudnn", "flash"}) {
    const Backend be(backend);
    const int64_t cudnn_before = cudnn_fwd_calls();
    for (const Case& c : cases()) {
      const std::string what = name(c, backend);
      const Inputs in(c, 40);
      const Tensor q0 = in.q.clone(), k0 = in.k.clone();
      ops::Bf16Autocast autocast;
      const int64_t ref0 = cudnn_fwd_calls();
      const Reference want(in);
      const int64_t ref_calls = cudnn_fwd_calls() - ref0;
      EXPECT_EQ(ops::attention_out_dtype(in.q), in.T > 8 ? DType::bf16 : DType::f32) << what;

      // f32 out, saved operands; the same attention kernels as the composition (cuDNN as often).
      Tensor out, lse;
      ops::RopeAttentionSaved saved;
      const int64_t fused0 = cudnn_fwd_calls();
      ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out,
                                 lse, &saved);
      EXPECT_EQ(cudnn_fwd_calls() - fused0, ref_calls) << what;
      expect_same_bytes(out, want.out, what + " f32 out");
      expect_same_bytes(lse, want.lse, what + " lse");
      expect_same_bytes(saved.q, to_bf16(want.q_rot), what + " saved q");
      expect_same_bytes(saved.k, to_bf16(want.k_rot), what + " saved k");
      expect_same_bytes(saved.v, to_bf16(in.v), what + " saved v");
      expect_same_bytes(in.q, q0, what + " q untouched");
      expect_same_bytes(in.k, k0, what + " k untouched");

      // bf16 out (the kernels' output itself: f32 out is it widened), no saved operands (scratch).
      Tensor out16 = Tensor::empty(in.q.shape(), DType::bf16, Device::cuda), lse16;
      ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out16,
                                 lse16);
      expect_same_bytes(widen(out16), want.out, what + " bf16 out widened");
      expect_same_bytes(out16, to_bf16(want.out), what + " bf16 out");
      expect_same_bytes(lse16, want.lse, what + " lse (bf16 out)");

      // The batch's indices recorded as validated (CausalLM's KnownIndices): the same bits.
      ops::KnownIndices known;
      known.add_range(in.pos, 0, in.P);
      int64_t max_len = 0;
      for (size_t b = 0; b + 1 < c.cu.size(); ++b)
        max_len = std::max<int64_t>(max_len, c.cu[b + 1] - c.cu[b]);
      known.add_offsets(in.cu, in.T, max_len);
      Tensor out_k, lse_k;
      ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out_k,
                                 lse_k);
      expect_same_bytes(out_k, want.out, what + " known indices");
    }
    // The cudnn cases really ran cuDNN where it is installed; the flash ones never did.
    if (std::string(backend) == "flash" || !cuda::cudnn_attention_available())
      EXPECT_EQ(cudnn_fwd_calls(), cudnn_before) << backend;
    else
      EXPECT_GT(cudnn_fwd_calls(), cudnn_before) << backend;
  }
}

// rope_qkv_bf16's two kernels — four pairs per lane step where every pointer is aligned for it,
// one pair otherwise — write the same bits: each operand in turn, then an output, is moved one
// element off its alignment (a view one element into a larger buffer), which sends the call to the
// scalar kernel, and every output must match the aligned call's.
TEST(RopeAttentionCuda, RopeQkvVectorAndScalarKernelsAgreeBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  struct Shape3 {
    int64_t T, hq, hkv, d;
  };
  for (const Shape3 sh : {Shape3{37, 14, 2, 64}, Shape3{300, 12, 2, 128}, Shape3{1, 2, 1, 64}}) {
    const int64_t P = 64, half = sh.d / 2;
    const int64_t nq = sh.T * sh.hq * sh.d, nk = sh.T * sh.hkv * sh.d;
    // Each input lives twice in one buffer: at element 0 (aligned) and at element n + 1 (not).
    auto twice = [](const Tensor& host) {
      const int64_t n = host.numel();
      std::vector<float> v = host.to_vector(), both(size_t(2 * n + 1), 0.0f);
      std::copy(v.begin(), v.end(), both.begin());
      std::copy(v.begin(), v.end(), both.begin() + n + 1);
      return gpu(Tensor::from_vector(both, {2 * n + 1}));
    };
    const Tensor q = twice(randn({nq}, 81, 3.0f)), k = twice(randn({nk}, 82, 3.0f)),
                 v = twice(randn({nk}, 83, 3.0f)), cs = twice(randn({P * half}, 84)),
                 sn = twice(randn({P * half}, 85));
    const Tensor pos = gpu(gputest::rand_ids(sh.T, int32_t(P), 86));
    // Outputs with one spare element in front, to write at offset 0 or 1.
    Tensor out[2][3];
    for (auto& o : out)
      for (int i = 0; i < 3; ++i)
        o[i] = Tensor::zeros({(i == 0 ? nq : nk) + 1}, DType::bf16, Device::cuda);
    auto run = [&](int which_off, Tensor* o) {
      auto in = [&](const Tensor& t, int idx, int64_t n) {
        return t.f32() + (which_off == idx ? n + 1 : 0);
      };
      const int64_t shift = which_off == 5 ? 1 : 0;  // 5: the q output misaligned
      cuda::rope_qkv_bf16(in(q, 0, nq), in(k, 1, nk), in(v, 2, nk), sh.T, sh.hq, sh.hkv, sh.d,
                          pos.i32(), in(cs, 3, P * half), in(sn, 4, P * half),
                          o[0].data<uint16_t>() + shift, o[1].data<uint16_t>(),
                          o[2].data<uint16_t>());
      return shift;
    };
    run(-1, out[0]);  // every pointer aligned: the vector kernel
    auto bits = [](const Tensor& t) {
      const Tensor h = cpu(t);
      std::vector<uint16_t> b(size_t(h.numel()));
      std::memcpy(b.data(), h.raw(), h.nbytes());
      return b;
    };
    const std::vector<uint16_t> want[3] = {bits(out[0][0]), bits(out[0][1]), bits(out[0][2])};
    for (int off = 0; off <= 5; ++off) {
      for (auto& o : out[1]) o.zero();
      const int64_t shift = run(off, out[1]);
      const std::string what = "T " + std::to_string(sh.T) + " D " + std::to_string(sh.d) +
                               " misaligned operand " + std::to_string(off);
      for (int i = 0; i < 3; ++i) {
        std::vector<uint16_t> got = bits(out[1][i]);
        if (i == 0 && shift) got.erase(got.begin()), got.push_back(0);
        EXPECT_EQ(got, want[i]) << what << " output " << i;
      }
    }
  }
}

TEST(RopeAttentionCuda, BackwardIsAttentionBackwardThenInverseRopeBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const char* backend : {"cudnn", "flash"}) {
    const Backend be(backend);
    const int64_t cudnn_before = cudnn_bwd_calls();
    for (const Case& c : cases()) {
      const std::string what = name(c, backend);
      const Inputs in(c, 50);
      ops::Bf16Autocast autocast;
      const Reference want(in);
      Tensor out32, lse;
      ops::RopeAttentionSaved saved;
      ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out32,
                                 lse, &saved);
      const Tensor out16 = to_bf16(out32), dout16 = to_bf16(in.dout);
      // f32 saved operands (what the composition keeps) take the same path: rounded once.
      const ops::RopeAttentionSaved saved32{want.q_rot, want.k_rot, in.v};
      struct Variant {
        const char* label;
        const ops::RopeAttentionSaved* s;
        const Tensor *dout, *out;
      };
      for (const Variant& var : {Variant{"f32 dout/out", &saved, &in.dout, &out32},
                                 Variant{"bf16 dout/out", &saved, &dout16, &out16},
                                 Variant{"bf16 dout, f32 out", &saved, &dout16, &out32},
                                 Variant{"f32 saved", &saved32, &in.dout, &out16}}) {
        Tensor dq, dk, dv;
        ops::rope_attention_varlen_backward(*var.dout, *var.s, *var.out, lse, in.pos, in.cos,
                                            in.sin, in.cu, in.scale, dq, dk, dv);
        expect_same_bytes(dq, want.dq, what + " dq, " + var.label);
        expect_same_bytes(dk, want.dk, what + " dk, " + var.label);
        expect_same_bytes(dv, want.dv, what + " dv, " + var.label);
      }
    }
    if (std::string(backend) == "flash" || !cuda::cudnn_attention_available())
      EXPECT_EQ(cudnn_bwd_calls(), cudnn_before) << backend;
    else
      EXPECT_GT(cudnn_bwd_calls(), cudnn_before) << backend;
  }
}

// Off the bf16 kernels' path the op is the composition on the f32 kernels: no autocast scope, or a
// head dim the bf16 kernels do not take (the autocast attention's exact f32 kernel).
TEST(RopeAttentionCuda, OffTheBf16PathItIsTheF32Composition) {
  GYRE_SKIP_WITHOUT_GPU();
  for (bool autocast_on : {false, true}) {
    const Case c{{0, 0, 5, 37}, 6, 2, autocast_on ? 32 : 64};
    const std::string what = name(c, autocast_on ? "autocast" : "f32");
    const Inputs in(c, 60);
    ops::Bf16Autocast autocast(autocast_on);
    const Reference want(in);
    EXPECT_EQ(ops::attention_out_dtype(in.q), DType::f32) << what;
    Tensor out, lse, dq, dk, dv;
    ops::RopeAttentionSaved saved;
    ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out, lse,
                               &saved);
    expect_same_bytes(out, want.out, what + " out");
    expect_same_bytes(lse, want.lse, what + " lse");
    expect_same_bytes(saved.q, want.q_rot, what + " saved q (f32)");
    expect_same_bytes(saved.k, want.k_rot, what + " saved k (f32)");
    EXPECT_EQ(saved.v.raw(), in.v.raw()) << what << ": v itself";
    ops::rope_attention_varlen_backward(in.dout, saved, out, lse, in.pos, in.cos, in.sin, in.cu,
                                        in.scale, dq, dk, dv);
    expect_same_bytes(dq, want.dq, what + " dq");
    expect_same_bytes(dk, want.dk, what + " dk");
    expect_same_bytes(dv, want.dv, what + " dv");
  }
}

// ---- (f) the backward into the q/k/v group's packed bf16 dy ----------------------------------

// What linear_group_backward's packing writes for f32 dq/dk/dv in `l`: each value rounded by
// f32_to_bf16 (to_bf16: the device's rounding, the pack kernel's) in its member's columns, zeros
// in every other column. Built on the host.
Tensor expected_packed(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                       const ops::RopePackedLayout& l) {
  const int64_t T = dq.size(0);
  Tensor want = Tensor::zeros({T, l.ld}, DType::bf16);
  uint16_t* w = want.data<uint16_t>();
  const Tensor* g[3] = {&dq, &dk, &dv};
  const int64_t col[3] = {l.col_q, l.col_k, l.col_v};
  for (int i = 0; i < 3; ++i) {
    const int64_t n = g[i]->size(1) * g[i]->size(2);
    const Tensor h = cpu(to_bf16(*g[i]));
    const uint16_t* src = h.data<uint16_t>();
    for (int64_t t = 0; t < T; ++t) std::memcpy(w + t * l.ld + col[i], src + t * n, size_t(n) * 2);
  }
  return want;
}

// rope_attention_varlen_backward_packed then linear_group_backward_packed against the path they
// replace in the decoder layer, rope_attention_varlen_backward then linear_group_backward (under
// autocast: pack, one dX GEMM, dW on the slices, db by column_sums_add over the f32 dq/dk/dv): the
// packed buffer is exactly the old path's packing of dq/dk/dv (zero padding columns included, over
// a buffer prefilled with NaN bits), and dx, dW and db (accumulated into non-zero starts) are the
// same bits. Heads 14/2 and 12/2 at D 64 and 128, padded layouts (2/1 and 3/1 at D 64: q, k, v
// narrower than their 128-column slots), sequences of 0, 1, 7, 129 and 300 tokens (row chunks of
// 128 with a partial last one), T = 9, T = 0 and 547 chunks; f32 or bf16 dout/out, bf16 or f32
// saved operands, f32 or bf16 x; every bias gradient, or only some (a null one is not touched),
// with an undefined buffer the op allocates.
TEST(RopeAttentionCuda, PackedBackwardIsTheBackwardThenTheGroupsPackingBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<int32_t> many = {0};  // 700 sequences of 100 tokens: 547 row chunks
  for (int i = 0; i < 700; ++i) many.push_back(many.back() + 100);
  const std::vector<int32_t> odd = {0, 0, 1, 8, 137, 437};  // lengths 0, 1, 7, 129, 300
  const std::vector<Case> packed_cases = {
      {odd, 14, 2, 64},                                // Qwen2.5-0.5B heads
      {odd, 12, 2, 128},                               // Qwen2.5-1.5B heads
      {odd, 2, 1, 64},                                 // k and v: 64 columns in 128-column slots
      {odd, 3, 1, 64},                                 // q: 192 columns in 256
      {{0, 5, 5, 9}, 12, 2, 64}, {{0, 0}, 14, 2, 64},  // T = 0
      {{0, 0}, 2, 1, 64},                              // T = 0, padded
      {many, 2, 1, 64},                                // T = 70000
  };
  const int64_t K = 96;  // the q/k/v linears' input width
  for (const char* backend : {"cudnn", "flash"}) {
    const Backend be(backend);
    for (const Case& c : packed_cases) {
      const std::string what = name(c, backend);
      const Inputs in(c, 80);
      const int64_t T = in.T, nq = c.Hq * c.D, nkv = c.Hkv * c.D;
      ops::Bf16Autocast autocast;
      Tensor out32, lse;
      ops::RopePackedLayout layout = ops::rope_packed_layout(c.Hq, c.Hkv, c.D);
      ops::RopeAttentionSaved saved;
      ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out32,
                                 lse, &saved);
      Tensor q_rot = in.q.clone(), k_rot = in.k.clone();
      ops::rope_(q_rot, in.pos, in.cos, in.sin);
      ops::rope_(k_rot, in.pos, in.cos, in.sin);
      const ops::RopeAttentionSaved saved32{q_rot, k_rot, in.v};  // rounded once by the op
      const Tensor out16 = to_bf16(out32), dout16 = to_bf16(in.dout);
      const Tensor wq = gpu(randn({nq, K}, 81, 0.05f)), wk = gpu(randn({nkv, K}, 82, 0.05f)),
                   wv = gpu(randn({nkv, K}, 83, 0.05f));
      const Tensor dw0q = gpu(randn({nq, K}, 84)), dw0k = gpu(randn({nkv, K}, 85)),
                   dw0v = gpu(randn({nkv, K}, 86));
      const Tensor db0q = gpu(randn({nq}, 87)), db0k = gpu(randn({nkv}, 88)),
                   db0v = gpu(randn({nkv}, 89));
      const Tensor x32 = gpu(randn({T, K}, 90)), x16 = to_bf16(x32);
      struct Variant {
        const char* label;
        const ops::RopeAttentionSaved* s;
        const Tensor *dout, *out, *x;
        bool all_db, prealloc;
      };
      for (const Variant& var :
           {Variant{"f32 dout/out, f32 x", &saved, &in.dout, &out32, &x32, true, true},
            Variant{"bf16 dout/out, bf16 x", &saved, &dout16, &out16, &x16, true, false},
            Variant{"f32 saved, bf16 x, dbk null", &saved32, &dout16, &out32, &x16, false, true},
            Variant{"bf16 dout/out, f32 x, dbk null", &saved, &dout16, &out16, &x32, false,
                    false}}) {
        const std::string w = what + ", " + var.label;
        // The old path.
        Tensor dq, dk, dv;
        ops::rope_attention_varlen_backward(*var.dout, *var.s, *var.out, lse, in.pos, in.cos,
                                            in.sin, in.cu, in.scale, dq, dk, dv);
        // dx defined (undefined: not computed); NaN bits: both paths overwrite it.
        Tensor dx_want = gpu(Tensor::full({T, K}, std::nanf(""))), dwq_want = dw0q.clone(),
               dwk_want = dw0k.clone(), dwv_want = dw0v.clone();
        Tensor dbq_want = db0q.clone(), dbk_want = db0k.clone(), dbv_want = db0v.clone();
        const Tensor dq2 = dq.reshape({T, nq}), dk2 = dk.reshape({T, nkv}),
                     dv2 = dv.reshape({T, nkv});
        const ops::LinearGroupMember old_members[] = {{&dq2, &wq, &dwq_want, &dbq_want},
                                                      {&dk2, &wk, &dwk_want, &dbk_want},
                                                      {&dv2, &wv, &dwv_want, &dbv_want}};
        ops::linear_group_backward(old_members, *var.x, dx_want);

        // The packed path.
        Tensor dqkv;
        if (var.prealloc)  // NaN bits everywhere: every column must be written
          dqkv = to_bf16(gpu(Tensor::full({T, layout.ld}, std::nanf(""))));
        Tensor dbq = db0q.clone(), dbk = db0k.clone(), dbv = db0v.clone();
        ops::rope_attention_varlen_backward_packed(*var.dout, *var.s, *var.out, lse, in.pos, in.cos,
                                                   in.sin, in.cu, in.scale, layout, dqkv, &dbq,
                                                   var.all_db ? &dbk : nullptr, &dbv);
        expect_same_bytes(dqkv, gpu(expected_packed(dq, dk, dv, layout)), w + " packed dy");
        expect_same_bytes(dbq, dbq_want, w + " dbq");
        expect_same_bytes(dbk, var.all_db ? dbk_want : db0k, w + " dbk");
        expect_same_bytes(dbv, dbv_want, w + " dbv");
        Tensor dx = gpu(Tensor::full({T, K}, std::nanf(""))), dwq = dw0q.clone(),
               dwk = dw0k.clone(), dwv = dw0v.clone();
        const ops::LinearGroupPackedMember members[] = {{&wq, &dwq, nullptr, layout.col_q},
                                                        {&wk, &dwk, nullptr, layout.col_k},
                                                        {&wv, &dwv, nullptr, layout.col_v}};
        ops::linear_group_backward_packed(dqkv, members, *var.x, dx);
        expect_same_bytes(dx, dx_want, w + " dx");
        expect_same_bytes(dwq, dwq_want, w + " dwq");
        expect_same_bytes(dwk, dwk_want, w + " dwk");
        expect_same_bytes(dwv, dwv_want, w + " dwv");
      }
    }
  }
}

// Off the bf16 kernels' path (no autocast, head dim 32) the packed op is a clear error, and on it
// a bad layout or bias gradient is named; nothing is written.
TEST(RopeAttentionCuda, PackedBackwardErrorsBeforeAnythingIsWritten) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case c{{0, 4, 11}, 4, 2, 64};
  const Inputs in(c, 90);
  Tensor out, lse;
  ops::RopeAttentionSaved saved;
  {
    ops::Bf16Autocast autocast;
    ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, out, lse,
                               &saved);
  }
  const ops::RopePackedLayout good = ops::rope_packed_layout(c.Hq, c.Hkv, c.D);
  const Tensor buf0 = to_bf16(gpu(Tensor::full({in.T, good.ld}, 5.0f)));
  const Tensor db0 = gpu(randn({c.Hq * c.D}, 91));
  Tensor buf = buf0.clone(), dbq = db0.clone(), none;
  const auto call = [&](const ops::RopeAttentionSaved& s, const ops::RopePackedLayout& l,
                        Tensor& dqkv, Tensor* dbk) {
    return error_of([&] {
      ops::rope_attention_varlen_backward_packed(in.dout, s, out, lse, in.pos, in.cos, in.sin,
                                                 in.cu, in.scale, l, dqkv, &dbq, dbk, nullptr);
    });
  };
  // bf16 saved operands but no autocast: the packed op's own error, not the bf16 misuse one.
  const std::string no_scope = call(saved, good, buf, nullptr);
  EXPECT_THAT(no_scope, HasSubstr("ops::rope_attention_varlen_backward_packed: runs only where"));
  EXPECT_THAT(no_scope, HasSubstr("here: cuda, autocast off"));
  EXPECT_THAT(no_scope,
              HasSubstr("call rope_attention_varlen_backward, then linear_group_backward"));
  {
    ops::Bf16Autocast autocast;
    const Case c32{{0, 4, 11}, 4, 2, 32};
    const Inputs in32(c32, 92);
    const ops::RopeAttentionSaved s32{in32.q, in32.k, in32.v};
    Tensor o32, l32, b32;
    ops::attention_varlen(in32.q, in32.k, in32.v, in32.cu, in32.scale, o32, l32);
    EXPECT_THAT(error_of([&] {
                  ops::rope_attention_varlen_backward_packed(
                      in32.dout, s32, o32, l32, in32.pos, in32.cos, in32.sin, in32.cu, in32.scale,
                      ops::rope_packed_layout(4, 2, 32), b32);
                }),
                HasSubstr("head dim 32); call rope_attention_varlen_backward"));
    EXPECT_FALSE(b32.defined());
    ops::RopePackedLayout l = good;
    l.col_v = 64;
    EXPECT_THAT(call(saved, l, none, nullptr), HasSubstr("layout.col_v is 64"));
    Tensor db_k_wrong = gpu(randn({c.Hkv * c.D + 1}, 93));
    EXPECT_THAT(call(saved, good, buf, &db_k_wrong),
                HasSubstr("tensor 'dbk' has shape [129], expected [128]"));
    Tensor short_buf = Tensor::empty({in.T - 1, good.ld}, DType::bf16, Device::cuda);
    EXPECT_THAT(call(saved, good, short_buf, nullptr),
                HasSubstr("tensor 'dqkv' has shape [10, 512], expected 11 rows of 512"));
  }
  EXPECT_FALSE(none.defined());
  expect_same_bytes(buf, buf0, "dqkv not written");
  expect_same_bytes(dbq, db0, "dbq not written");
}

// ---- (g) cuda::rope_inverse_dqkv_packed itself ---------------------------------------------

// The first element where two bit patterns differ, or -1.
template <typename U>
int64_t first_difference(const U* got, const U* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (got[i] != want[i]) return i;
  return -1;
}

// cuda::rope_inverse_dqkv_packed against its definition (rope_attention_bf16.h), on the kernel's
// own layouts rather than the op's: rope_inverse_dqkv_f32's f32 dq/dk/dv, each rounded by
// f32_to_bf16 into its member's columns of [T, ld], zero in every other column, and db +=
// column_sums_add of the f32 gradient where db is given (a null member's buffer untouched). Bit
// for bit, over a destination prefilled with NaN bits and guard elements before and after it. The
// 1.5B heads (12 / 2 of 128) and the 0.5B heads (14 / 2 of 64); T = 0, 1, 31 (less than one row
// pass), 128 (one whole chunk), 300 (a partial last chunk), 1000 (8 chunks); random positions
// into random tables; layouts: the training step's (tight, 16-byte aligned: the vector path),
// members out of order with padding columns between them (still aligned), one member's column
// odd, the destination 2 bytes off with an odd ld, and an input 2 bytes off (the last three: the
// 2-byte path).
TEST(RopeAttentionCuda, PackedKernelIsTheF32KernelThenPackingAndColumnSumsBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  struct Heads {
    int64_t Hq, Hkv, D;
  };
  struct Layout {
    const char* label;
    int64_t col[3];  // q, k, v
    int64_t ld;
    int64_t dst_off;  // elements between the buffer's (aligned) start and dst
    int64_t src_off;  // likewise for dqb
    bool db[3];
  };
  constexpr uint16_t kPrefill = 0x7FC1;  // a NaN: every written element must overwrite it
  constexpr int64_t kGuard = 9;          // elements after the last row, never written
  for (const Heads hd : {Heads{12, 2, 128}, Heads{14, 2, 64}}) {
    const int64_t nq = hd.Hq * hd.D, nkv = hd.Hkv * hd.D, half = hd.D / 2, P = 50;
    const int64_t n[3] = {nq, nkv, nkv};
    const int64_t tight = nq + 2 * nkv;
    const Layout layouts[] = {
        {"tight", {0, nq, nq + nkv}, tight, 0, 0, {true, true, true}},
        {"v, q, k with padding",
         {nkv + 16, nkv + 16 + nq + 8, 8},
         tight + 56,
         0,
         0,
         {false, true, true}},
        {"col_k odd", {0, nq + 1, nq + nkv + 8}, tight + 16, 0, 0, {true, false, true}},
        {"dst 2 bytes off, odd ld",
         {3, nq + 8, nq + nkv + 13},
         tight + 15,
         1,
         0,
         {false, false, true}},
        {"dqb 2 bytes off", {0, nq, nq + nkv}, tight, 0, 1, {true, true, false}},
    };
    const Tensor cos = gpu(randn({P, half}, 300)), sin = gpu(randn({P, half}, 301));
    for (const int64_t T : {0, 1, 31, 128, 300, 1000}) {
      const Tensor pos = gpu(gputest::rand_ids(std::max<int64_t>(T, 1), int32_t(P), 302 + T));
      // The bf16 gradients; dq at an offset of 0 or 1 element into its buffer.
      const Tensor gq = to_bf16(gpu(randn({T * nq + 1}, 310 + T)));
      const Tensor gk = to_bf16(gpu(randn({std::max<int64_t>(T * nkv, 1)}, 311 + T)));
      const Tensor gv = to_bf16(gpu(randn({std::max<int64_t>(T * nkv, 1)}, 312 + T)));
      // The definition's f32 gradients, from each source offset.
      Tensor grad32[2][3];
      for (int64_t off : {0, 1})
        for (int i = 0; i < 3; ++i)
          grad32[off][i] =
              Tensor::empty({std::max<int64_t>(T * n[i], 1)}, DType::f32, Device::cuda);
      for (int64_t off : {0, 1})
        cuda::rope_inverse_dqkv_f32(gq.data<uint16_t>() + off, gk.data<uint16_t>(),
                                    gv.data<uint16_t>(), T, hd.Hq, hd.Hkv, hd.D, pos.i32(),
                                    cos.f32(), sin.f32(), grad32[off][0].f32(),
                                    grad32[off][1].f32(), grad32[off][2].f32());
      for (const Layout& l : layouts) {
        const std::string what = std::to_string(hd.Hq) + "/" + std::to_string(hd.Hkv) + "x" +
                                 std::to_string(hd.D) + ", T " + std::to_string(T) + ", " + l.label;
        const int64_t len = l.dst_off + T * l.ld + kGuard;
        // Expected: the prefill, zero rows of ld, each member's rounded f32 values in its columns.
        std::vector<uint16_t> want(size_t(len), kPrefill);
        std::fill(want.begin() + l.dst_off, want.begin() + l.dst_off + T * l.ld, uint16_t(0));
        const Tensor* g32 = grad32[l.src_off];
        for (int i = 0; i < 3; ++i) {
          Tensor b = Tensor::empty(g32[i].shape(), DType::bf16, Device::cuda);
          cuda::f32_to_bf16(g32[i].f32(), b.data<uint16_t>(), g32[i].numel());
          const Tensor h = cpu(b);
          for (int64_t t = 0; t < T; ++t)
            std::memcpy(want.data() + l.dst_off + t * l.ld + l.col[i],
                        h.data<uint16_t>() + t * n[i], size_t(n[i]) * 2);
        }
        Tensor buf = gpu(Tensor::from_vector(
            std::vector<int32_t>(size_t(len + 1) / 2, int32_t(kPrefill * 0x10001u)),
            {(len + 1) / 2}));
        uint16_t* dst = reinterpret_cast<uint16_t*>(buf.raw()) + l.dst_off;
        // db: random starts; the expected sums by column_sums_add over the f32 gradients.
        Tensor db[3], db_want[3];
        cuda::PackedDqkv out;
        out.dst = dst;
        out.ld = l.ld;
        for (int i = 0; i < 3; ++i) {
          out.col[i] = l.col[i];
          db[i] = gpu(randn({n[i]}, 320 + i));
          db_want[i] = db[i].clone();
          if (!l.db[i]) continue;
          out.db[i] = db[i].f32();
          cuda::column_sums_add(g32[i].f32(), T, n[i], db_want[i].f32());
        }
        cuda::rope_inverse_dqkv_packed(gq.data<uint16_t>() + l.src_off, gk.data<uint16_t>(),
                                       gv.data<uint16_t>(), T, hd.Hq, hd.Hkv, hd.D, pos.i32(),
                                       cos.f32(), sin.f32(), out);
        const Tensor got = cpu(buf);
        const auto* g16 = reinterpret_cast<const uint16_t*>(got.raw());
        const int64_t d = first_difference(g16, want.data(), len);
        EXPECT_EQ(d, -1) << what << ": packed element " << d << " (row "
                         << (d - l.dst_off) / std::max<int64_t>(l.ld, 1) << ", column "
                         << (d - l.dst_off) % std::max<int64_t>(l.ld, 1) << ") is 0x" << std::hex
                         << (d >= 0 ? g16[d] : 0) << ", expected 0x"
                         << (d >= 0 ? want[size_t(d)] : 0);
        for (int i = 0; i < 3; ++i) {
          const Tensor gd = cpu(db[i]), wd = cpu(db_want[i]);
          const auto* gb = reinterpret_cast<const uint32_t*>(gd.raw());
          const auto* wb = reinterpret_cast<const uint32_t*>(wd.raw());
          EXPECT_EQ(first_difference(gb, wb, n[i]), -1) << what << ": db of member " << i;
        }
      }
    }
  }
}

// ---- (e) errors -------------------------------------------------------------------------------

TEST(RopeAttentionCuda, ErrorsNameTheArgumentBeforeAnythingIsWritten) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case c{{0, 4, 11}, 4, 2, 64};
  const Inputs in(c, 70);
  const Tensor q0 = in.q.clone(), k0 = in.k.clone();
  const Tensor out_init = gpu(Tensor::full({in.T, c.Hq, c.D}, 7.0f));
  Tensor out = out_init.clone(), lse;
  const auto fwd = [&](const Tensor& pos, Tensor& o) {
    return error_of([&] {
      ops::rope_attention_varlen(in.q, in.k, in.v, pos, in.cos, in.sin, in.cu, in.scale, o, lse);
    });
  };
  // A bf16 out outside autocast, and under autocast at a head dim the bf16 kernels do not take.
  Tensor out16 = Tensor::empty(in.q.shape(), DType::bf16, Device::cuda);
  const std::string no_scope = fwd(in.pos, out16);
  EXPECT_THAT(no_scope, HasSubstr("rope_attention_varlen: 'out' is bf16"));
  EXPECT_THAT(no_scope, HasSubstr("autocast off"));
  {
    ops::Bf16Autocast autocast;
    const Case c32{{0, 4, 11}, 4, 2, 32};
    const Inputs in32(c32, 71);
    Tensor o16 = Tensor::empty(in32.q.shape(), DType::bf16, Device::cuda), l;
    EXPECT_THAT(error_of([&] {
                  ops::rope_attention_varlen(in32.q, in32.k, in32.v, in32.pos, in32.cos, in32.sin,
                                             in32.cu, in32.scale, o16, l);
                }),
                HasSubstr("head dim 32"));
    // A position past the tables (checked on a host copy, as rope_ does).
    std::vector<int32_t> bad(size_t(in.T), 0);
    bad[5] = int32_t(in.P);
    EXPECT_THAT(fwd(gpu(Tensor::from_vector(bad, {in.T})), out),
                HasSubstr("rope_attention_varlen: position " + std::to_string(in.P) +
                          " at position 5 is outside"));
  }
  expect_same_bytes(out, out_init, "out not written");
  EXPECT_FALSE(lse.defined());
  expect_same_bytes(in.q, q0, "q untouched");
  expect_same_bytes(in.k, k0, "k untouched");

  // The backward: bf16 saved operands outside autocast; saved operands of the wrong shape.
  ops::RopeAttentionSaved saved;
  Tensor o, l;
  {
    ops::Bf16Autocast autocast;
    ops::rope_attention_varlen(in.q, in.k, in.v, in.pos, in.cos, in.sin, in.cu, in.scale, o, l,
                               &saved);
  }
  ASSERT_EQ(saved.q.dtype(), DType::bf16);
  Tensor dq, dk, dv;
  const auto bwd = [&](const ops::RopeAttentionSaved& s) {
    return error_of([&] {
      ops::rope_attention_varlen_backward(in.dout, s, o, l, in.pos, in.cos, in.sin, in.cu, in.scale,
                                          dq, dk, dv);
    });
  };
  const std::string e = bwd(saved);
  EXPECT_THAT(e, HasSubstr("rope_attention_varlen_backward: 'saved.q' is bf16"));
  EXPECT_THAT(e, HasSubstr("autocast off"));
  {
    ops::Bf16Autocast autocast;
    ops::RopeAttentionSaved wrong = saved;
    wrong.v = Tensor::empty({in.T, c.Hkv + 1, c.D}, DType::bf16, Device::cuda);
    EXPECT_THAT(bwd(wrong),
                HasSubstr("tensor 'saved.v' has shape [11, 3, 64], expected [11, 2, 64]"));
  }
  EXPECT_FALSE(dq.defined());
  EXPECT_FALSE(dk.defined());
  EXPECT_FALSE(dv.defined());
}

}  // namespace
}  // namespace gyre
