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
  EXPECT_EQ(resolve_weight_transport(c), "disk");  // CPU trainer
  c.device = "cuda";
  EXPECT_EQ(resolve_weight_transport(c), "nccl");
  c.tensor_model_parallel_size = 2;  // the push gathers the shards: NCCL as well
  EXPECT_EQ(resolve_weight_transport(c), "nccl");
  c.update_weight_transport = "nccl";
  EXPECT_EQ(resolve_weight_transport(c), "nccl");
  c.update_weight_transport = "disk";
  EXPECT_EQ(resolve_weight_transport(c), "disk");
  TrainConfig r;
  r.device = "cuda";
  r.sglang_router_ip = "10.0.0.1";
  r.sglang_router_port = 30000;
  EXPECT_EQ(resolve_weight_transport(r), "disk");  // a router hides its workers
  r.tensor_model_parallel_size = 2;
  EXPECT_EQ(resolve_weight_transport(r), "disk");
  r.update_weight_transport = "nccl";
  EXPECT_NE(error_of([&] {
              resolve_weight_transport(r);
            }).find("list them with --rollout-external-engine-addrs"),
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
  c.hf_checkpoint = std::string("m");  // (not = "m": GCC 12 -Wrestrict false positive)
  c.update_weight_transport = "rdma";
  EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("not one of auto, nccl, disk"),
            std::string::npos);
  c.update_weight_transport = "nccl";  // CPU trainer
  EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("needs the trainer on a GPU"),
            std::string::npos);
  c.device = "cuda";
  c.sglang_router_ip = "10.0.0.1";
  c.sglang_router_port = 30000;
  EXPECT_NE(error_of([&] {
              c.derive_and_validate(64);
            }).find("list them with --rollout-external-engine-addrs"),
            std::string::npos);
  // A tensor-parallel trainer pushes over NCCL too (the shards are gathered): the transport
  // checks pass (what stops this config is a later, unrelated check).
  c.sglang_router_ip.clear(), c.sglang_router_port = 0;
  c.rollout_external_engine_addrs = {"127.0.0.1:30000"};
  c.tensor_model_parallel_size = 2;
  EXPECT_EQ(error_of([&] { c.derive_and_validate(64); }).find("update-weight-transport"),
            std::string::npos);
}

}  // namespace
}  // namespace gyre::rl
