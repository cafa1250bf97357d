// Helpers of the GPU tests: skip without a device, random tensors, CPU<->GPU copies and the
// relative error ‖got − want‖ / ‖want‖ (NaN anywhere counts as infinite error).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

namespace gyre::gputest {

#define GYRE_SKIP_WITHOUT_GPU() \
  if (!::gyre::cuda::available()) GTEST_SKIP() << "no CUDA device visible"

inline Tensor randn(const Shape& s, uint64_t seed, float scale = 1.0f) {
  PhiloxStream r(seed, 7);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal() * scale;
  return Tensor::from_vector(v, s);
}

inline Tensor rand_ids(int64_t n, int32_t hi, uint64_t seed) {
  PhiloxStream r(seed, 11);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = int32_t(r.next_u32() % uint32_t(hi));
  return Tensor::from_vector(v, {n});
}

// Sets an environment variable for a scope and restores what was there before (e.g.
// GYRE_ATTENTION_BACKEND for one test).
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~EnvScope() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Rounds an f32 tensor's values to bf16 (the values a bf16 kernel sees), staying f32.
inline Tensor round_bf16(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return Tensor::from_vector(v, t.shape());
}

inline Tensor gpu(const Tensor& t) { return t.to(Device::cuda); }
inline Tensor cpu(const Tensor& t) { return t.to(Device::cpu); }

inline double rel_err(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  std::vector<float> g = got.to_vector(), w = want.to_vector();
  if (g.size() != w.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return std::numeric_limits<double>::infinity();
    num += double(g[i] - w[i]) * double(g[i] - w[i]);
    den += double(w[i]) * double(w[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

constexpr double kF32Tol = 1e-5;

// |got − want| <= tol[i] elementwise (a NaN fails); reports the first few violations.
inline void expect_within(const Tensor& got, const Tensor& want, const std::vector<double>& tol,
                          const std::string& what) {
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  ASSERT_EQ(g.size(), tol.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = std::fabs(double(g[i]) - double(w[i]));
    if (!(d <= tol[i]) && ++bad <= 3)
      ADD_FAILURE() << what << "[" << i << "]: got " << g[i] << " want " << w[i] << " |Δ| " << d
                    << " > bound " << tol[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

// Random integers in [-hi, hi] as f32 (randn scaled, rounded, clamped): products and sums of them
// are exact in f32 while |sums| < 2^24, so a GEMM's result does not depend on its order and a
// bf16 output must be the round-to-nearest-even of the exact value.
inline Tensor small_ints(const Shape& s, uint64_t seed, float hi) {
  std::vector<float> v = randn(s, seed).to_vector();
  for (float& e : v) e = std::fmax(-hi, std::fmin(hi, std::round(e * hi / 2)));
  return Tensor::from_vector(v, s);
}

}  // namespace gyre::gputest
