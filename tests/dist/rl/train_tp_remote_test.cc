// `gyre train` under `mpirun -np 2 ... --tensor-model-parallel-size 2` with a remote rollout engine
// (one `gyre serve`): rank 0 rolls out on the engine, and every weight push writes the full model,
// gathered from both tp ranks, which the engine reloads. After the run the engine serves exactly
// the trainer's last weights: its greedy tokens and log-probs equal those of a second server that
// loads the trainer's (full, gathered) checkpoint, and differ from the base model's. A push the
// engine refuses stops both ranks with the engine's reason, at once (no communicator timeout).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "e2e/serve/serve_process.h"
#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string mpirun_train(const std::string& out, int rollouts, const std::string& engine_url) {
  return "cd " + test::source_path("") +
         " && GYRE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root "
         "--oversubscribe --bind-to none -np 2 -x GYRE_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 " +
         test::gyre_bin() +
         " train --config examples/quickstart/grpo.yaml --eval-interval 0 --quiet --num-rollout " +
         std::to_string(rollouts) + " --save " + out +
         " --save-interval 1 --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2"
         " --rollout-external-engine-addrs " +
         engine_url;
}

std::unique_ptr<test::ChildProcess> start_engine(const std::string& model) {
  return std::make_unique<test::ChildProcess>(
      std::vector<std::string>{test::gyre_bin(), "serve", "--model-path", model, "--port", "0",
                               "--max-running-requests", "256", "--io-threads", "1"},
      120);
}

json post(const std::string& url, const json& body) {
  const std::string dir = test::temp_dir("tp_remote_post");
  test::write_file(dir + "/body.json", body.dump());
  auto r = test::run_command("curl -s -m 120 -H 'Content-Type: application/json' -d @" + dir +
                             "/body.json " + url);
  EXPECT_EQ(r.exit_code, 0) << url << ": " << r.err;
  json j = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(j.is_object()) << url << ": " << r.out;
  return j;
}

// Greedy continuation of a held-out prompt: the tokens and their log-probs.
struct Greedy {
  std::vector<int64_t> ids;
  std::vector<double> logprobs;
};

Greedy greedy(const test::ChildProcess& engine) {
  json r =
      post(engine.url() + "/generate",
           {{"text", "29+39="},
            {"sampling_params", {{"temperature", 0}, {"max_new_tokens", 4}, {"ignore_eos", true}}},
            {"return_logprob", true}});
  Greedy g;
  if (!r.is_object() || !r.contains("meta_info")) {
    ADD_FAILURE() << r.dump();
    return g;
  }
  for (auto& e : r["meta_info"]["output_token_logprobs"]) {
    g.logprobs.push_back(e[0].get<double>());
    g.ids.push_back(e[1].get<int64_t>());
  }
  EXPECT_EQ(g.ids.size(), 4u) << r.dump();
  return g;
}

std::vector<std::vector<float>> weights(const std::string& dir) {
  std::vector<std::vector<float>> v;
  for (const auto& p : model::CausalLM::load(dir)->parameters()) v.push_back(p.tensor.to_vector());
  return v;
}

TEST(TrainTensorParallelRemote, TwoRanksPushTheGatheredPolicyToTheEngine) {
  const std::string base = test::source_path("examples/quickstart/base_model");
  auto engine = start_engine(base);
  const std::string out = test::temp_dir("train_tp_remote");
  auto r = test::run_command(mpirun_train(out, 2, engine->url()));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;

  // Pushes: one before the first rollout, one after each of the 2 steps.
  auto v = test::run_command("curl -s -m 60 " + engine->url() + "/get_weight_version");
  EXPECT_EQ(json::parse(v.out, nullptr, false).value("weight_version", std::string()), "3")
      << v.out;
  std::ifstream mf(out + "/metrics.jsonl");
  std::string line, last;
  int steps = 0;
  while (std::getline(mf, line)) last = line, ++steps;
  ASSERT_EQ(steps, 2) << "only rank 0 writes metrics";
  EXPECT_EQ(json::parse(last)["rollout/weight_version"], 3.0) << last;

  // The last pushed folder (the only one kept) holds the weights of the last checkpoint, which
  // tp rank 0 wrote from the same gather of both ranks' shards — and they are not the base's.
  std::vector<std::string> pushed;
  for (auto& e : fs::directory_iterator(out + "/weight_sync"))
    if (e.path().filename().string().rfind("weight_v", 0) == 0) pushed.push_back(e.path().string());
  ASSERT_EQ(pushed.size(), 1u);
  EXPECT_EQ(fs::path(pushed[0]).filename(), "weight_v000003");
  const std::string ckpt = out + "/iter_0000001/model";
  const auto w_pushed = weights(pushed[0]), w_ckpt = weights(ckpt), w_base = weights(base);
  EXPECT_TRUE(w_pushed == w_ckpt) << "the pushed weights are not the trainer's last weights";
  EXPECT_FALSE(w_ckpt == w_base) << "training did not change the weights";

  // The engine serves those weights: same greedy tokens and log-probs as a server that loads the
  // checkpoint through the same reload path; a base-model server differs.
  auto reference = start_engine(base);
  const Greedy g_base = greedy(*reference);
  json up = post(reference->url() + "/update_weights_from_disk", {{"model_path", ckpt}});
  ASSERT_TRUE(up.value("success", false)) << up.dump();
  const Greedy g_engine = greedy(*engine), g_ckpt = greedy(*reference);
  EXPECT_EQ(g_engine.ids, g_ckpt.ids);
  EXPECT_EQ(g_engine.logprobs, g_ckpt.logprobs);
  EXPECT_NE(g_engine.logprobs, g_base.logprobs) << "the engine still serves the base model";
}

TEST(TrainTensorParallelRemote, AnEngineRefusingThePushStopsBothRanksWithTheReason) {
  // The engine serves another architecture (the qwen3 tiny fixture: other head_dim and vocab), so
  // it refuses the trainer's folder at the first push. Rank 0 takes its error out of the push; rank
  // 1, which took part in the gather, learns it from rank 0 instead of waiting for a broadcast.
  auto engine = start_engine(test::source_path("tests/fixtures/models/qwen3_tiny"));
  const std::string out = test::temp_dir("train_tp_remote_refused");
  auto r = test::run_command(mpirun_train(out, 1, engine->url()));
  EXPECT_NE(r.exit_code, 0);
  const std::string all = r.err + r.out;
  EXPECT_NE(all.find("update_weights_from_disk("), std::string::npos) << all;
  EXPECT_NE(all.find("rank 0 failed to push weight version 0 to the remote rollout engines, so "
                     "this rank stops too"),
            std::string::npos)
      << all;
  EXPECT_EQ(all.find("did not complete within"), std::string::npos) << all;
  std::ifstream mf(out + "/metrics.jsonl");  // may exist (opened before the first push), empty
  std::string line;
  EXPECT_FALSE(std::getline(mf, line)) << "no rollout may run after a failed push: " << line;
}

}  // namespace
}  // namespace gyre
