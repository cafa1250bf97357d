// Helpers for the backend op tests: seeded random tensors, scalar losses of op outputs and a
// central-difference gradient checker that perturbs f64 tensors in place.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"

namespace gyre::test {

// N(0, sd²) (plus mean) values in a new f64 or f32 tensor.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, DType dt = DType::f64,
                            double sd = 1.0, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(mean, sd);
  Tensor t = Tensor::empty(shape, dt);
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v = nd(rng);
    if (dt == DType::f64)
      t.data<double>()[i] = v;
    else
      t.data<float>()[i] = float(v);
  }
  return t;
}

inline std::vector<double> values(const Tensor& t) {
  std::vector<double> r(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    r[size_t(i)] = t.dtype() == DType::f64 ? t.data<double>()[i] : double(t.data<float>()[i]);
  return r;
}

// Σ a ∘ b over f64 tensors of equal size.
inline double weighted_sum(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
  return s;
}

// Compares `analytic` with central differences of loss() w.r.t. every element of `input` (or the
// `only` elements when given). Relative to the largest numeric gradient magnitude.
inline void expect_grad(const std::string& what, const std::function<double()>& loss, Tensor input,
                        const Tensor& analytic, double tol = 1e-6, std::vector<int64_t> only = {}) {
  ASSERT_EQ(input.dtype(), DType::f64) << what;
  ASSERT_EQ(input.numel(), analytic.numel()) << what;
  if (only.empty())
    for (int64_t i = 0; i < input.numel(); ++i) only.push_back(i);
  const double h = 1e-6;
  double* x = input.data<double>();
  std::vector<double> num;
  double scale = 1e-8;
  for (int64_t i : only) {
    double x0 = x[i];
    x[i] = x0 + h;
    double lp = loss();
    x[i] = x0 - h;
    double lm = loss();
    x[i] = x0;
    num.push_back((lp - lm) / (2 * h));
    scale = std::max(scale, std::abs(num.back()));
  }
  double worst = 0;
  int64_t worst_i = -1;
  for (size_t j = 0; j < only.size(); ++j) {
    double err = std::abs(analytic.data<double>()[only[j]] - num[j]) / scale;
    if (err > worst) worst = err, worst_i = only[j];
  }
  EXPECT_LT(worst, tol) << what << ": worst relative error at element " << worst_i
                        << " (gradient scale " << scale << ")";
}

}  // namespace gyre::test
