// Reproducibility of the RL loop on the CPU, through the real `gyre train` CLI on the quick-start
// model (examples/quickstart, a few hundred ms per rollout):
// - slime's debug split: --debug-rollout-only with --save-debug-rollout-data, then
//   --debug-train-only with --load-debug-rollout-data, trains exactly like the combined run: same
//   rollout dump, same train metrics, same gradients, same updated weights;
// - checkpoint at rollout k (--save --save-interval) and resume (--load) gives bitwise the metrics,
//   weights, optimizer and data-buffer state (and, under ppo, the critic) of the uninterrupted run
//   for rollout k+1 (DESIGN.md "Durable state": resume continues bit for bit).
//
// Gradients are compared through the weights: the runs use --adam-eps 1000 --lr 1000, and AdamW's
// first step is then w1 = w0 - lr * g / (|g| + eps) ~= w0 - g (bias-corrected m = g, sqrt(v) =
// |g|), i.e. plain gradient descent, so bitwise equal updated weights mean equal gradients — not
// merely equal signs, which is all that a normal first Adam step (~lr * sign(g)) would show.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

using gyre::test::gyre_bin;
using gyre::test::read_file;
using gyre::test::run_command;
using gyre::test::source_path;
using json = nlohmann::json;

namespace {

// A small version of the quick-start: 8 prompts x 4 samples per rollout, two optimizer steps of 16
// samples each (so num_steps_per_rollout > 1 is covered), no eval. One request at a time
// (--rollout-concurrency 1): the CPU engine's batched forward is not batch-invariant (a row's
// log-probs move by ~1e-6 with the requests that share its step, e.g. OpenBLAS edge kernels), and
// thread timing decides which requests share a step, so only a sequential rollout is a pure
// function of the run's state (the sampled tokens are seeded per sample and match anyway).
std::string train_cmd(const std::string& extra) {
  return "cd " + source_path("") + " && " + gyre_bin() +
         " train --config examples/quickstart/grpo.yaml --rollout-batch-size 8"
         " --n-samples-per-prompt 4 --global-batch-size 16 --micro-batch-size 8 --eval-interval 0"
         " --rollout-concurrency 1"
         " --quiet " +
         extra;
}

void run_ok(const std::string& extra) {
  auto r = run_command(train_cmd(extra));
  ASSERT_EQ(r.exit_code, 0) << "gyre train " << extra << "\n" << r.err;
}

// metrics.jsonl lines by step.
std::map<int64_t, json> metrics_by_step(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  EXPECT_TRUE(f) << "no " << dir << "/metrics.jsonl";
  std::map<int64_t, json> out;
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line);
    out[j.at("step").get<int64_t>()] = j;
  }
  return out;
}

// Every metric of `want` but the timings (perf/*) must be in `got` with the same value, bit for
// bit (JSON doubles round-trip exactly). Returns how many were compared.
int expect_same_metrics(const json& want, const json& got, const std::string& prefix_filter) {
  int compared = 0;
  for (auto& [k, v] : want.items()) {
    if (k.rfind("perf/", 0) == 0 || k.rfind(prefix_filter, 0) != 0) continue;
    ++compared;
    if (!got.contains(k)) {
      ADD_FAILURE() << "metric " << k << " missing";
      continue;
    }
    if (v.is_number() && got[k].is_number()) {
      EXPECT_EQ(v.get<double>(), got[k].get<double>()) << k;
    } else {
      EXPECT_EQ(v, got[k]) << k;
    }
  }
  return compared;
}

std::string ckpt(const std::string& save, int64_t rollout_id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/iter_%07lld", static_cast<long long>(rollout_id));
  return save + buf;
}

}  // namespace

