// ops::rope_attention_varlen and its backward (backend/rope_attention_ops.h) on the CPU, where
// they run the composition they are defined as: bitwise rope_ on copies of q and k, then
// attention_varlen (and its backward, then rope_ inverse on dq and dk), in f32 and f64, with GQA,
// an empty sequence and T = 0; q and k unchanged; the saved operands rope(q), rope(k) and v itself.
// Errors name the op and the argument before anything is written: bf16 tensors (the CUDA autocast
// path's) on the CPU — including a bf16 x for ops::linear — bad positions and cu_seqlens, saved
// operands of the wrong shape. attention_out_dtype is q's dtype on the CPU, even under autocast.
// rope_attention_varlen_backward_packed (CUDA autocast only) is a clear error here, after naming a
// bad layout, packed buffer or bias gradient; rope_packed_layout is linear_group_backward's
// packing.
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

// ---- rope_attention_varlen_backward_packed: the q/k/v group's packed bf16 dy

// linear_group_backward's packing of q, k, v: each member at the next multiple of 128 columns.
TEST(RopeAttentionCpu, PackedLayoutIsTheGroupsPacking) {
  struct Want {
    int64_t Hq, Hkv, D, col_k, col_v, ld;
  };
  for (const Want& w : {Want{14, 2, 64, 896, 1024, 1152},    // Qwen2.5-0.5B: no padding
                        Want{12, 2, 128, 1536, 1792, 2048},  // Qwen2.5-1.5B
                        Want{2, 1, 64, 128, 256, 384},       // 64-column k and v, padded
                        Want{6, 2, 8, 128, 256, 384}}) {     // Batch's heads
    const RopePackedLayout l = rope_packed_layout(w.Hq, w.Hkv, w.D);
    EXPECT_EQ(l.col_q, 0) << w.Hq << "/" << w.Hkv << " D " << w.D;
    EXPECT_EQ(l.col_k, w.col_k) << w.Hq << "/" << w.Hkv << " D " << w.D;
    EXPECT_EQ(l.col_v, w.col_v) << w.Hq << "/" << w.Hkv << " D " << w.D;
    EXPECT_EQ(l.ld, w.ld) << w.Hq << "/" << w.Hkv << " D " << w.D;
  }
}

