// The CPU quick-start, shortened: 20 GRPO rollouts of examples/quickstart must raise the held-out
// greedy accuracy clearly above the SFT base model's (31.5% -> 63.5% in development runs), and the
// run must write slime-named metrics and a loadable checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

using gyre::test::gyre_bin;
using gyre::test::run_command;
using gyre::test::source_path;

TEST(QuickStart, ShortGrpoRunRaisesHeldOutAccuracy) {
  const std::string out = gyre::test::temp_dir("quickstart");
  const std::string cmd = "cd " + source_path("") + " && " + gyre_bin() +
                          " train --config examples/quickstart/grpo.yaml --num-rollout 20"
                          " --eval-interval 20 --quiet --save " +
                          out;
  auto r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(out + "/metrics.jsonl");
  ASSERT_TRUE(f) << "no metrics.jsonl";
  std::string line;
  double first = -1, last = -1;
  bool saw_reward = false, saw_ratio_metrics = false;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/heldout")) {
      if (first < 0) first = j["eval/heldout"].get<double>();
      last = j["eval/heldout"].get<double>();
    }
    saw_reward |= j.contains("rollout/raw_reward");
    saw_ratio_metrics |= j.contains("train/ppo_kl") && j.contains("train/pg_clipfrac") &&
                         j.contains("train/train_rollout_logprob_abs_diff");
  }
  EXPECT_TRUE(saw_reward);
  EXPECT_TRUE(saw_ratio_metrics);
  ASSERT_GE(first, 0.0);
  EXPECT_LT(first, 0.40) << "the base model should start weak";
  EXPECT_GT(last, first + 0.10) << "GRPO did not raise held-out accuracy: " << first << " -> "
                                << last;
  EXPECT_TRUE(std::filesystem::exists(out + "/latest_checkpointed_iteration.txt"));
  EXPECT_TRUE(std::filesystem::exists(out + "/iter_0000019/model/model.safetensors"));
}

TEST(QuickStart, ParseInconsistentBatchConfigIsRejectedWithTheNumbers) {
  const std::string cmd = "cd " + source_path("") + " && " + gyre_bin() +
                          " train --config examples/quickstart/grpo.yaml --global-batch-size 100";
  auto r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("global_batch_size (100)"), std::string::npos) << r.err;
}

TEST(QuickStart, ParseNegativeCudaGraphBatchIsRejected) {
  const std::string cmd = "cd " + source_path("") + " && " + gyre_bin() +
                          " train --config examples/quickstart/grpo.yaml --num-rollout 1 "
                          "--sglang-cuda-graph-max-bs -1 --save /tmp/gyre_graph_bs_reject";
  auto r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--sglang-cuda-graph-max-bs must be in [0, 1048576] (got -1)"),
            std::string::npos)
      << r.err;
}

TEST(QuickStart, ParseBf16KvCacheOnTheCpuIsRejected) {
  const std::string cmd = "cd " + source_path("") + " && " + gyre_bin() +
                          " train --config examples/quickstart/grpo.yaml --num-rollout 1 "
                          "--sglang-kv-cache-dtype bf16 --save /tmp/gyre_kv_dtype_reject";
  auto r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("kv_cache_dtype bf16 needs the model on a CUDA device"), std::string::npos)
      << r.err;
}
