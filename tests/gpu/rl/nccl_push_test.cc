// SGLang's NCCL weight update end to end on 2 GPUs: `gyre serve --device cuda` on GPU 1 joins the
// trainer's group (/init_weights_update_group) and receives the trainer's weights from GPU 0
// (/update_weights_from_distributed, flattened buckets). After the push the server's greedy
// continuation and its log-probs are those of the trainer's (changed) weights; a bucket naming a
// tensor the server does not have is refused with that name, without hanging the group.
// A tensor-parallel trainer (TensorParallelTrainerPushesTheGatheredWeights): two torchrun-style
// workers (gpu/dist/env_workers.h; logs in /tmp/gyre_tppush_worker_<rank>.log) hold the
// quick-start policy sharded TP = 2 on GPUs 0 and 1; worker 0 pushes it to the server (GPU 1, next
// to worker 1; the weight group is {worker 0 on GPU 0, server on GPU 1}) while worker 1 follows
// the gathers (follow_weight_push). In f32 the server then generates exactly what it generates
// after a plain push of the gathered tensors (CausalLM::gather_full, what the disk path writes),
// i.e. it holds the full weights bitwise; a push the server refuses midway (another model) fails
// on worker 0 only after every gather, so both workers carry on and the next push succeeds.
// Needs 2 GPUs and GYRE_BIN (the gyre CLI); skips otherwise.
#include "gyre/rl/weight_sync/nccl_push.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "e2e/serve/serve_process.h"
#include "gpu/dist/env_workers.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/timer.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/serve/http_client.h"
#include "test_util.h"

namespace gyre {
namespace {

using json = nlohmann::json;

struct Greedy {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string version;
};

Greedy generate(serve::HttpClient& http, const serve::Url& url,
                const std::vector<int32_t>& prompt) {
  serve::ClientRequest r;
  r.method = "POST", r.target = "/generate", r.timeout_s = 60;
  r.body = json{
      {"input_ids", prompt},
      {"sampling_params", {{"temperature", 0.0}, {"max_new_tokens", 6}, {"ignore_eos", true}}},
      {"return_logprob",
       true}}.dump();
  serve::HttpResponse resp = http.request_sync(url, r);
  EXPECT_TRUE(resp.ok()) << resp.status << " " << resp.error << " " << resp.body;
  json j = json::parse(resp.body);
  Greedy g;
  for (auto& e : j["meta_info"]["output_token_logprobs"]) {
    g.logprobs.push_back(e[0].get<float>());
    g.ids.push_back(e[1].get<int32_t>());
  }
  g.version = j["meta_info"].value("weight_version", "");
  return g;
}

TEST(NcclWeightPush, ServerOnTheOtherGpuGetsTheTrainersWeights) {
  if (dist::cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs";
  const std::string model_dir = test::source_path("examples/quickstart/base_model");
  test::ChildProcess server(
      {"/usr/bin/env", "CUDA_VISIBLE_DEVICES=1", test::gyre_bin(), "serve", "--model-path",
       model_dir, "--device", "cuda", "--port", "0", "--io-threads", "1"},
      120);
  serve::HttpClient http(1);
  const serve::Url url = serve::Url::parse(server.url());
  const std::vector<int32_t> prompt{5, 7, 9, 3, 2, 11};  // the quick-start vocabulary has 16 ids
  const Greedy before = generate(http, url, prompt);
  ASSERT_FALSE(before.ids.empty());

  // The trainer's weights: the same checkpoint, changed (every tensor scaled), on GPU 0, f32.
  auto model = model::CausalLM::load(model_dir, {.device = Device::cuda});
  for (auto& p : model->parameters()) ops::scale_(p.tensor, 1.25f);
  rl::NcclPushOptions o;
  o.engine_urls = {server.url()};
  o.wire_dtype = DType::f32;  // bit-exact
  o.bucket_bytes = 64 << 10;  // several buckets even for the tiny model
  o.timeout_s = 60;
  auto owned = std::make_unique<rl::NcclWeightPusher>(o);
  rl::NcclWeightPusher& pusher = *owned;
  const rl::SyncStats s = pusher.push(*model, 7);
  EXPECT_EQ(s.method, "nccl");
  EXPECT_EQ(s.bytes, uint64_t(model->num_parameters()) * 4);

  const Greedy after = generate(http, url, prompt);
  EXPECT_EQ(after.version, "7");
  ASSERT_EQ(after.ids.size(), before.ids.size());
  // The server's log-probs of its greedy tokens are the trainer model's (same weights, same GPU
  // kind; decode vs packed scoring differ by float order only).
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), after.ids.begin(), after.ids.end());
  auto scores = model::score(*model, {seq}, 1.0f, false);
  double max_diff = 0, moved = 0;
  for (size_t i = 0; i < after.ids.size(); ++i) {
    const float mine = scores[0].token_logprobs[prompt.size() - 1 + i];
    max_diff = std::max(max_diff, std::fabs(double(mine) - double(after.logprobs[i])));
    moved = std::max(moved, std::fabs(double(after.logprobs[i]) - double(before.logprobs[i])));
  }
  // 1.9e-3 measured on 2 x H200 (the server decodes with its own kernels and KV cache, this side
  // scores the packed sequence); the unpushed weights differ by far more (`moved` below).
  EXPECT_LE(max_diff, 1e-2) << "server log-probs are not the pushed weights'";
  EXPECT_GT(moved + double(after.ids != before.ids), 1e-3) << "the push changed nothing";

