// ops::rope_qk_, ops::rope_qk_paged_kv_write_ and ops::rope_paged_attention_
// (backend/fused_rope_ops.h) on the CPU: bitwise rope_ on q then on k (GQA head counts, f32 and
// f64), then paged_kv_write, then paged_attention, and errors that name the argument before
// anything changes; the fused decode's dispatch conditions (host arithmetic).
#include "gyre/backend/fused_rope_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"
#include "test_util.h"
#include "unit/backend/philox_tensors.h"

namespace gyre::ops {
namespace {

using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed) { return test::philox_randn(s, seed, 9); }

using test::error_of;

TEST(FusedRopeCpu, EqualsRopeOnQThenK) {
  const int64_t T = 5, Hq = 6, Hkv = 2, D = 8, P = 16;
  Tensor cos = randn({P, D / 2}, 1), sin = randn({P, D / 2}, 2);
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{0, 3, 15, 7, 7}, {T});
  Tensor q = randn({T, Hq, D}, 3), k = randn({T, Hkv, D}, 4);
  Tensor q_ref = q.clone(), k_ref = k.clone();
  rope_qk_(q, k, pos, cos, sin);
  rope_(q_ref, pos, cos, sin);
  rope_(k_ref, pos, cos, sin);
  EXPECT_EQ(q.to_vector(), q_ref.to_vector());
  EXPECT_EQ(k.to_vector(), k_ref.to_vector());
}

TEST(FusedRopeCpu, BadArgumentsAreNamed) {
  const int64_t T = 3, D = 8;
  Tensor cos = randn({4, D / 2}, 1), sin = randn({4, D / 2}, 2);
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{0, 1, 2}, {T});
  Tensor q = randn({T, 4, D}, 3), k = randn({T, 2, D}, 4), none;
  const std::vector<float> q_before = q.to_vector();
  Tensor k_short = randn({T - 1, 2, D}, 5);
  EXPECT_THAT(error_of([&] { rope_qk_(q, k_short, pos, cos, sin); }),
              HasSubstr("does not match q [3, 4, 8]"));
  EXPECT_THAT(error_of([&] { rope_qk_(q, none, pos, cos, sin); }), HasSubstr("'k' is undefined"));
  Tensor bad_pos = Tensor::from_vector(std::vector<int32_t>{0, 9, 1}, {T});
  EXPECT_THAT(error_of([&] { rope_qk_(q, k, bad_pos, cos, sin); }),
              HasSubstr("position 9 at position 1 is outside [0, 4)"));
  Tensor q2 = randn({T, 4, 7}, 6), k2 = randn({T, 2, 7}, 7);
  EXPECT_THAT(error_of([&] { rope_qk_(q2, k2, pos, cos, sin); }), HasSubstr("head dim 7"));
  Tensor k64 = Tensor::zeros({T, 2, D}, DType::f64);
  EXPECT_THAT(error_of([&] { rope_qk_(q, k64, pos, cos, sin); }), HasSubstr("'k' is f64"));
  EXPECT_EQ(q.to_vector(), q_before);  // nothing rotated by a rejected call
}

TEST(FusedRopeCpu, KvWriteEqualsRopeThenWrite) {
  const int64_t T = 4, Hq = 6, Hkv = 2, D = 8, P = 16, pages = 3, ps = 4;
  Tensor cos = randn({P, D / 2}, 1), sin = randn({P, D / 2}, 2);
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{0, 9, 15, 3}, {T});
  Tensor slots = Tensor::from_vector(std::vector<int32_t>{5, -1, 11, 0}, {T});
  Tensor q = randn({T, Hq, D}, 3), k = randn({T, Hkv, D}, 4), v = randn({T, Hkv, D}, 5);
  Tensor kc = randn({pages, ps, Hkv, D}, 6), vc = randn({pages, ps, Hkv, D}, 7);
  Tensor q_ref = q.clone(), k_ref = k.clone(), kc_ref = kc.clone(), vc_ref = vc.clone();
  const std::vector<float> k_before = k.to_vector();
  rope_qk_paged_kv_write_(q, k, v, pos, cos, sin, slots, kc, vc);
  rope_(q_ref, pos, cos, sin);
  rope_(k_ref, pos, cos, sin);
  paged_kv_write(k_ref, v, slots, kc_ref, vc_ref);
  EXPECT_EQ(q.to_vector(), q_ref.to_vector());
  EXPECT_EQ(kc.to_vector(), kc_ref.to_vector());
  EXPECT_EQ(vc.to_vector(), vc_ref.to_vector());
  EXPECT_EQ(k.to_vector(), k_before);  // k is only read

  // Rejected before anything changes: a slot past the cache, a position past the tables.
  const std::vector<float> q_now = q.to_vector(), kc_now = kc.to_vector();
  Tensor bad_slots = Tensor::from_vector(std::vector<int32_t>{5, -1, 12, 0}, {T});
  EXPECT_THAT(error_of([&] { rope_qk_paged_kv_write_(q, k, v, pos, cos, sin, bad_slots, kc, vc); }),
              HasSubstr("rope_qk_paged_kv_write_: slot_mapping[2] = 12 outside the cache's 12"));
  Tensor bad_pos = Tensor::from_vector(std::vector<int32_t>{0, 16, 1, 2}, {T});
  EXPECT_THAT(error_of([&] { rope_qk_paged_kv_write_(q, k, v, bad_pos, cos, sin, slots, kc, vc); }),
              HasSubstr("position 16 at position 1 is outside [0, 16)"));
  Tensor v_short = randn({T, Hkv, D - 2}, 8);
  EXPECT_THAT(
      error_of([&] { rope_qk_paged_kv_write_(q, k, v_short, pos, cos, sin, slots, kc, vc); }),
      HasSubstr("v [4, 2, 6] != k [4, 2, 8]"));
  EXPECT_EQ(q.to_vector(), q_now);
  EXPECT_EQ(kc.to_vector(), kc_now);
}

