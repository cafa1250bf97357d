// ops::rope_attention_varlen and its backward (backend/rope_attention_ops.h) on the CPU, where
// they run the composition they are defined as: bitwise rope_ on copies of q and k, then
// attention_varlen (and its backward, then rope_ inverse on dq and dk), in f32 and f64, with GQA,
// an empty sequence and T = 0; q and k unchanged; the saved operands rope(q), rope(k) and v itself.
// Errors name the op and the argument before anything is written: bf16 tensors (the CUDA autocast
// path's) on the CPU — including a bf16 x for ops::linear — bad positions and cu_seqlens, saved
// operands of the wrong shape. attention_out_dtype is q's dtype on the CPU, even under autocast.
#include "gyre/backend/rope_attention_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "test_util.h"
#include "unit/backend/philox_tensors.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  return test::philox_randn(s, seed, 13, dt);
}

Tensor i32(const std::vector<int32_t>& v) { return Tensor::from_vector(v, {int64_t(v.size())}); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A packed batch: sequences of 3, 0 (empty), 1 and 5 tokens; 6 query heads over 2 kv heads.
struct Batch {
  int64_t T = 9, Hq = 6, Hkv = 2, D = 8, P = 16;
  DType dt;
  Tensor q, k, v, cos, sin, pos, cu, dout;
  float scale = 0.3f;
  explicit Batch(DType dt_ = DType::f32, int64_t T_ = 9) : T(T_), dt(dt_) {
    q = randn({T, Hq, D}, 1, dt);
    k = randn({T, Hkv, D}, 2, dt);
    v = randn({T, Hkv, D}, 3, dt);
    dout = randn({T, Hq, D}, 4, dt);
    cos = randn({P, D / 2}, 5, dt);
    sin = randn({P, D / 2}, 6, dt);
    std::vector<int32_t> p;
    for (int64_t t = 0; t < T; ++t) p.push_back(int32_t((t * 7 + 3) % P));
    pos = i32(p);
    cu = T == 9 ? i32({0, 3, 3, 4, 9}) : i32({0, int32_t(T)});
  }
};

struct Forward {
  Tensor out, lse, q_rot, k_rot;
};

// The composition the op is defined as.
Forward composition(const Batch& b) {
  Forward f;
  f.q_rot = b.q.clone();
  f.k_rot = b.k.clone();
  rope_(f.q_rot, b.pos, b.cos, b.sin);
  rope_(f.k_rot, b.pos, b.cos, b.sin);
  attention_varlen(f.q_rot, f.k_rot, b.v, b.cu, b.scale, f.out, f.lse);
  return f;
}

TEST(RopeAttentionCpu, ForwardAndBackwardAreTheComposition) {
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t T : {9, 1, 0}) {
      const std::string what = std::string(dtype_name(dt)) + " T " + std::to_string(T);
      const Batch b(dt, T);
      const Tensor q0 = b.q.clone(), k0 = b.k.clone();
      const Forward want = composition(b);
      Tensor out, lse;
      RopeAttentionSaved saved;
      rope_attention_varlen(b.q, b.k, b.v, b.pos, b.cos, b.sin, b.cu, b.scale, out, lse, &saved);
      EXPECT_TRUE(same_bytes(out, want.out)) << what;
      EXPECT_TRUE(same_bytes(lse, want.lse)) << what;
      EXPECT_TRUE(same_bytes(saved.q, want.q_rot)) << what;
      EXPECT_TRUE(same_bytes(saved.k, want.k_rot)) << what;
      EXPECT_EQ(saved.v.raw(), b.v.raw()) << what;  // v itself, no copy
      EXPECT_TRUE(same_bytes(b.q, q0)) << what;     // the inputs are not rotated
      EXPECT_TRUE(same_bytes(b.k, k0)) << what;

      // Backward: attention_varlen_backward, then the inverse rotation of dq and dk.
      Tensor dq_want, dk_want, dv_want;
      attention_varlen_backward(b.dout, want.q_rot, want.k_rot, b.v, want.out, want.lse, b.cu,
                                b.scale, dq_want, dk_want, dv_want);
      rope_(dq_want, b.pos, b.cos, b.sin, true);
      rope_(dk_want, b.pos, b.cos, b.sin, true);
      Tensor dq, dk, dv = Tensor::zeros({T, b.Hkv, b.D}, dt);  // allocated and preallocated
      rope_attention_varlen_backward(b.dout, saved, out, lse, b.pos, b.cos, b.sin, b.cu, b.scale,
                                     dq, dk, dv);
      EXPECT_TRUE(same_bytes(dq, dq_want)) << what;
      EXPECT_TRUE(same_bytes(dk, dk_want)) << what;
      EXPECT_TRUE(same_bytes(dv, dv_want)) << what;
    }
}

TEST(RopeAttentionCpu, OutDtypeIsQsOnTheCpu) {
  const Batch b;
  EXPECT_EQ(attention_out_dtype(b.q), DType::f32);
  Bf16Autocast autocast;  // the CPU ignores the scope
  EXPECT_EQ(attention_out_dtype(b.q), DType::f32);
  EXPECT_EQ(attention_out_dtype(Batch(DType::f64).q), DType::f64);
}

