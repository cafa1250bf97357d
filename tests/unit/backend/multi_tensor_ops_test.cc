// Multi-tensor ops (backend/multi_tensor_ops.h) on the CPU: bitwise the per-tensor ops applied to
// each tensor, and argument errors that name the list, the index and what is wrong.
#include "gyre/backend/multi_tensor_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "test_util.h"

namespace gyre::ops {
namespace {

using ::testing::HasSubstr;

// Odd sizes, including empty and single-element tensors and one spanning several CUDA chunks.
const std::vector<Shape> kShapes = {{0}, {1}, {7}, {3, 5}, {16385}, {2, 0}, {33, 1000}};

Tensor randn(const Shape& s, uint64_t seed, float scale = 1.0f) {
  PhiloxStream r(seed, 3);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal() * scale;
  return Tensor::from_vector(v, s);
}

std::vector<Tensor> rand_list(uint64_t seed, float scale = 1.0f) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < kShapes.size(); ++i) out.push_back(randn(kShapes[i], seed + i, scale));
  return out;
}

std::vector<Tensor> clones(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (auto& t : ts) out.push_back(t.clone());
  return out;
}

template <typename T = Tensor>
std::vector<T*> ptrs(std::vector<Tensor>& ts) {
  std::vector<T*> out;
  for (auto& t : ts) out.push_back(&t);
  return out;
}

void expect_bitwise(const std::vector<Tensor>& got, const std::vector<Tensor>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i].to_vector(), want[i].to_vector()) << what << "[" << i << "]";
}

// The error message of f(), or "" if it does not throw gyre::Error.
using test::error_of;

TEST(MultiTensorOps, SumSquaresEqualsPerTensorBitwise) {
  auto ts = rand_list(11);
  auto cp = ptrs<const Tensor>(ts);
  const std::vector<double> each = sum_squares_each(cp);
  double want = 0;
  ASSERT_EQ(each.size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const double s = sum_squares(ts[i]);
    EXPECT_EQ(each[i], s) << i;
    want += s;
  }
  EXPECT_EQ(sum_squares_many(cp), want);
  EXPECT_EQ(each[0], 0.0);  // empty tensor
}

TEST(MultiTensorOps, ScaleEqualsPerTensorBitwise) {
  auto a = rand_list(21), b = clones(a);
  scale_many(ptrs(a), 0.37f);
  for (auto& t : b) scale_(t, 0.37f);
  expect_bitwise(a, b, "scaled");
}

TEST(MultiTensorOps, AdamWEqualsPerTensorBitwiseOverSteps) {
  auto p = rand_list(31), p_ref = clones(p);
  std::vector<Tensor> m, v, m_ref, v_ref;
  for (auto& s : kShapes) {
    m.push_back(Tensor::zeros(s));
    v.push_back(Tensor::zeros(s));
    m_ref.push_back(Tensor::zeros(s));
    v_ref.push_back(Tensor::zeros(s));
  }
  AdamWParams hp;
  hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    auto g = rand_list(100 * step, 0.01f);
    hp.step = step;
    adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp);
    for (size_t i = 0; i < p.size(); ++i) adamw_step(p_ref[i], g[i], m_ref[i], v_ref[i], hp);
    expect_bitwise(p, p_ref, "param");
    expect_bitwise(m, m_ref, "m");
    expect_bitwise(v, v_ref, "v");
  }
}

// AdamWParams::grad_scale (the clip folded into the update) is bitwise scale_ then the unscaled
// step, per tensor and multi-tensor, and leaves the gradients unscaled.
TEST(MultiTensorOps, AdamWGradScaleEqualsScalingFirstBitwise) {
  auto p = rand_list(41), p_one = clones(p), p_ref = clones(p);
  std::vector<Tensor> m, v, m_one, v_one, m_ref, v_ref;
  for (auto& s : kShapes)
    for (auto* l : {&m, &v, &m_one, &v_one, &m_ref, &v_ref}) l->push_back(Tensor::zeros(s));
  AdamWParams hp;
  hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    auto g = rand_list(200 * step, 0.3f), g_before = clones(g), g_scaled = clones(g);
    for (auto& t : g_scaled) scale_(t, 0.37f);
    hp.step = step;
    AdamWParams scaled = hp;
    scaled.grad_scale = 0.37f;
    adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), scaled);
    for (size_t i = 0; i < p.size(); ++i) {
      adamw_step(p_one[i], g[i], m_one[i], v_one[i], scaled);
      adamw_step(p_ref[i], g_scaled[i], m_ref[i], v_ref[i], hp);
    }
    expect_bitwise(g, g_before, "gradient left unscaled");
    expect_bitwise(p, p_ref, "param (many)");
    expect_bitwise(m, m_ref, "m (many)");
    expect_bitwise(v, v_ref, "v (many)");
    expect_bitwise(p_one, p_ref, "param (per tensor)");
    expect_bitwise(v_one, v_ref, "v (per tensor)");
  }
}

TEST(MultiTensorOps, EmptyListsAreNoOps) {
  EXPECT_EQ(sum_squares_many({}), 0.0);
  EXPECT_TRUE(sum_squares_each({}).empty());
  scale_many({}, 2.0f);
  adamw_step_many({}, {}, {}, {}, AdamWParams{});
}

TEST(MultiTensorOps, BadArgumentsNameTheTensor) {
  std::vector<Tensor> p = {Tensor::zeros({2, 3}), Tensor::zeros({4})};
  std::vector<Tensor> g = {Tensor::zeros({2, 3}), Tensor::zeros({5})};  // g[1] shape differs
  std::vector<Tensor> m = {Tensor::zeros({2, 3}), Tensor::zeros({4})};
  std::vector<Tensor> v = {Tensor::zeros({2, 3}), Tensor::zeros({4})};
  AdamWParams hp;
  const std::vector<float> before = p[1].to_vector();
  std::string e =
      error_of([&] { adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp); });
  EXPECT_THAT(e, HasSubstr("grads[1] has shape [5]"));
  EXPECT_THAT(e, HasSubstr("params[1] has shape [4]"));

  // Lengths differ.
  std::vector<Tensor> v1 = {Tensor::zeros({2, 3})};
  g[1] = Tensor::zeros({4});
  e = error_of([&] { adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v1), hp); });
  EXPECT_THAT(e, HasSubstr("vs has 1 tensors but params has 2"));

  // Wrong dtype.
  std::vector<Tensor> mf64 = {Tensor::zeros({2, 3}), Tensor::zeros({4}, DType::f64)};
  e = error_of([&] { adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(mf64), ptrs(v), hp); });
  EXPECT_THAT(e, HasSubstr("ms[1] is f64, expected f32"));

  // Undefined tensor and null pointer.
  std::vector<Tensor> und = {Tensor::zeros({1}), Tensor()};
  e = error_of([&] { scale_many(ptrs(und), 2.0f); });
  EXPECT_THAT(e, HasSubstr("tensors[1] is undefined"));
  std::vector<const Tensor*> with_null = {&p[0], nullptr};
  e = error_of([&] { (void)sum_squares_many(with_null); });
  EXPECT_THAT(e, HasSubstr("tensors[1] is a null pointer"));

  // Bad hyper-parameters.
  hp.step = 0;
  e = error_of([&] { adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp); });
  EXPECT_THAT(e, HasSubstr("step must be >= 1"));

  // Nothing changed by the rejected calls.
  EXPECT_EQ(p[1].to_vector(), before);
}

}  // namespace
}  // namespace gyre::ops
