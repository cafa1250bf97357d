// ops::embedding_shard and ops::interleave_blocks on CUDA equal the CPU ops bitwise (they are
// copies): ids in, below and above the shard, -0.0 in the table; odd shapes; and both capture in
// a CUDA graph. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/tp_ops.h"

namespace gyre {
namespace {

using gputest::gpu;
using gputest::rand_ids;
using gputest::randn;

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu), y = b.to(Device::cpu);
  return x.shape() == y.shape() && std::memcmp(x.f32(), y.f32(), size_t(x.numel()) * 4) == 0;
}

TEST(TpOpsCuda, EmbeddingShardEqualsCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t V = 37, H = 131, begin = 74;
  Tensor w = randn({V, H}, 3);
  w.f32()[5] = -0.0f;
  const Tensor ids = rand_ids(300, int32_t(4 * V), 4);  // ~1/4 in [74, 111)
  Tensor want, got;
  ops::embedding_shard(ids, w, begin, want);
  ops::embedding_shard(gpu(ids), gpu(w), begin, got);
  EXPECT_TRUE(same_bits(got, want));
}

TEST(TpOpsCuda, InterleaveBlocksEqualsCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const Tensor blocks = randn({2, 7, 1001}, 5);
  Tensor want, got;
  ops::interleave_blocks(blocks, want);
  ops::interleave_blocks(gpu(blocks), got);
  EXPECT_TRUE(same_bits(got, want));
}

// Both ops are capturable (no host copy or sync: the TP decode graphs hold them) and a replay
// over new ids gives the eager result.
TEST(TpOpsCuda, CapturedInACudaGraph) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t V = 16, H = 64, begin = 16;
  const Tensor w = gpu(randn({V, H}, 6)), blocks = gpu(randn({2, 3, 40}, 7));
  Tensor ids = gpu(rand_ids(9, 48, 8));
  Tensor emb, inter;
  ops::DeviceGraph graph;
  graph.capture([&] {
    ops::embedding_shard(ids, w, begin, emb);
    ops::interleave_blocks(blocks, inter);
  });
  ids.copy_from(rand_ids(9, 48, 9));
  graph.replay();
  Tensor want_emb, want_inter;
  ops::embedding_shard(ids, w, begin, want_emb);
  ops::interleave_blocks(blocks, want_inter);
  EXPECT_TRUE(same_bits(emb, want_emb));
  EXPECT_TRUE(same_bits(inter, want_inter));
}

}  // namespace
}  // namespace gyre