// ---- rope_paged_attention_: the decode step's RoPE, KV write and attention -------------------

// A decode step of 3 sequences over a CPU f32 cache (the CPU runs the two ops): kv_lens 5, 1, 9
// with pages of 4 slots; slot_mapping is each sequence's last position, the middle row padding.
struct DecodeStep {
  int64_t B = 3, Hq = 4, Hkv = 2, D = 8, ps = 4, pages = 6, P = 16;
  std::vector<int32_t> cu = {0, 1, 2, 3}, kv = {5, 1, 9}, indptr = {0, 2, 3, 6},
                       page_ids = {3, 1, 0, 2, 5, 4}, pos = {4, 0, 8};
  // Sequence 0's position 4: page_ids[1] = 1, offset 0; sequence 2's position 8: page_ids[5] = 4.
  std::vector<int32_t> slots = {4, -1, 16};
  Tensor t(const std::vector<int32_t>& v) const {
    return Tensor::from_vector(v, {int64_t(v.size())});
  }
};

TEST(FusedRopeCpu, RopePagedAttentionEqualsTheTwoOps) {
  const DecodeStep s;
  Tensor cos = randn({s.P, s.D / 2}, 1), sin = randn({s.P, s.D / 2}, 2);
  Tensor q = randn({s.B, s.Hq, s.D}, 3), k = randn({s.B, s.Hkv, s.D}, 4);
  Tensor v = randn({s.B, s.Hkv, s.D}, 5);
  Tensor kc = randn({s.pages, s.ps, s.Hkv, s.D}, 6), vc = randn({s.pages, s.ps, s.Hkv, s.D}, 7);
  Tensor q_ref = q.clone(), kc_ref = kc.clone(), vc_ref = vc.clone();
  Tensor out = Tensor::zeros({s.B, s.Hq, s.D}), out_ref = Tensor::zeros({s.B, s.Hq, s.D});
  const std::vector<float> k_before = k.to_vector(), v_before = v.to_vector();
  rope_qk_paged_kv_write_(q_ref, k, v, s.t(s.pos), cos, sin, s.t(s.slots), kc_ref, vc_ref);
  paged_attention(q_ref, kc_ref, vc_ref, s.t(s.cu), s.t(s.kv), s.t(s.indptr), s.t(s.page_ids),
                  0.35f, out_ref);
  rope_paged_attention_(q, k, v, s.t(s.pos), cos, sin, s.t(s.slots), kc, vc, s.t(s.cu), s.t(s.kv),
                        s.t(s.indptr), s.t(s.page_ids), 0.35f, out);
  EXPECT_EQ(out.to_vector(), out_ref.to_vector());
  EXPECT_EQ(kc.to_vector(), kc_ref.to_vector());
  EXPECT_EQ(vc.to_vector(), vc_ref.to_vector());
  EXPECT_EQ(q.to_vector(), q_ref.to_vector());  // the CPU runs the two ops: q rotated
  EXPECT_EQ(k.to_vector(), k_before);
  EXPECT_EQ(v.to_vector(), v_before);
}

