// The bf16 outputs of the multi-tensor ops on the CPU (issue 8; backend/multi_tensor_ops.h):
// adamw_step_many's bf16_out holds f32_to_bf16 of each updated parameter while the f32 results stay
// bitwise those of the plain call; f32_to_bf16_many rounds like core/dtype.h; copy_many copies and
// writes the rounding of the copied values (the data-parallel unflatten); argument errors; and
// the host-side bookkeeping of ops::Bf16WeightCache that needs no device (the fresh mark, CPU
// tensors ignored, generation).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "test_util.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

const std::vector<Shape> kShapes = {{0}, {1}, {7}, {3, 5}, {16385}, {2, 0}, {33, 100}};

Tensor randn(const Shape& s, uint64_t seed, float scale = 1.0f) {
  PhiloxStream r(seed, 9);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& x : v) x = r.next_normal() * scale;
  return Tensor::from_vector(v, s);
}

template <typename T = Tensor>
std::vector<T*> ptrs(std::vector<Tensor>& ts) {
  std::vector<T*> out;
  for (auto& t : ts) out.push_back(&t);
  return out;
}

std::vector<uint16_t> host_bits(const Tensor& t) {
  std::vector<uint16_t> out;
  for (float x : t.to_vector()) out.push_back(f32_to_bf16(x));
  return out;
}

TEST(MultiTensorBf16, AdamWWritesTheRoundedResultAndLeavesF32Unchanged) {
  std::vector<Tensor> p, g, m, v, p2, m2, v2;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    p.push_back(randn(kShapes[i], 10 + i, 0.5f));
    g.push_back(randn(kShapes[i], 100 + i, 0.01f));
    m.push_back(Tensor::zeros(kShapes[i]));
    v.push_back(Tensor::zeros(kShapes[i]));
    p2.push_back(p.back().clone());
    m2.push_back(Tensor::zeros(kShapes[i]));
    v2.push_back(Tensor::zeros(kShapes[i]));
  }
  std::vector<std::vector<uint16_t>> out(kShapes.size());
  std::vector<uint16_t*> dst;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    out[i].assign(size_t(shape_numel(kShapes[i])), 0xABCD);
    dst.push_back(i == 2 ? nullptr : out[i].data());  // one parameter without a copy
  }
  AdamWParams hp;
  hp.lr = 1e-2f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 2; ++step) {
    hp.step = step;
    adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp, dst);
    adamw_step_many(ptrs(p2), ptrs<const Tensor>(g), ptrs(m2), ptrs(v2), hp);
    for (size_t i = 0; i < kShapes.size(); ++i) {
      EXPECT_EQ(p[i].to_vector(), p2[i].to_vector()) << i;
      EXPECT_EQ(m[i].to_vector(), m2[i].to_vector()) << i;
      EXPECT_EQ(v[i].to_vector(), v2[i].to_vector()) << i;
      if (i == 2)
        EXPECT_EQ(out[i], std::vector<uint16_t>(out[i].size(), 0xABCD)) << "written without dst";
      else
        EXPECT_EQ(out[i], host_bits(p[i])) << "step " << step << ", tensor " << i;
    }
  }
  // One pointer per parameter, or none.
  std::vector<uint16_t*> short_list(dst.begin(), dst.end() - 1);
  EXPECT_THAT(error_of([&] {
                adamw_step_many(ptrs(p), ptrs<const Tensor>(g), ptrs(m), ptrs(v), hp, short_list);
              }),
              HasSubstr("bf16_out has 6 pointers but params has 7 tensors"));
}

TEST(MultiTensorBf16, F32ToBf16ManyRoundsLikeTheHost) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {1.0f + 1.0f / 256,
                                      1.0f + 3.0f / 256,
                                      -0.0f,
                                      inf,
                                      std::numeric_limits<float>::max(),
                                      std::numeric_limits<float>::denorm_min()};
  std::vector<Tensor> src = {randn({33}, 1), Tensor::zeros({0}),
                             Tensor::from_vector(special, Shape{6})};
  std::vector<std::vector<uint16_t>> out = {
      std::vector<uint16_t>(33), {}, std::vector<uint16_t>(6)};
  std::vector<uint16_t*> dst = {out[0].data(), nullptr, out[2].data()};
  f32_to_bf16_many(ptrs<const Tensor>(src), dst);
  EXPECT_EQ(out[0], host_bits(src[0]));
  EXPECT_EQ(out[2], host_bits(src[2]));
  EXPECT_EQ(out[2][0], 0x3F80);  // a tie rounds to even (down)
  EXPECT_EQ(out[2][1], 0x3F82);  // a tie rounds to even (up)
  EXPECT_EQ(out[2][4], 0x7F80);  // the largest finite f32 rounds to inf
  f32_to_bf16_many({}, {});      // empty: nothing to do
  std::vector<uint16_t*> none = {nullptr, nullptr, nullptr};
  EXPECT_THAT(error_of([&] { f32_to_bf16_many(ptrs<const Tensor>(src), none); }),
              HasSubstr("dst[0] is null but src[0] has 33 elements"));
  EXPECT_THAT(error_of([&] {
                f32_to_bf16_many(ptrs<const Tensor>(src), {dst.data(), 2});
              }),
              HasSubstr("dst has 2 pointers but src has 3 tensors"));
}

