// The trainer-side plan of the NCCL weight push (rl/weight_sync/nccl_push.h) on the CPU: the bucket
// plan as a pure function of names and full shapes, the plan of a tensor-parallel model (full
// shapes from the shards), and the gathers of a TP=2 push — gather_weight_buckets on tp rank 0,
// follow_weight_push on tp rank 1, two threads over an in-process TpComm — which hand rank 0
// every full tensor bitwise equal to the unsharded model's, bucket by bucket in parameters()
// order, with both ranks issuing the same gathers in the same order (and the same as
// CausalLM::gather_full, what the disk path sends). The NCCL transfer itself needs GPUs:
// tests/gpu/rl/nccl_push_test.cc.
#include <gtest/gtest.h>

#include <barrier>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/config.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/rl/weight_sync/nccl_push.h"
#include "test_util.h"

namespace gyre::rl {
namespace {

using test::error_of;

TEST(NcclPushPlan, BucketsHoldWholeTensorsInOrderAtTheirWireSize) {
  // f32 sizes 400, 400, 2000, 40, 40, 40 bytes; bf16 half of that.
  const std::vector<std::string> names{"a", "b", "big", "c", "d", "e"};
  const std::vector<Shape> shapes{{10, 10}, {100}, {5, 100}, {10}, {2, 5}, {10}};
  WeightPushPlan p = plan_weight_push(names, shapes, DType::f32, 1024);
  EXPECT_EQ(p.names, names);
  EXPECT_EQ(p.shapes, shapes);
  ASSERT_EQ(p.buckets.size(), 3u);
  // a + b fit (800); big alone (larger than a bucket); c, d, e together (120).
  EXPECT_EQ(p.buckets[0].first, 0u);
  EXPECT_EQ(p.buckets[0].last, 2u);
  EXPECT_EQ(p.buckets[0].bytes, 800u);
  EXPECT_EQ(p.buckets[1].first, 2u);
  EXPECT_EQ(p.buckets[1].last, 3u);
  EXPECT_EQ(p.buckets[1].bytes, 2000u);
  EXPECT_EQ(p.buckets[2].first, 3u);
  EXPECT_EQ(p.buckets[2].last, 6u);
  EXPECT_EQ(p.buckets[2].bytes, 120u);
  EXPECT_EQ(p.max_bucket_bytes, 2000u);
  EXPECT_EQ(p.wire_bytes, 2920u);
  // bf16 halves every size (200, 200, 1000, 20, 20, 20): big now fits a bucket with c.
  WeightPushPlan h = plan_weight_push(names, shapes, DType::bf16, 1024);
  ASSERT_EQ(h.buckets.size(), 3u);
  EXPECT_EQ(h.buckets[0].last, 2u);
  EXPECT_EQ(h.buckets[1].first, 2u);
  EXPECT_EQ(h.buckets[1].last, 4u);
  EXPECT_EQ(h.buckets[1].bytes, 1020u);
  EXPECT_EQ(h.buckets[2].last, 6u);
  EXPECT_EQ(h.wire_bytes, 1460u);
}

TEST(NcclPushPlan, EdgesAndErrors) {
  EXPECT_TRUE(plan_weight_push({}, {}, DType::f32, 1024).buckets.empty());
  // A bucket exactly full closes only when the next tensor does not fit.
  WeightPushPlan p = plan_weight_push({"x", "y", "z"}, {{128}, {128}, {1}}, DType::f32, 1024);
  ASSERT_EQ(p.buckets.size(), 2u);
  EXPECT_EQ(p.buckets[0].last, 2u);
  EXPECT_EQ(p.buckets[0].bytes, 1024u);
  EXPECT_NE(error_of([] { plan_weight_push({"x"}, {}, DType::f32, 1024); }).find("1 names but 0"),
            std::string::npos);
}

// TpComm of `size` ranks living in threads of this process: all_gather meets the other ranks at a
// barrier. Every rank logs the bytes of each gather, so the test can compare the sequences.
struct ThreadGroup {
  explicit ThreadGroup(int n) : size(n), sends(size_t(n)), bytes(size_t(n)), sync(n) {}
  int size;
  std::vector<const void*> sends;
  std::vector<size_t> bytes;
  std::barrier<> sync;
};

class ThreadTp final : public model::TpComm {
 public:
  ThreadTp(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size; }
  void all_reduce_sum(float*, size_t) override { GYRE_THROW(internal, "not in this test"); }
  void all_reduce_max(float*, size_t) override { GYRE_THROW(internal, "not in this test"); }
  void all_reduce_sum(double*, size_t) override { GYRE_THROW(internal, "not in this test"); }
  void all_gather(const void* send, void* recv, size_t send_bytes) override {
    log.push_back(send_bytes);
    g_.sends[size_t(rank_)] = send, g_.bytes[size_t(rank_)] = send_bytes;
    g_.sync.arrive_and_wait();
    for (int r = 0; r < g_.size; ++r)  // a size mismatch copies what both have (and is logged)
      std::memcpy(static_cast<char*>(recv) + size_t(r) * send_bytes, g_.sends[size_t(r)],
                  std::min(send_bytes, g_.bytes[size_t(r)]));
    g_.sync.arrive_and_wait();  // nobody reuses its send buffer before every rank copied it
  }
  std::vector<size_t> log;