TEST(FusedRopeCpu, RopePagedAttentionErrorsChangeNothing) {
  const DecodeStep s;
  Tensor cos = randn({s.P, s.D / 2}, 1), sin = randn({s.P, s.D / 2}, 2);
  Tensor q = randn({s.B, s.Hq, s.D}, 3), k = randn({s.B, s.Hkv, s.D}, 4);
  Tensor v = randn({s.B, s.Hkv, s.D}, 5);
  Tensor kc = randn({s.pages, s.ps, s.Hkv, s.D}, 6), vc = randn({s.pages, s.ps, s.Hkv, s.D}, 7);
  Tensor out = Tensor::zeros({s.B, s.Hq, s.D});
  const std::vector<float> q0 = q.to_vector(), kc0 = kc.to_vector(), out0 = out.to_vector();
  const auto call = [&](const std::vector<int32_t>& pos, const std::vector<int32_t>& slots,
                        const std::vector<int32_t>& kv, Tensor& o) {
    rope_paged_attention_(q, k, v, s.t(pos), cos, sin, s.t(slots), kc, vc, s.t(s.cu), s.t(kv),
                          s.t(s.indptr), s.t(s.page_ids), 0.35f, o);
  };
  EXPECT_THAT(error_of([&] {
                call(s.pos, {4, -1, 24}, s.kv, out);
              }),
              HasSubstr("rope_paged_attention_: slot_mapping[2] = 24 outside the cache's 24"));
  EXPECT_THAT(error_of([&] {
                call({4, 16, 8}, s.slots, s.kv, out);
              }),
              HasSubstr("position 16 at position 1 is outside [0, 16)"));
  EXPECT_THAT(error_of([&] {
                call(s.pos, s.slots, {5, 1, 13}, out);
              }),
              HasSubstr("rope_paged_attention_: sequence 2: 3 pages cannot hold kv_len 13"));
  Tensor wrong = Tensor::zeros({s.B, s.Hq - 1, s.D});
  EXPECT_THAT(error_of([&] { call(s.pos, s.slots, s.kv, wrong); }),
              HasSubstr("rope_paged_attention_: out must have q's shape"));
  EXPECT_EQ(q.to_vector(), q0);
  EXPECT_EQ(kc.to_vector(), kc0);
  EXPECT_EQ(out.to_vector(), out0);
}

// The dispatch condition: one CUDA kernel only for a pure decode step over a bf16 CUDA cache with
// the bf16 kernel's head dims and at most 16 query heads per kv head.
TEST(FusedRopeCpu, RopePagedAttentionFusesOnlyBf16CudaDecode) {
  const bool cuda_build =
#ifdef GYRE_HAVE_CUDA
      true;
#else
      false;
#endif
  const Device cu = Device::cuda;
  EXPECT_EQ(rope_paged_attention_fuses(cu, DType::bf16, 14, 2, 64, 1, 1, 1), cuda_build);
  EXPECT_EQ(rope_paged_attention_fuses(cu, DType::bf16, 12, 2, 128, 256, 256, 1), cuda_build);
  EXPECT_EQ(rope_paged_attention_fuses(cu, DType::bf16, 8, 8, 64, 3, 3, 1), cuda_build);
  EXPECT_EQ(rope_paged_attention_fuses(cu, DType::bf16, 32, 2, 64, 3, 3, 1), cuda_build);  // G 16
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 40, 2, 64, 3, 3, 1));           // G 20
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 14, 2, 96, 1, 1, 1));  // head dim
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::f32, 14, 2, 64, 1, 1, 1));   // f32 cache
  EXPECT_FALSE(rope_paged_attention_fuses(Device::cpu, DType::f32, 14, 2, 64, 1, 1, 1));
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 14, 2, 64, 2, 5, 4));  // prefill
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 14, 2, 64, 3, 3, 2));  // 0, 1, 2
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 14, 2, 64, 0, 0, 1));  // empty
  EXPECT_FALSE(rope_paged_attention_fuses(cu, DType::bf16, 14, 3, 64, 1, 1, 1));  // 14 % 3
}

// The index condition (paged_ops.h): one token per sequence, each slot the last position's.
TEST(FusedRopeCpu, DecodeSlotsMatchPages) {
  const DecodeStep s;
  const auto match = [&](const std::vector<int32_t>& cu, const std::vector<int32_t>& slots) {
    return decode_slots_match_pages(cu.data(), s.kv.data(), s.indptr.data(), s.page_ids.data(),
                                    slots.data(), s.B, s.ps);
  };
  EXPECT_TRUE(match(s.cu, s.slots));
  EXPECT_TRUE(match(s.cu, {4, 0, 16}));        // the middle row writes its position 0: page 0
  EXPECT_TRUE(match(s.cu, {-1, -1, -1}));      // all padding
  EXPECT_FALSE(match(s.cu, {5, -1, 16}));      // sequence 0's position 5 is not its last
  EXPECT_FALSE(match(s.cu, {4, -1, 20}));      // another page
  EXPECT_FALSE(match({0, 1, 1, 3}, s.slots));  // a sequence without and one with 2 tokens
  EXPECT_FALSE(decode_slots_match_pages(s.cu.data(), s.kv.data(), s.indptr.data(),
                                        s.page_ids.data(), s.slots.data(), 0, s.ps));
}

}  // namespace
}  // namespace gyre::ops