TEST(RopeAttentionCpu, ForwardErrorsNameTheArgumentAndWriteNothing) {
  const Batch b;
  const Tensor q0 = b.q.clone(), k0 = b.k.clone();
  Tensor out = Tensor::zeros({b.T, b.Hq, b.D}), lse;
  const auto call = [&](const Tensor& pos, const Tensor& cu, Tensor& o) {
    return error_of(
        [&] { rope_attention_varlen(b.q, b.k, b.v, pos, b.cos, b.sin, cu, 0.3f, o, lse); });
  };
  EXPECT_THAT(call(i32({0, 1, 2, 3, 16, 5, 6, 7, 8}), b.cu, out),
              HasSubstr("rope_attention_varlen: position 16 at position 4 is outside [0, 16)"));
  EXPECT_THAT(call(b.pos, i32({0, 3, 3, 4, 8}), out),
              HasSubstr("rope_attention_varlen: cu_seqlens ends at 8 but the batch has 9 tokens"));
  EXPECT_THAT(call(b.pos, i32({0, 3, 2, 4, 9}), out),
              HasSubstr("rope_attention_varlen: cu_seqlens decreases at index 2"));
  Tensor out16 = Tensor::zeros({b.T, b.Hq, b.D}, DType::bf16);
  const std::string bf16_out = call(b.pos, b.cu, out16);
  EXPECT_THAT(bf16_out, HasSubstr("rope_attention_varlen: 'out' is bf16"));
  EXPECT_THAT(bf16_out, HasSubstr("only the CUDA backend writes under ops::Bf16Autocast"));
  EXPECT_THAT(bf16_out, HasSubstr("here: cpu"));
  Tensor k_odd = randn({b.T, b.Hkv, b.D - 1}, 7);
  EXPECT_THAT(error_of([&] {
                rope_attention_varlen(b.q, k_odd, b.v, b.pos, b.cos, b.sin, b.cu, 0.3f, out, lse);
              }),
              HasSubstr("rope_attention_varlen: k [9, 2, 7] does not match q [9, 6, 8]"));
  EXPECT_TRUE(same_bytes(b.q, q0));
  EXPECT_TRUE(same_bytes(b.k, k0));
  EXPECT_TRUE(same_bytes(out, Tensor::zeros({b.T, b.Hq, b.D})));  // not written
  EXPECT_FALSE(lse.defined());                                    // not even allocated
}

TEST(RopeAttentionCpu, BackwardErrorsNameTheArgumentAndWriteNothing) {
  const Batch b;
  Tensor out, lse;
  RopeAttentionSaved saved;
  rope_attention_varlen(b.q, b.k, b.v, b.pos, b.cos, b.sin, b.cu, b.scale, out, lse, &saved);
  Tensor dq, dk, dv = Tensor::zeros({b.T, b.Hkv, b.D});
  const auto call = [&](const RopeAttentionSaved& s, const Tensor& dout, const Tensor& pos) {
    return error_of([&] {
      rope_attention_varlen_backward(dout, s, out, lse, pos, b.cos, b.sin, b.cu, b.scale, dq, dk,
                                     dv);
    });
  };
  RopeAttentionSaved s16 = saved;
  s16.q = saved.q.to(DType::bf16);
  const std::string bf16_saved = call(s16, b.dout, b.pos);
  EXPECT_THAT(bf16_saved, HasSubstr("rope_attention_varlen_backward: 'saved.q' is bf16"));
  EXPECT_THAT(bf16_saved, HasSubstr("only the CUDA backend reads under ops::Bf16Autocast"));
  EXPECT_THAT(call(saved, b.dout.to(DType::bf16), b.pos), HasSubstr("'dout' is bf16"));
  RopeAttentionSaved s_short = saved;
  s_short.v = randn({b.T, b.Hkv, b.D - 2}, 8);
  EXPECT_THAT(call(s_short, b.dout, b.pos),
              HasSubstr("tensor 'saved.v' has shape [9, 2, 6], expected [9, 2, 8]"));
  RopeAttentionSaved s_flat = saved;
  s_flat.q = saved.q.reshape({b.T, b.Hq * b.D});
  EXPECT_THAT(call(s_flat, b.dout, b.pos), HasSubstr("'saved.q' must be [T, Hq, D]"));
  RopeAttentionSaved s_none = saved;
  s_none.k = Tensor();
  EXPECT_THAT(call(s_none, b.dout, b.pos), HasSubstr("'saved.k' is undefined"));
  EXPECT_THAT(call(saved, b.dout, i32({0, 1, 2, 3, 4, 5, 6, 7, 99})),
              HasSubstr("rope_attention_varlen_backward: position 99 at position 8"));
  EXPECT_FALSE(dq.defined());  // a rejected call allocates nothing into the caller's tensors
  EXPECT_FALSE(dk.defined());
  EXPECT_TRUE(same_bytes(dv, Tensor::zeros({b.T, b.Hkv, b.D})));
}

// ops::linear reads a bf16 x only on CUDA under autocast (the bf16 attention output).
TEST(RopeAttentionCpu, LinearRejectsBf16XOnTheCpu) {
  Tensor x = randn({4, 8}, 1).to(DType::bf16), w = randn({3, 8}, 2), b, y;
  const std::string e = error_of([&] { linear(x, w, b, y); });
  EXPECT_THAT(e, HasSubstr("ops::linear: input 'x' is bf16 but the tensors are on cpu"));
  EXPECT_THAT(e, HasSubstr("pass an f32 x"));
  Bf16Autocast autocast;
  EXPECT_THAT(error_of([&] { linear(x, w, b, y); }), HasSubstr("input 'x' is bf16"));
  EXPECT_FALSE(y.defined());
}

}  // namespace
}  // namespace gyre::ops
