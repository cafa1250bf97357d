// ops::rope_qk_ (backend/fused_rope_ops.h) on the CPU: bitwise rope_ on q then on k (GQA head
// counts, f32 and f64), and errors that name the argument before either tensor changes.
#include "gyre/backend/fused_rope_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/philox.h"

namespace gyre::ops {
namespace {

using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed) {
  PhiloxStream r(seed, 9);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal();
  return Tensor::from_vector(v, s);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

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

}  // namespace
}  // namespace gyre::ops