 private:
  ThreadGroup& g_;
  int rank_;
};

std::vector<float> values(const Tensor& t) { return t.to(Device::cpu).to_vector(); }

class NcclPushTpGather : public ::testing::TestWithParam<const char*> {};

TEST_P(NcclPushTpGather, RankZeroGetsTheFullTensorsInPlanOrderWhileRankOneFollows) {
  const model::ModelConfig cfg =
      model::load_config(test::source_path(std::string("tests/fixtures/models/") + GetParam()));
  auto full = model::CausalLM::random_init(cfg, 11, 0.05f);
  ThreadGroup group(2);
  ThreadTp tp0(group, 0), tp1(group, 1);
  auto shard0 = model::CausalLM::random_init(cfg, 11, 0.05f, &tp0);
  auto shard1 = model::CausalLM::random_init(cfg, 11, 0.05f, &tp1);
  ASSERT_NE(shard0->tensor_parallel(), nullptr);

  // The plan is made from the full shapes: the same on both ranks and for the unsharded model.
  const size_t bucket = 8 << 10;  // several buckets for the tiny models
  const WeightPushPlan plan = plan_weight_push(*shard0, DType::f32, bucket);
  const WeightPushPlan want = plan_weight_push(*full, DType::f32, bucket);
  EXPECT_EQ(plan.names, want.names);
  EXPECT_EQ(plan.shapes, want.shapes);
  ASSERT_EQ(plan.buckets.size(), want.buckets.size());
  ASSERT_GT(plan.buckets.size(), 2u);
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    EXPECT_EQ(plan.buckets[b].first, want.buckets[b].first);
    EXPECT_EQ(plan.buckets[b].last, want.buckets[b].last);
  }
  EXPECT_EQ(plan_weight_push(*shard1, DType::f32, bucket).shapes, want.shapes);

  // Rank 0 walks the plan; rank 1 follows (its results are dropped).
  std::vector<size_t> taken, closed;
  std::vector<std::vector<float>> got(plan.names.size());
  std::thread follower([&] { follow_weight_push(*shard1, DType::f32, bucket); });
  gather_weight_buckets(
      *shard0, plan,
      [&](size_t k, const Tensor& t) {
        EXPECT_EQ(t.shape(), plan.shapes[k]) << plan.names[k];
        taken.push_back(k);
        got[k] = values(t);
      },
      [&](const WeightBucket& b) {
        EXPECT_EQ(b.last, taken.size());  // every tensor of the bucket came before its end
        closed.push_back(b.first);
      });
  follower.join();

  ASSERT_EQ(taken.size(), plan.names.size());
  for (size_t k = 0; k < taken.size(); ++k) EXPECT_EQ(taken[k], k);  // parameters() order
  ASSERT_EQ(closed.size(), plan.buckets.size());
  const std::vector<model::NamedTensor> ref = full->parameters();
  for (size_t k = 0; k < ref.size(); ++k) {
    EXPECT_EQ(ref[k].name, plan.names[k]);
    EXPECT_EQ(got[k], values(ref[k].tensor)) << plan.names[k] << ": not the full tensor bitwise";
  }
  // Both ranks issued the same gathers, one per sharded parameter, in the same order.
  EXPECT_EQ(tp0.log, tp1.log);
  size_t sharded = 0;
  for (model::TpSplit s : shard0->tensor_parallel()->split)
    sharded += s != model::TpSplit::replicated;
  EXPECT_EQ(tp0.log.size(), sharded);

  // The same gathers, in the same order and sizes, as gather_full (the disk path's save()).
  const std::vector<size_t> push_log = tp0.log;
  tp0.log.clear(), tp1.log.clear();
  std::thread other([&] { shard1->gather_full(shard1->parameters()); });
  const std::vector<model::NamedTensor> gathered = shard0->gather_full(shard0->parameters());
  other.join();
  EXPECT_EQ(tp0.log, push_log);
  for (size_t k = 0; k < gathered.size(); ++k)
    EXPECT_EQ(values(gathered[k].tensor), got[k]) << gathered[k].name;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, NcclPushTpGather,
                         ::testing::Values("qwen2_tiny", "qwen3_tiny", "llama3_tiny"));

}  // namespace
}  // namespace gyre::rl
