// MoE dispatch ops (backend/moe_ops.h) on the CPU: moe_permute against the former host grouping
// (per expert, tokens ascending, slots ascending) including empty experts, T = 0, k = 1 and a
// single busy expert; moe_unpermute against a direct loop; its backward against central finite
// differences (f64); bad input raises gyre::Error naming what is wrong.
#include "gyre/backend/moe_ops.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "grad_check.h"
#include "gyre/backend/ops.h"
#include "test_util.h"

using namespace gyre;
using gyre::test::random_tensor;

namespace {

Tensor random_indices(int64_t T, int64_t k, int64_t E, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(size_t(T * k));
  for (auto& x : v) x = int32_t(rng() % uint64_t(E));
  return Tensor::from_vector(v, {T, k});
}

// The former moe_block.cc grouping: per expert, the slots t·k + j in ascending order.
struct Expected {
  std::vector<int32_t> perm, pos, rows, offsets;
};
Expected reference_permutation(const Tensor& indices, int64_t E) {
  const int64_t T = indices.size(0), k = indices.size(1);
  std::vector<std::vector<int32_t>> groups(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j)
      groups[size_t(indices.i32()[t * k + j])].push_back(int32_t(t * k + j));
  Expected x;
  x.pos.assign(size_t(T * k), -1);
  x.offsets.push_back(0);
  for (const auto& g : groups) {
    for (int32_t s : g) {
      x.pos[size_t(s)] = int32_t(x.perm.size());
      x.perm.push_back(s);
      x.rows.push_back(int32_t(s / k));
    }
    x.offsets.push_back(int32_t(x.perm.size()));
  }
  return x;
}

std::vector<int32_t> ints(const Tensor& t) { return {t.i32(), t.i32() + t.numel()}; }

void expect_permutation(const Tensor& indices, int64_t E) {
  Tensor perm, pos, rows, offsets;
  ops::moe_permute(indices, E, perm, pos, rows, offsets);
  const Expected x = reference_permutation(indices, E);
  EXPECT_EQ(ints(perm), x.perm);
  EXPECT_EQ(ints(pos), x.pos);
  EXPECT_EQ(ints(rows), x.rows);
  EXPECT_EQ(ints(offsets), x.offsets);
  EXPECT_EQ(pos.shape(), indices.shape());
}

using test::error_of;

}  // namespace

TEST(MoePermute, MatchesHostGrouping) {
  expect_permutation(random_indices(37, 4, 9, 1), 9);
  expect_permutation(random_indices(300, 8, 128, 2), 128);  // Qwen3-30B-A3B's E and k
}

TEST(MoePermute, EdgeCases) {
  expect_permutation(random_indices(3, 2, 20, 3), 20);       // most experts get no token
  expect_permutation(Tensor::empty({0, 4}, DType::i32), 7);  // T = 0: zero offsets
  expect_permutation(random_indices(25, 1, 5, 4), 5);        // k = 1
  expect_permutation(Tensor::from_vector(std::vector<int32_t>(40, 3), {10, 4}), 6);  // one expert
  expect_permutation(random_indices(5, 3, 1, 5), 1);                                 // E = 1
}

TEST(MoeUnpermute, ForwardMatchesDirectLoop) {
  const int64_t T = 11, k = 3, E = 5, H = 7, N = T * k;
  Tensor perm, pos, rows, offsets;
  ops::moe_permute(random_indices(T, k, E, 6), E, perm, pos, rows, offsets);
  Tensor y = random_tensor({N, H}, 7, DType::f64), w = random_tensor({T, k}, 8, DType::f64);
  Tensor out, out1, none;
  ops::moe_unpermute(y, pos, w, out);
  ops::moe_unpermute(y, pos, none, out1);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < H; ++c) {
      double a = 0, b = 0;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t p = pos.i32()[t * k + j];
        a += w.data<double>()[t * k + j] * y.data<double>()[p * H + c];
        b += y.data<double>()[p * H + c];
      }
      EXPECT_EQ(out.data<double>()[t * H + c], a);  // same order, same operations
      EXPECT_EQ(out1.data<double>()[t * H + c], b);
    }
}