  // A tensor the server does not have: refused by name, bytes drained, group still usable.
  Tensor bogus = Tensor::zeros({3, 5}, DType::f32, Device::cuda);
  try {
    pusher.push_tensors({{"model.not_a_layer.weight", bogus}}, 8);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.not_a_layer.weight"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(pusher.connected());
  pusher.push(*model, 9);
  EXPECT_EQ(generate(http, url, prompt).version, "9");

  // Leaving: both members finalise together (session 8's exit hang: the trainer finalised alone
  // and never returned), and the server no longer has the group.
  Timer leave;
  owned.reset();
  EXPECT_LT(leave.elapsed(), 20.0) << "the pusher's destructor waited for the engine";
  serve::ClientRequest d;
  d.method = "POST", d.target = "/destroy_weights_update_group", d.timeout_s = 30;
  d.body = json{{"group_name", o.group_name}}.dump();
  const serve::HttpResponse gone = http.request_sync(url, d);
  EXPECT_NE(gone.body.find("no group named"), std::string::npos) << gone.status << " " << gone.body;
  EXPECT_EQ(generate(http, url, prompt).version, "9");  // the server still serves
}

TEST(NcclWeightPush, TensorParallelTrainerPushesTheGatheredWeights) {
  GYRE_SKIP_WITHOUT_GPUS(2);
  const std::string model_dir = test::source_path("examples/quickstart/base_model");
  test::ChildProcess server(
      {"/usr/bin/env", "CUDA_VISIBLE_DEVICES=1", test::gyre_bin(), "serve", "--model-path",
       model_dir, "--device", "cuda", "--port", "0", "--io-threads", "1"},
      120);
  ::setenv("GYRE_TPPUSH_SERVER", server.url().c_str(), 1);  // the workers inherit it
  auto r = test::envw::run_env_workers("NcclWeightPush.DISABLED_TpWorker", 2,
                                       test::envw::worker_port(30700), "tppush");
  test::envw::echo_lines(r.out, "[tppush]");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(test::envw::count_of(r.out, "[  PASSED  ] 1 test"), 2u) << r.out;  // on both ranks
}

// One rank of the test above (rank r on GPU r).
TEST(NcclWeightPush, DISABLED_TpWorker) {
  ::setenv("GYRE_COMM_TIMEOUT", "120", 0);  // a rank that fails makes the other fail, not hang
  const char* url_env = std::getenv("GYRE_TPPUSH_SERVER");
  ASSERT_NE(url_env, nullptr) << "run by TensorParallelTrainerPushesTheGatheredWeights";
  auto world = dist::init_distributed({.timeout_s = 120});
  ASSERT_EQ(world->size(), 2);
  ASSERT_EQ(world->buffer_device(), Device::cuda) << "a torchrun-style world talks NCCL";
  const int rank = world->rank();
  auto tp = dist::make_tp_comm(*world);  // the world is the tp group
  const std::string model_dir = test::source_path("examples/quickstart/base_model");
  // The trainer's weights: the checkpoint sharded over both GPUs, changed (every shard scaled).
  auto model = model::CausalLM::load(model_dir, {.device = Device::cuda, .tp = tp.get()});
  ASSERT_NE(model->tensor_parallel(), nullptr);
  for (auto& p : model->parameters()) ops::scale_(p.tensor, 1.25f);
  // The full weights as the disk path gathers them (collective; host tensors on every rank).
  const std::vector<model::NamedTensor> full = model->gather_full(model->parameters());
  // Another model the server cannot hold (other shapes, an untied lm_head), sharded the same way.
  auto other = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                                     {.device = Device::cuda, .tp = tp.get()});
  const size_t bucket = 4 << 10;  // several buckets even for the tiny model
  const DType wire = DType::f32;  // bit-exact

