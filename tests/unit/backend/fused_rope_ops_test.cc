// ops::rope_qk_ and ops::rope_qk_paged_kv_write_ (backend/fused_rope_ops.h) on the CPU: bitwise
// rope_ on q then on k (GQA head counts, f32 and f64) and then paged_kv_write, and errors that name
// the argument before anything changes.
#include "gyre/backend/fused_rope_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "test_util.h"

namespace gyre::ops {
namespace {

using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed) {
  PhiloxStream r(seed, 9);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal();
  return Tensor::from_vector(v, s);
}

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

}  // namespace
}  // namespace gyre::ops
