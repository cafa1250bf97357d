// Helpers shared by the CPU op tests of tests/unit/backend: seeded standard-normal tensors drawn
// from the Philox stream the CPU sampler uses (core/philox.h), so a (seed, stream) pair gives the
// same values on every machine, and a byte-for-byte comparison for the "bitwise the composition"
// checks.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

namespace gyre::test {

// N(0, 1) values from PhiloxStream(seed, stream) in row-major order, converted to dt on the host.
inline Tensor philox_randn(const Shape& s, uint64_t seed, uint64_t stream, DType dt = DType::f32) {
  PhiloxStream r(seed, stream);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal();
  return Tensor::from_vector(v, s).to(dt);
}

// got and want are both undefined, or hold the same shape, dtype and bytes.
inline void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!got.defined()) return;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << what;
}

}  // namespace gyre::test
