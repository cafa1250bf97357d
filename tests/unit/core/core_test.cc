#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"
#include "gyre/core/thread_pool.h"

using namespace gyre;

TEST(DType, Bf16RoundToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd mantissa) and 1.015625: ties to even -> up.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, F16RoundTripAndRounding) {
  for (float f : {0.0f, 1.0f, -2.0f, 65504.0f, 0.5f, 6.103515625e-05f, 5.960464477539063e-08f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f) << f;
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // halfway, even -> down
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // halfway, odd -> up
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  // Exhaustive: every finite half converts to f32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1F) == 0x1F) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor row = t.select(1);
  EXPECT_EQ(row.shape(), (Shape{2}));
  row.f32()[0] = 42;
  EXPECT_EQ(t.f32()[2], 42);
  Tensor n = t.narrow(1, 2).reshape({-1});
  EXPECT_EQ(n.numel(), 4);
  EXPECT_EQ(n.f32()[3], 5);
  Tensor c = t.clone();
  c.f32()[0] = 7;
  EXPECT_EQ(t.f32()[0], 0);
  EXPECT_THROW(t.reshape({4}), Error);
  EXPECT_THROW(t.narrow(2, 2), Error);
}

// Host tensors have no deferred zeros (Tensor::zero_deferred zeroes them at once; the device case
// is tests/gpu/backend/deferred_zero_cuda_test.cc): nothing is pending, nothing can be claimed, and
// address() is raw()'s pointer.
TEST(Tensor, ZeroDeferredOnTheHostZeroesAtOnce) {
  Tensor t = Tensor::full({2, 3}, 5.0f);
  Tensor row = t.narrow(1, 1);
  row.zero_deferred();
  EXPECT_EQ(t.to_vector(), (std::vector<float>{5, 5, 5, 0, 0, 0}));
  t.zero_deferred();
  EXPECT_FALSE(t.storage()->zero_pending());
  EXPECT_FALSE(t.claim_pending_zero());
  EXPECT_EQ(t.to_vector(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(row.address(), row.raw());
  EXPECT_FALSE(Tensor().claim_pending_zero());  // undefined: nothing to claim
}

// An allocation the host cannot make is gyre::OutOfMemory (kind internal), which callers that
// sized the request catch by type to name their flags (gyre bench rollout's KV pool).
TEST(Allocator, HostOutOfMemoryIsATypedError) {
  try {
    Tensor::empty({int64_t(1) << 58}, DType::f32);  // 1 EiB
    FAIL() << "a 1 EiB host tensor was allocated";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.kind(), ErrorKind::internal);
    EXPECT_NE(std::string(e.what()).find("out of host memory allocating"), std::string::npos)
        << e.what();
  }
}

TEST(Tensor, DtypeConversion) {
  Tensor t = Tensor::from_vector(std::vector<float>{1.5f, -2.25f, 3.0f}, {3});
  Tensor b = t.to(DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.to_vector(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
}

TEST(Philox, KnownAnswer) {
  // Random123 known-answer test for philox4x32-10: counter = key = 0.
  uint32_t ctr[4] = {0, 0, 0, 0}, key[2] = {0, 0}, out[4];
  Philox4x32::generate(ctr, key, out);
  EXPECT_EQ(out[0], 0x6627e8d5u);
  EXPECT_EQ(out[1], 0xe169c58du);
  EXPECT_EQ(out[2], 0xbc57ac4cu);
  EXPECT_EQ(out[3], 0x9b00dbd8u);
  uint32_t ctr2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
  uint32_t key2[2] = {0xa4093822u, 0x299f31d0u};
  Philox4x32::generate(ctr2, key2, out);
  EXPECT_EQ(out[0], 0xd16cfe09u);
  EXPECT_EQ(out[1], 0x94fdccebu);
  EXPECT_EQ(out[2], 0x5001e420u);
  EXPECT_EQ(out[3], 0x24126ea1u);
}

TEST(Philox, StreamSeekResumes) {
  PhiloxStream a(123, 7);
  for (int i = 0; i < 9; ++i) a.next_u32();
  uint64_t off = a.offset();
  int idx = a.index();
  std::vector<uint32_t> expect;
  for (int i = 0; i < 10; ++i) expect.push_back(a.next_u32());
  PhiloxStream b(123, 7);
  b.seek(off, idx);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(b.next_u32(), expect[size_t(i)]);
  float u = PhiloxStream(5).next_uniform();
  EXPECT_GE(u, 0.0f);
  EXPECT_LT(u, 1.0f);
}

TEST(ThreadPool, ParallelForCoversRangeOnceAndRethrows) {
  ThreadPool pool(4);
  std::vector<int> hits(1000, 0);
  pool.parallel_for(1000, 10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_THROW(pool.parallel_for(100, 1,
                                 [](int64_t b, int64_t) {
                                   if (b > 0) throw Error(ErrorKind::internal, "boom");
                                 }),
               Error);
}

TEST(Error, CheckMessageHasLocation) {
  try {
    GYRE_CHECK(1 == 2, "value {}", 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("core_test.cc"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("value 3"), std::string::npos);
    EXPECT_EQ(e.kind(), ErrorKind::internal);
  }
}