TEST(LoopReplay, DebugRolloutOnlyThenTrainOnlyMatchesTheCombinedRun) {
  const std::string a = gyre::test::temp_dir("replay_combined");
  const std::string b = gyre::test::temp_dir("replay_rollout_only");
  const std::string c = gyre::test::temp_dir("replay_train_only");
  const std::string common = " --num-rollout 1 --adam-eps 1000 --lr 1000";
  // Combined run (it also dumps its rollout, to compare with the rollout-only dump).
  run_ok(common + " --save " + a + " --save-debug-rollout-data " + a + "/dump_{rollout_id}.jsonl");
  // Rollout only: generate and score, no training.
  run_ok(common + " --debug-rollout-only --save " + b + " --save-debug-rollout-data " + b +
         "/dump_{rollout_id}.jsonl");
  // Train only, on the saved rollout.
  run_ok(common + " --debug-train-only --save " + c + " --load-debug-rollout-data " + b +
         "/dump_{rollout_id}.jsonl");

  // The rollout-only run generated exactly what the combined run trained on.
  const std::string dump_a = read_file(a + "/dump_0.jsonl"),
                    dump_b = read_file(b + "/dump_0.jsonl");
  ASSERT_GT(dump_a.size(), 1000u);
  EXPECT_TRUE(dump_a == dump_b) << "rollout dumps differ";
  // The rollout-only run did not train.
  auto mb = metrics_by_step(b);
  ASSERT_TRUE(mb.count(1));
  EXPECT_FALSE(mb[1].contains("train/loss"));

  auto ma = metrics_by_step(a), mc = metrics_by_step(c);
  ASSERT_TRUE(ma.count(1) && mc.count(1));
  for (const char* k : {"train/loss", "train/pg_loss", "train/grad_norm", "train/entropy",
                        "train/ppo_kl", "train/train_rollout_logprob_abs_diff"})
    EXPECT_TRUE(ma[1].contains(k)) << k;
  EXPECT_GT(ma[1]["train/grad_norm"].get<double>(), 0.0);
  EXPECT_GE(expect_same_metrics(ma[1], mc[1], "train/"), 8);
  expect_same_metrics(ma[1], mc[1], "rollout/raw_reward");
  expect_same_metrics(ma[1], mc[1], "rollout/response_len");

  // Same gradients: the updated weights are bitwise equal (see the header comment) and moved.
  const std::string wa = read_file(ckpt(a, 0) + "/model/model.safetensors");
  const std::string wc = read_file(ckpt(c, 0) + "/model/model.safetensors");
  const std::string wb = read_file(ckpt(b, 0) + "/model/model.safetensors");
  EXPECT_TRUE(wa == wc) << "updated weights differ between the combined and the train-only run";
  EXPECT_FALSE(wa == wb) << "the combined run did not change the weights";
  EXPECT_TRUE(read_file(ckpt(a, 0) + "/optimizer.safetensors") ==
              read_file(ckpt(c, 0) + "/optimizer.safetensors"))
      << "AdamW moments (hence gradients) differ";
}

namespace {

// Uninterrupted run vs a run resumed in a fresh process from the checkpoint of rollout k = 1;
// `extra` adds flags to both, `state_files` lists checkpoint files that must match after rollout 2.
void check_resume(const std::string& extra, const std::vector<std::string>& state_files) {
  const std::string a = gyre::test::temp_dir("resume_straight");
  const std::string b = gyre::test::temp_dir("resume_saving");
  const std::string c = gyre::test::temp_dir("resume_resumed");
  // Exercise the lr schedule (warmup then cosine over all 6 optimizer steps), weight decay and the
  // epoch shuffle, whose state must all survive the restart.
  const std::string common =
      " --num-rollout 3 --lr 0.001 --lr-decay-style cosine --lr-warmup-iters 2 --min-lr 1e-5"
      " --weight-decay 0.01" +
      extra;
  run_ok(common + " --save " + a);                         // uninterrupted, saves only at the end
  run_ok(common + " --save " + b + " --save-interval 2");  // checkpoints after rollouts 1 and 2
  ASSERT_TRUE(std::filesystem::exists(ckpt(b, 1) + "/trainer_state.json"));
  // A fresh process resumes from the checkpoint of rollout k = 1 and runs rollout 2.
  run_ok(common + " --load " + ckpt(b, 1) + " --save " + c);

  auto ma = metrics_by_step(a), mb = metrics_by_step(b), mc = metrics_by_step(c);
  ASSERT_TRUE(ma.count(3) && mb.count(3));
  ASSERT_TRUE(mc.count(3)) << "the resumed run did not run rollout 2";
  EXPECT_FALSE(mc.count(2)) << "the resumed run repeated rollout 1";
  // Saving checkpoints does not perturb the run, and the resumed step equals the uninterrupted one.
  EXPECT_GE(expect_same_metrics(ma[3], mb[3], ""), 15);
  EXPECT_GE(expect_same_metrics(ma[3], mc[3], ""), 15);
  EXPECT_EQ(ma[3]["train/lr"], mc[3]["train/lr"]);
  EXPECT_NE(ma[2]["train/lr"], ma[3]["train/lr"]) << "the schedule should be moving";

  // And the state after it: weights, optimizer moments and iteration, data position.
  for (const std::string& f : state_files)
    EXPECT_TRUE(read_file(ckpt(a, 2) + f) == read_file(ckpt(c, 2) + f)) << f << " differs";
}

const std::vector<std::string> kStateFiles = {"/model/model.safetensors", "/optimizer.safetensors",
                                              "/optimizer.json", "/data_buffer.json",
                                              "/trainer_state.json"};

}  // namespace

TEST(LoopReplay, ResumeFromCheckpointContinuesBitForBit) { check_resume("", kStateFiles); }

// PPO: the critic (weights, value head, its AdamW state) is part of the checkpoint too.
TEST(LoopReplay, PpoResumeRestoresTheCritic) {
  std::vector<std::string> files = kStateFiles;
  for (const char* f : {"/critic/model/model.safetensors", "/critic/model/value_head.safetensors",
                        "/critic/optimizer.safetensors"})
    files.push_back(f);
  check_resume(" --advantage-estimator ppo --lambd 0.95", files);
}