TEST(MoeUnpermute, BackwardMatchesFiniteDifferences) {
  const int64_t T = 6, k = 2, E = 4, H = 5, N = T * k;
  Tensor perm, pos, rows, offsets;
  ops::moe_permute(random_indices(T, k, E, 9), E, perm, pos, rows, offsets);
  Tensor y = random_tensor({N, H}, 10, DType::f64), w = random_tensor({T, k}, 11, DType::f64);
  Tensor g = random_tensor({T, H}, 12, DType::f64);  // L = <g, out>
  auto loss = [&] {
    Tensor out;
    ops::moe_unpermute(y, pos, w, out);
    double s = 0;
    for (int64_t i = 0; i < out.numel(); ++i) s += g.data<double>()[i] * out.data<double>()[i];
    return s;
  };
  Tensor dy = Tensor::empty({N, H}, DType::f64), dw = Tensor::empty({T, k}, DType::f64);
  ops::moe_unpermute_backward(g, y, perm, w, dy, dw);
  ASSERT_EQ(dy.shape(), y.shape());
  ASSERT_EQ(dw.shape(), w.shape());
  const double h = 1e-6;
  for (Tensor* t : {&y, &w}) {
    const Tensor& grad = t == &y ? dy : dw;
    for (int64_t i = 0; i < t->numel(); ++i) {
      double& v = t->data<double>()[i];
      const double v0 = v;
      v = v0 + h;
      const double lp = loss();
      v = v0 - h;
      const double lm = loss();
      v = v0;
      EXPECT_NEAR(grad.data<double>()[i], (lp - lm) / (2 * h), 1e-7)
          << (t == &y ? "dy" : "dw") << " element " << i;
    }
  }
  // Each output alone (the other undefined) gives the same values.
  Tensor dy_only = Tensor::empty({N, H}, DType::f64), dw_only = Tensor::empty({T, k}, DType::f64);
  Tensor none;
  ops::moe_unpermute_backward(g, none, perm, w, dy_only, none);
  ops::moe_unpermute_backward(g, y, perm, w, none, dw_only);
  for (int64_t i = 0; i < dy.numel(); ++i)
    EXPECT_EQ(dy_only.data<double>()[i], dy.data<double>()[i]);
  for (int64_t i = 0; i < dw.numel(); ++i)
    EXPECT_EQ(dw_only.data<double>()[i], dw.data<double>()[i]);
}

TEST(MoeOpsParse, BadInputNamesTheProblem) {
  Tensor perm, pos, rows, offsets;
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 9}, {2, 2});
  std::string m = error_of([&] { ops::moe_permute(bad, 4, perm, pos, rows, offsets); });
  EXPECT_NE(m.find("expert index 9"), std::string::npos) << m;
  EXPECT_NE(m.find("position 3"), std::string::npos) << m;
  Tensor neg = Tensor::from_vector(std::vector<int32_t>{0, -1}, {2, 1});
  m = error_of([&] { ops::moe_permute(neg, 4, perm, pos, rows, offsets); });
  EXPECT_NE(m.find("expert index -1"), std::string::npos) << m;
  Tensor flat = Tensor::from_vector(std::vector<int32_t>{0, 1}, {2});
  m = error_of([&] { ops::moe_permute(flat, 4, perm, pos, rows, offsets); });
  EXPECT_NE(m.find("[T, k]"), std::string::npos) << m;
  Tensor ok = Tensor::from_vector(std::vector<int32_t>{0, 1}, {1, 2});
  m = error_of([&] { ops::moe_permute(ok, 0, perm, pos, rows, offsets); });
  EXPECT_NE(m.find("num_experts = 0"), std::string::npos) << m;
  Tensor wrong_perm = Tensor::empty({5}, DType::i32);
  m = error_of([&] { ops::moe_permute(ok, 4, wrong_perm, pos, rows, offsets); });
  EXPECT_NE(m.find("perm"), std::string::npos) << m;

  ops::moe_permute(ok, 4, perm, pos, rows, offsets);
  Tensor y = Tensor::zeros({3, 4}), w = Tensor::zeros({1, 2}), out, none;
  m = error_of([&] { ops::moe_unpermute(y, pos, w, out); });  // 3 rows for 2 assignments
  EXPECT_NE(m.find("y has shape [3, 4]"), std::string::npos) << m;
  Tensor y2 = Tensor::zeros({2, 4}), w3 = Tensor::zeros({1, 3});
  m = error_of([&] { ops::moe_unpermute(y2, pos, w3, out); });
  EXPECT_NE(m.find("weights"), std::string::npos) << m;
  Tensor bad_pos = Tensor::from_vector(std::vector<int32_t>{0, 2}, {1, 2});
  m = error_of([&] { ops::moe_unpermute(y2, bad_pos, w, out); });
  EXPECT_NE(m.find("position 2"), std::string::npos) << m;
  Tensor dout = Tensor::zeros({1, 4}), dy = Tensor::zeros({2, 4}), dw = Tensor::zeros({1, 2});
  Tensor bad_perm = Tensor::from_vector(std::vector<int32_t>{1, 7}, {2});
  m = error_of([&] { ops::moe_unpermute_backward(dout, y2, bad_perm, w, dy, dw); });
  EXPECT_NE(m.find("slot 7"), std::string::npos) << m;
  m = error_of([&] { ops::moe_unpermute_backward(dout, none, perm, w, dy, dw); });
  EXPECT_NE(m.find("needs y"), std::string::npos) << m;
  Tensor dout_wrong = Tensor::zeros({2, 4});
  m = error_of([&] { ops::moe_unpermute_backward(dout_wrong, y2, perm, w, dy, dw); });
  EXPECT_NE(m.find("dout has shape [2, 4]"), std::string::npos) << m;
}
