// `gyre train` under `mpirun -np 2 ... --actor-num-gpus-per-node 2`: data-parallel GRPO on the
// quick-start trains exactly like one process (same rollouts from rank 0, the same first-step loss
// and gradient norm up to float summation order), writes one optimizer shard per rank next to each
// checkpoint, resumes from them, and rejects a world size that does not match the flags.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace gyre {
namespace {

std::string train(const std::string& out, int rollouts, const std::string& extra) {
  return "cd " + test::source_path("") + " && timeout 300 " + test::gyre_bin() +
         " train --config examples/quickstart/grpo.yaml --eval-interval 0 --quiet --num-rollout " +
         std::to_string(rollouts) + " --save " + out + " --save-interval 1 " + extra;
}

std::string mpirun(int np) {
  return "GYRE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root "
         "--oversubscribe --bind-to none -np " +
         std::to_string(np) + " -x GYRE_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 ";
}

std::vector<nlohmann::json> metrics(const std::string& dir) {
  std::vector<nlohmann::json> v;
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

TEST(TrainDataParallel, TwoRanksTrainLikeOneProcess) {
  const std::string one = test::temp_dir("train_dp1"), two = test::temp_dir("train_dp2");
  auto r1 = test::run_command("GYRE_NUM_THREADS=1 " + train(one, 2, ""));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  // mpirun starts the gyre binary on every rank (the command line after `cd` is the program).
  auto r2 =
      test::run_command("cd " + test::source_path("") + " && " + mpirun(2) + test::gyre_bin() +
                        " train --config examples/quickstart/grpo.yaml --eval-interval 0 "
                        "--quiet --num-rollout 2 --save " +
                        two + " --save-interval 1 --actor-num-gpus-per-node 2");
  ASSERT_EQ(r2.exit_code, 0) << r2.err << r2.out;
  auto m1 = metrics(one), m2 = metrics(two);
  ASSERT_EQ(m1.size(), 2u);
  ASSERT_EQ(m2.size(), 2u) << "only rank 0 writes metrics";
  // Rollout 0 is generated from the same weights with the same seeds: identical samples.
  EXPECT_EQ(m1[0]["rollout/raw_reward"], m2[0]["rollout/raw_reward"]);
  const double g1 = m1[0]["train/grad_norm"], g2 = m2[0]["train/grad_norm"];
  EXPECT_LE(std::fabs(g1 - g2), 1e-6 * std::fabs(g1)) << g1 << " vs " << g2;
  const double l1 = m1[0]["train/loss"], l2 = m2[0]["train/loss"];
  EXPECT_LE(std::fabs(l1 - l2), 1e-7) << l1 << " vs " << l2;
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(std::filesystem::exists(two + "/iter_0000001.dp_optimizer/dp_rank_00" +
                                        std::to_string(r) + "_of_002"));
  // Resume the DP run for one more rollout from its shards.
  auto r3 =
      test::run_command("cd " + test::source_path("") + " && " + mpirun(2) + test::gyre_bin() +
                        " train --config examples/quickstart/grpo.yaml --eval-interval 0 "
                        "--quiet --num-rollout 3 --load " +
                        two + " --save " + two + " --actor-num-gpus-per-node 2");
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  EXPECT_EQ(metrics(two).size(), 3u);
}

TEST(TrainDataParallel, ParseWorldSizeMismatchNamesTheNumbers) {
  const std::string out = test::temp_dir("train_dp_bad");
  auto r = test::run_command("cd " + test::source_path("") + " && " + mpirun(2) + test::gyre_bin() +
                             " train --config examples/quickstart/grpo.yaml --num-rollout 1 "
                             "--save " +
                             out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.err + r.out).find("world size 2"), std::string::npos) << r.err << r.out;
  EXPECT_NE((r.err + r.out).find("-np 1"), std::string::npos) << r.err << r.out;
}

}  // namespace
// A --save folder rank 0 cannot create stops every rank at once with the error naming --save (the
// ranks agree on rank 0's result): rank 1 used to go on to its first collective and wait there.
TEST(TrainDataParallel, ParseUnwritableSaveStopsEveryRank) {
  const std::string dir = test::temp_dir("train_dp_unwritable");
  test::write_file(dir + "/file", "x");  // a file where the output folder's parent should be
  const auto t0 = std::chrono::steady_clock::now();
  auto r = test::run_command("cd " + test::source_path("") + " && " + mpirun(2) + test::gyre_bin() +
                             " train --config examples/quickstart/grpo.yaml --num-rollout 1 "
                             "--actor-num-gpus-per-node 2 --save " +
                             dir + "/file/out");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.err + r.out).find("--save " + dir + "/file/out"), std::string::npos)
      << r.err << r.out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0)
      << "a rank waited for its peer";
}

}  // namespace gyre