// The packed backward runs only on the CUDA bf16 attention path: on the CPU (with or without an
// autocast scope) a valid call is a clear error pointing at the composition; bad layouts, packed
// buffers and bias gradients are named first. Nothing is written or allocated either way.
TEST(RopeAttentionCpu, PackedBackwardIsACudaAutocastOpAndChecksItsLayout) {
  const Batch b;  // Hq 6, Hkv 2, D 8: q 48 columns, k and v 16 each
  Tensor out, lse;
  RopeAttentionSaved saved;
  rope_attention_varlen(b.q, b.k, b.v, b.pos, b.cos, b.sin, b.cu, b.scale, out, lse, &saved);
  const RopePackedLayout good = rope_packed_layout(b.Hq, b.Hkv, b.D);
  const Tensor db0q = randn({b.Hq * b.D}, 20), db0kv = randn({b.Hkv * b.D}, 21);
  const Tensor buf0 = Tensor::full({b.T, good.ld}, 3.0f).to(DType::bf16);
  Tensor dbq = db0q.clone(), dbk = db0kv.clone(), dbv = db0kv.clone();
  Tensor buf = buf0.clone(), none;
  const auto call = [&](const RopePackedLayout& l, Tensor& dqkv, Tensor* q, Tensor* k, Tensor* v,
                        const Tensor& pos) {
    return error_of([&] {
      rope_attention_varlen_backward_packed(b.dout, saved, out, lse, pos, b.cos, b.sin, b.cu,
                                            b.scale, l, dqkv, q, k, v);
    });
  };
  // A valid call, undefined and preallocated buffers, with and without bias gradients.
  for (bool autocast_on : {false, true}) {
    Bf16Autocast autocast(autocast_on);
    const std::string e = call(good, none, &dbq, &dbk, &dbv, b.pos);
    EXPECT_THAT(e, HasSubstr("ops::rope_attention_varlen_backward_packed: runs only where the "
                             "attention backward runs the bf16 kernels"));
    EXPECT_THAT(e, HasSubstr(std::string("here: cpu, autocast ") + (autocast_on ? "on" : "off")));
    EXPECT_THAT(e, HasSubstr("call rope_attention_varlen_backward, then linear_group_backward"));
    EXPECT_THAT(call(good, buf, nullptr, nullptr, nullptr, b.pos), HasSubstr("runs only where"));
  }
  // The layout: ld, unaligned, overlapping and out-of-row columns.
  RopePackedLayout l = good;
  l.ld = 300;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("rope_attention_varlen_backward_packed: layout.ld is 300; the packed "
                        "width must be a positive multiple of 128"));
  l = good;
  l.col_k = 64;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("layout.col_k is 64 (16 columns of k): it must be a non-negative multiple "
                        "of 128 with the member's columns inside ld 384"));
  l = good;
  l.col_v = l.col_k;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("layout.col_v = 128 (16 columns) overlaps layout.col_k = 128 (16 "
                        "columns); the members need columns of their own"));
  l = good;
  l.col_q = 256, l.col_v = 0;  // any order is fine, but not two members in one slot
  l.col_k = 256;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("layout.col_k = 256 (16 columns) overlaps layout.col_q = 256"));
  l = good;
  l.col_v = l.ld;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("layout.col_v is 384 (16 columns of v)"));
  l = good;
  l.col_q = -128;
  EXPECT_THAT(call(l, none, nullptr, nullptr, nullptr, b.pos), HasSubstr("layout.col_q is -128"));
  // The packed buffer: dtype and shape.
  Tensor buf32 = Tensor::zeros({b.T, good.ld});
  EXPECT_THAT(call(good, buf32, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("output 'dqkv' is f32, expected bf16"));
  Tensor narrow = Tensor::zeros({b.T, 256}, DType::bf16);
  EXPECT_THAT(call(good, narrow, nullptr, nullptr, nullptr, b.pos),
              HasSubstr("tensor 'dqkv' has shape [9, 256], expected 9 rows of 384"));
  // The bias gradients: shape and dtype.
  Tensor db_short = randn({b.Hq * b.D - 1}, 22);
  EXPECT_THAT(call(good, none, &db_short, nullptr, nullptr, b.pos),
              HasSubstr("tensor 'dbq' has shape [47], expected [48]"));
  Tensor db_wrong = db0q.clone();  // q's width where v's is expected
  EXPECT_THAT(call(good, none, nullptr, nullptr, &db_wrong, b.pos),
              HasSubstr("tensor 'dbv' has shape [48], expected [16]"));
  Tensor db16 = db0kv.to(DType::bf16);
  EXPECT_THAT(call(good, none, nullptr, &db16, nullptr, b.pos),
              HasSubstr("tensor 'dbk' must be f32 (or f64), got bf16"));
  // The inputs: rope_attention_varlen_backward's checks under this op's name.
  EXPECT_THAT(call(good, none, nullptr, nullptr, nullptr, i32({0, 1, 2, 3, 4, 5, 6, 7, 99})),
              HasSubstr("rope_attention_varlen_backward_packed: position 99 at position 8"));
  RopeAttentionSaved s_short = saved;
  s_short.v = randn({b.T, b.Hkv, b.D - 2}, 8);
  EXPECT_THAT(error_of([&] {
                rope_attention_varlen_backward_packed(b.dout, s_short, out, lse, b.pos, b.cos,
                                                      b.sin, b.cu, b.scale, good, none);
              }),
              HasSubstr("tensor 'saved.v' has shape [9, 2, 6], expected [9, 2, 8]"));
  // Nothing written, nothing allocated.
  EXPECT_FALSE(none.defined());
  EXPECT_TRUE(same_bytes(buf, buf0));
  EXPECT_TRUE(same_bytes(dbq, db0q));
  EXPECT_TRUE(same_bytes(dbk, db0kv));
  EXPECT_TRUE(same_bytes(dbv, db0kv));
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
