// ops::AsyncReadback on the CPU backend: start() copies the tensor's bytes, wait() returns them,
// the buffer grows for a larger tensor and keeps the latest start()'s bytes; an undefined tensor is
// an error. (DecodeLookAheadGpu covers the device path: the engine's look-ahead reads every
// decode step's tokens through it.)
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

TEST(AsyncReadback, ReturnsTheBytesOfTheLastStart) {
  ops::AsyncReadback rb;
  Tensor a = Tensor::from_vector(std::vector<int32_t>{7, -3, 11}, {3});
  rb.start(a);
  a.i32()[0] = 99;  // the copy was taken at start()
  ASSERT_EQ(rb.bytes(), 3 * sizeof(int32_t));
  std::vector<int32_t> got(3);
  std::memcpy(got.data(), rb.wait(), rb.bytes());
  EXPECT_EQ(got, (std::vector<int32_t>{7, -3, 11}));

  std::vector<float> big(1000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i) * 0.5f;
  rb.start(Tensor::from_vector(big, {1000}));
  ASSERT_EQ(rb.bytes(), 1000 * sizeof(float));
  std::vector<float> back(1000);
  std::memcpy(back.data(), rb.wait(), rb.bytes());
  EXPECT_EQ(back, big);
  // A second wait() returns the same bytes.
  EXPECT_EQ(std::memcmp(rb.wait(), big.data(), rb.bytes()), 0);
}

TEST(AsyncReadback, RejectsAnUndefinedTensor) {
  ops::AsyncReadback rb;
  EXPECT_THROW(rb.start(Tensor()), Error);
}

}  // namespace
}  // namespace gyre
