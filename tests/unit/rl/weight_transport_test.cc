// --update-weight-transport for remote engines: what auto resolves to, which combinations are
// refused with a message, and the NCCL push options derived from the flags. (The NCCL push itself
// runs on 2 GPUs: tests/gpu/rl/nccl_push_test.cc.)
#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/rl/loop/remote_rollout.h"
#include "test_util.h"

namespace gyre::rl {
namespace {

using test::error_of;

TEST(WeightTransport, AutoPicksNcclOnlyForGpuTrainersWithListedEngines) {
  TrainConfig c;
  c.rollout_external_engine_addrs = {"127.0.0.1:30000"};
  EXPECT_EQ(resolve_weight_transport(c, 1), "disk");  // CPU trainer
  c.device = "cuda";
  EXPECT_EQ(resolve_weight_transport(c, 1), "nccl");
  EXPECT_EQ(resolve_weight_transport(c, 2), "disk");  // no NCCL push under TP yet
  c.update_weight_transport = "disk";
  EXPECT_EQ(resolve_weight_transport(c, 1), "disk");
  TrainConfig r;
  r.device = "cuda";
  r.sglang_router_ip = "10.0.0.1";
  r.sglang_router_port = 30000;
  EXPECT_EQ(resolve_weight_transport(r, 1), "disk");  // a router hides its workers
  r.update_weight_transport = "nccl";
  EXPECT_NE(error_of([&] {
              resolve_weight_transport(r, 1);
            }).find("list them with --rollout-external-engine-addrs"),
            std::string::npos);
  c.update_weight_transport = "nccl";
  EXPECT_NE(error_of([&] { resolve_weight_transport(c, 2); }).find("tensor-model-parallel-size 2"),
            std::string::npos);
}

TEST(WeightTransport, NcclOptionsFollowTheFlags) {
  TrainConfig c;
  c.device = "cuda";
  c.precision = "bf16";
  c.update_weight_buffer_size = 1 << 20;
  NcclPushOptions o = nccl_push_options(c, {"http://127.0.0.1:30000", "http://localhost:30001"});
  EXPECT_EQ(o.master_address, "127.0.0.1");  // every engine on this host
  EXPECT_EQ(o.wire_dtype, DType::bf16);
  EXPECT_EQ(o.bucket_bytes, size_t(1) << 20);
  EXPECT_EQ(o.engine_urls.size(), 2u);
  NcclPushOptions remote = nccl_push_options(c, {"http://10.1.2.3:30000"});
  EXPECT_NE(remote.master_address, "127.0.0.1");  // this host's name, reachable from 10.1.2.3
  c.update_weight_master_address = "10.9.9.9";
  c.precision = "f32";
  NcclPushOptions given = nccl_push_options(c, {"http://10.1.2.3:30000"});
  EXPECT_EQ(given.master_address, "10.9.9.9");
  EXPECT_EQ(given.wire_dtype, DType::f32);
}

TEST(WeightTransport, FlagsAreCheckedBeforeAnyWork) {
  TrainConfig c;
  c.hf_checkpoint = "m";
  c.update_weight_transport = "rdma";
  EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("not one of auto, nccl, disk"),
            std::string::npos);
  c.update_weight_transport = "nccl";  // CPU trainer
  EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("needs the trainer on a GPU"),
            std::string::npos);
}

}  // namespace
}  // namespace gyre::rl