TEST(MultiTensorBf16, CopyManyCopiesAndRoundsTheSameValues) {
  // Sources are views of one flat vector at running offsets (the data-parallel unflatten).
  int64_t total = 0;
  for (const Shape& s : kShapes) total += shape_numel(s);
  const Tensor flat = randn({total + 3}, 42, 2.0f);
  std::vector<Tensor> src, dst, views;
  std::vector<std::vector<uint16_t>> out(kShapes.size());
  std::vector<uint16_t*> bf16;
  int64_t off = 3;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    const int64_t n = shape_numel(kShapes[i]);
    src.push_back(flat.narrow(off, n));
    off += n;
    dst.push_back(Tensor::zeros(kShapes[i]));
    views.push_back(dst.back().reshape({n}));
    out[i].assign(size_t(n), 0xABCD);
    bf16.push_back(i == 2 ? nullptr : out[i].data());  // one tensor without a copy
  }
  copy_many(ptrs<const Tensor>(src), ptrs(views), bf16);
  for (size_t i = 0; i < kShapes.size(); ++i) {
    EXPECT_EQ(dst[i].to_vector(), src[i].to_vector()) << i;
    if (i == 2)
      EXPECT_EQ(out[i], std::vector<uint16_t>(out[i].size(), 0xABCD)) << "written without dst";
    else
      EXPECT_EQ(out[i], host_bits(dst[i])) << i;
  }
  // No bf16 outputs: a plain copy.
  std::vector<Tensor> again;
  for (auto& v : views) again.push_back(Tensor::zeros(v.shape()));
  copy_many(ptrs<const Tensor>(src), ptrs(again));
  for (size_t i = 0; i < kShapes.size(); ++i) EXPECT_EQ(again[i].to_vector(), src[i].to_vector());
  copy_many({}, {});  // empty: nothing to do
  // Argument errors, before anything is written.
  std::vector<uint16_t*> short_list(bf16.begin(), bf16.end() - 1);
  EXPECT_THAT(error_of([&] { copy_many(ptrs<const Tensor>(src), ptrs(views), short_list); }),
              HasSubstr("bf16_out has 6 pointers but src has 7 tensors"));
  EXPECT_THAT(error_of([&] { copy_many(ptrs<const Tensor>(src), ptrs(dst)); }),
              HasSubstr("has shape"));
  std::vector<Tensor> a = {flat.narrow(0, 8)}, b = {flat.narrow(4, 8)};
  EXPECT_THAT(error_of([&] { copy_many(ptrs<const Tensor>(a), ptrs(b)); }),
              HasSubstr("src[0] and dst[0] overlap"));
  std::vector<Tensor> c = {flat.narrow(8, 8)};
  copy_many(ptrs<const Tensor>(a), ptrs(c));  // the same storage, disjoint: fine
  EXPECT_EQ(c[0].to_vector(), a[0].to_vector());
}

TEST(MultiTensorBf16, WeightCacheHostBookkeeping) {
  Bf16WeightCache cache;
  Tensor w = randn({8}, 3);
  EXPECT_EQ(cache.copy_to_write(w), nullptr);  // CPU tensors have no copies
  EXPECT_EQ(cache.copy_to_write(Tensor()), nullptr);
  EXPECT_TRUE(cache.sources_within({}));
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&w});  // no copies: none can be stale
  cache.mark_stale();
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({});
  EXPECT_TRUE(cache.take_fresh());
  EXPECT_FALSE(cache.take_fresh());  // consumed
  cache.copies_written({});
  cache.refresh();  // nothing to re-cast; drops the mark
  EXPECT_FALSE(cache.take_fresh());
  const uint64_t gen = cache.generation();
  cache.copies_written({});
  cache.clear();
  EXPECT_EQ(cache.generation(), gen + 1);
  EXPECT_FALSE(cache.take_fresh());
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

}  // namespace
}  // namespace gyre::ops
