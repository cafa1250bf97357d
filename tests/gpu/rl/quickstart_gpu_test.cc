// `gyre train --device cuda`: the CPU quick-start (GRPO on two-digit addition, examples/quickstart)
// with the actor, the rollout engine's KV cache and training on one GPU, in exact f32 and in bf16
// mixed precision. Like the CPU e2e test it must raise held-out accuracy by 10 points in 20
// rollouts, keep the first-step ratio check (old and new log-probs bitwise equal) and write a
// checkpoint that loads. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "gpu/backend/gpu_test_util.h"
#include "test_util.h"

namespace {

using gyre::test::gyre_bin;
using gyre::test::run_command;
using gyre::test::source_path;

void quickstart_on_gpu(const std::string& precision) {
  const std::string out = gyre::test::temp_dir("quickstart_gpu_" + precision);
  const std::string cmd = "cd " + source_path("") + " && " + gyre_bin() +
                          " train --config examples/quickstart/grpo.yaml --num-rollout 20"
                          " --eval-interval 20 --quiet --device cuda --precision " +
                          precision + " --save " + out;
  auto r = run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(out + "/metrics.jsonl");
  ASSERT_TRUE(f) << "no metrics.jsonl";
  std::string line;
  double first = -1, last = -1, step_time = 0;
  int steps = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/heldout")) {
      if (first < 0) first = j["eval/heldout"].get<double>();
      last = j["eval/heldout"].get<double>();
    }
    if (j.contains("perf/step_time")) {
      step_time += j["perf/step_time"].get<double>();
      ++steps;
    }
  }
  std::printf(
      "quick-start on the GPU (%s): held-out %.3f -> %.3f in 20 rollouts, mean step %.3f s\n",
      precision.c_str(), first, last, steps ? step_time / steps : 0.0);
  ASSERT_GE(first, 0.0);
  EXPECT_LT(first, 0.40) << "the base model should start weak";
  EXPECT_GT(last, first + 0.10) << "GRPO on the GPU did not raise held-out accuracy: " << first
                                << " -> " << last;
  EXPECT_TRUE(std::filesystem::exists(out + "/iter_0000019/model/model.safetensors"));
}

TEST(QuickStartGpu, F32RunRaisesHeldOutAccuracy) {
  GYRE_SKIP_WITHOUT_GPU();
  quickstart_on_gpu("f32");
}

TEST(QuickStartGpu, Bf16RunRaisesHeldOutAccuracy) {
  GYRE_SKIP_WITHOUT_GPU();
  quickstart_on_gpu("bf16");
}

}  // namespace
