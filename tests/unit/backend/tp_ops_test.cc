// ops::embedding_shard and ops::interleave_blocks (backend/tp_ops.h) on the CPU: the vocab-parallel
// embedding (rows of this shard, zeros elsewhere, -0.0 made +0.0) and the column-block interleave
// of an all-gather, against direct loops. gpu/backend/tp_ops_cuda_test.cc checks CUDA == CPU.
#include "gyre/backend/tp_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace gyre {
namespace {

TEST(TpOps, EmbeddingShardTakesThisShardsRowsAndZerosTheRest) {
  const int64_t V = 4, H = 3, begin = 8;  // this shard holds ids [8, 12)
  std::vector<float> w(size_t(V * H));
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) - 5.5f;
  w[4] = -0.0f;  // row 1, column 1
  const std::vector<int32_t> ids = {9, 0, 11, 12, 8, -1, 7, 9};
  Tensor out;
  ops::embedding_shard(Tensor::from_vector(ids, {int64_t(ids.size())}),
                       Tensor::from_vector(w, {V, H}), begin, out);
  ASSERT_EQ(out.shape(), (Shape{int64_t(ids.size()), H}));
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t local = ids[t] - begin;
      const float want = local >= 0 && local < V ? w[size_t(local * H + h)] + 0.0f : 0.0f;
      const float got = out.f32()[t * size_t(H) + size_t(h)];
      EXPECT_EQ(std::memcmp(&got, &want, 4), 0) << "id " << ids[t] << " column " << h;
    }
  EXPECT_FALSE(std::signbit(out.f32()[0 * H + 1]));  // id 9 = row 1: -0.0 came out +0.0
}

TEST(TpOps, InterleaveBlocksPutsRankBlocksSideBySide) {
  const int64_t n = 3, R = 2, c = 4;
  std::vector<float> blocks(size_t(n * R * c));
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = float(i);
  Tensor out;
  ops::interleave_blocks(Tensor::from_vector(blocks, {n, R, c}), out);
  ASSERT_EQ(out.shape(), (Shape{R, n * c}));
  for (int64_t i = 0; i < R; ++i)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < c; ++j)
        EXPECT_EQ(out.f32()[i * n * c + r * c + j], blocks[size_t((r * R + i) * c + j)]);
}

}  // namespace
}  // namespace gyre