  if (rank != 0) {
    // The other tp rank: no engines, no group; the gathers of rank 0's three pushes.
    for (const model::CausalLM* m : {model.get(), other.get(), model.get()})
      rl::follow_weight_push(*m, wire, bucket);
    world->barrier();
    return;
  }
  serve::HttpClient http(1);
  const serve::Url url = serve::Url::parse(url_env);
  const std::vector<int32_t> prompt{5, 7, 9, 3, 2, 11};
  const Greedy base = generate(http, url, prompt);
  rl::NcclPushOptions o;
  o.engine_urls = {url_env};
  o.wire_dtype = wire;
  o.bucket_bytes = bucket;
  o.timeout_s = 60;
  rl::NcclWeightPusher pusher(o);

  // (1) The TP push: full tensors, full sizes on the wire.
  const rl::SyncStats s = pusher.push(*model, 7);
  uint64_t full_bytes = 0;
  for (const auto& t : full) full_bytes += t.tensor.nbytes();
  EXPECT_EQ(s.method, "nccl");
  EXPECT_EQ(s.bytes, full_bytes);
  EXPECT_EQ(s.tensors, int64_t(full.size()));
  const Greedy tp_push = generate(http, url, prompt);
  EXPECT_EQ(tp_push.version, "7");
  EXPECT_TRUE(tp_push.ids != base.ids || tp_push.logprobs != base.logprobs)
      << "the push changed nothing";

  // (2) A push the server refuses midway (another model), under TP: rank 0 throws only after
  // gathering to the end (rank 1 is in the same gathers), and the group stays usable.
  try {
    pusher.push(*other, 8);
    ADD_FAILURE() << "the server accepted another model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("update_weights_from_distributed"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(pusher.connected());
  pusher.push(*model, 9);  // rank 1's third follow: the gathers are still in step
  EXPECT_EQ(generate(http, url, prompt).version, "9");

  // (3) The reference: the gathered tensors as a plain list (the TP = 1 path). The server holds
  // the same weights bitwise iff it generates the same as after (1). A cold cache each time
  // (every update flushes it); whether the server repeats itself exactly is checked first.
  std::vector<model::NamedTensor> ref;
  for (const auto& t : full) ref.push_back({t.name, t.tensor.to(Device::cuda)});
  pusher.push_tensors(ref, 10);
  const Greedy ref1 = generate(http, url, prompt);
  serve::ClientRequest flush;
  flush.method = "POST", flush.target = "/flush_cache", flush.timeout_s = 30;
  EXPECT_TRUE(http.request_sync(url, flush).ok());
  const Greedy ref2 = generate(http, url, prompt);
  EXPECT_EQ(ref1.version, "10");
  const bool repeats = ref1.ids == ref2.ids && ref1.logprobs == ref2.logprobs;
  double max_diff = 0;
  ASSERT_EQ(tp_push.logprobs.size(), ref1.logprobs.size());
  for (size_t i = 0; i < ref1.logprobs.size(); ++i)
    max_diff = std::max(max_diff, std::fabs(double(tp_push.logprobs[i]) - ref1.logprobs[i]));
  std::printf(
      "[tppush] %zu tensors, %.1f KB in %.3f s; server deterministic: %d; log-prob max "
      "|TP push - gathered push| = %.3g\n",
      full.size(), double(s.bytes) / 1e3, s.seconds, int(repeats), max_diff);
  std::fflush(stdout);
  EXPECT_EQ(tp_push.ids, ref1.ids);
  if (repeats)
    EXPECT_EQ(max_diff, 0.0) << "the TP push did not deliver the gathered weights bitwise";
  else
    EXPECT_LE(max_diff, 1e-5) << "the TP push did not deliver the gathered weights";
  world->barrier();
}

}  // namespace
}  // namespace gyre
