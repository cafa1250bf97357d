// `gyre train` under `mpirun -np 2 ... --tensor-model-parallel-size 2` (TP alone) and
// `mpirun -np 4 ... --tensor-model-parallel-size 2` (DP=2 x TP=2, Megatron's layout, both
// --dp-mode values): GRPO on the quick-start with the policy sharded trains like one process — the
// same rollouts, the first step's loss, entropy and gradient norm up to float summation order, the
// same weights in the (full) checkpoint — writes one optimizer shard per (dp, tp) rank, resumes
// from them, and rejects a world size that is not a multiple of the TP size with the numbers.
// The rollouts come from the sharded policy itself (rank 0's engine leads, the other tp ranks of
// replica 0 follow its steps): no rank loads a second, unsharded model; a rank 0 that fails
// mid-rollout ends its follower with the reason. TP with remote engines: train_tp_remote_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre {
namespace {

std::string mpirun(int np) {
  return "cd " + test::source_path("") +
         " && GYRE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root "
         "--oversubscribe --bind-to none -np " +
         std::to_string(np) + " -x GYRE_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 ";
}

std::string train_args(const std::string& out, int rollouts) {
  return " train --config examples/quickstart/grpo.yaml --eval-interval 0 --quiet --num-rollout " +
         std::to_string(rollouts) + " --save " + out + " --save-interval 1";
}

std::vector<nlohmann::json> metrics(const std::string& dir) {
  std::vector<nlohmann::json> v;
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

// One rollout in one process (the reference every sharded run is compared with).
std::string single_process_run(const char* tag) {
  const std::string one = test::temp_dir(tag);
  auto r1 = test::run_command("cd " + test::source_path("") + " && GYRE_NUM_THREADS=1 " +
                              test::gyre_bin() + train_args(one, 1));
  EXPECT_EQ(r1.exit_code, 0) << r1.err;
  return one;
}

// The weights of checkpoint `iter` in runs `a` and `b` agree to 1e-5 of each tensor's scale.
void expect_same_weights(const std::string& a_dir, const std::string& b_dir,
                         const std::string& iter) {
  auto a = model::CausalLM::load(a_dir + "/" + iter + "/model");
  auto b = model::CausalLM::load(b_dir + "/" + iter + "/model");
  const auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    const auto va = pa[i].tensor.to_vector(), vb = pb[i].tensor.to_vector();
    ASSERT_EQ(va.size(), vb.size()) << pa[i].name;
    double diff = 0, scale = 0;
    for (size_t k = 0; k < va.size(); ++k) {
      diff = std::max(diff, std::fabs(double(va[k]) - double(vb[k])));
      scale = std::max(scale, std::fabs(double(va[k])));
    }
    EXPECT_LE(diff, 1e-5 * std::max(scale, 1e-3)) << iter << " " << pa[i].name;
  }
}

// The run's log says the rollout engine ran the sharded policy, and nothing about an unsharded
// copy.
void expect_sharded_rollout(const test::CommandResult& r, int tp) {
  const std::string all = r.err + r.out;
  EXPECT_NE(all.find("tensor parallel: " + std::to_string(tp) +
                     " ranks; the rollout engine runs the sharded policy"),
            std::string::npos)
      << all;
  EXPECT_EQ(all.find("unsharded"), std::string::npos) << all;
}

// The first step's metrics and the checkpoint's weights of `dist` equal those of `one`.
void expect_trains_like_one_process(const std::string& one, const std::string& dist) {
  auto m1 = metrics(one), m2 = metrics(dist);
  ASSERT_GE(m1.size(), 1u);
  ASSERT_GE(m2.size(), 1u);
  ASSERT_EQ(m2.size(), m1.size()) << "only rank 0 writes metrics";
  // Rollout 0 comes from the same weights with the same seeds: identical samples.
  EXPECT_EQ(m1[0]["rollout/raw_reward"], m2[0]["rollout/raw_reward"]);
  const double g1 = m1[0]["train/grad_norm"], g2 = m2[0]["train/grad_norm"];
  EXPECT_LE(std::fabs(g1 - g2), 1e-5 * std::fabs(g1)) << g1 << " vs " << g2;
  // The first GRPO step's loss is a cancelling sum (ratio 1, advantages summing to 0 per group) of
  // O(1) terms, ~1e-4 of float rounding: compared to 1e-7 absolute, i.e. relative to its terms.
  const double l1 = m1[0]["train/loss"], l2 = m2[0]["train/loss"];
  EXPECT_LE(std::fabs(l1 - l2), 1e-7) << l1 << " vs " << l2;
  const double e1 = m1[0]["train/entropy"], e2 = m2[0]["train/entropy"];
  EXPECT_LE(std::fabs(e1 - e2), 1e-5 * std::fabs(e1)) << e1 << " vs " << e2;
  // The sharded run's checkpoint is a full HF folder: it loads in one process and holds the
  // weights the single-process run reached after its optimizer step.
  expect_same_weights(one, dist, "iter_0000000");
}

TEST(TrainTensorParallel, TwoRanksTrainLikeOneProcess) {
  const std::string one = single_process_run("train_tp1"), two = test::temp_dir("train_tp2");
  auto r2 = test::run_command(mpirun(2) + test::gyre_bin() + train_args(two, 1) +
                              " --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2");
  ASSERT_EQ(r2.exit_code, 0) << r2.err << r2.out;
  ASSERT_EQ(metrics(two).size(), 1u);
  expect_sharded_rollout(r2, 2);
  expect_trains_like_one_process(one, two);
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(std::filesystem::exists(two + "/iter_0000000.tp_optimizer/tp_rank_" +
                                        std::to_string(r) + "_of_2/optimizer.json"));
  // Resume the TP run for one more rollout from its shards, with a held-out evaluation after it
  // (another generation phase of the sharded engine and its follower).
  auto r3 = test::run_command(mpirun(2) + test::gyre_bin() + train_args(two, 2) + " --load " + two +
                              " --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2" +
                              " --eval-interval 1");
  ASSERT_EQ(r3.exit_code, 0) << r3.err << r3.out;
  const auto m = metrics(two);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_TRUE(m[1].contains("eval/heldout")) << m[1].dump();
}

// DP=2 x TP=2 on four ranks (rank = dp_rank * 2 + tp_rank): each replica trains on half of the
// step's samples, the shards' gradients are reduced over the dp groups and clipped by the full
// model's norm.
void data_times_tensor_parallel(const std::string& dp_mode, const char* tag) {
  const std::string one = single_process_run(tag), four = test::temp_dir(std::string(tag) + "_4");
  const std::string flags =
      " --actor-num-gpus-per-node 4 --tensor-model-parallel-size 2 "
      "--dp-mode " +
      dp_mode;
  auto r4 = test::run_command(mpirun(4) + test::gyre_bin() + train_args(four, 1) + flags);
  ASSERT_EQ(r4.exit_code, 0) << r4.err << r4.out;
  ASSERT_EQ(metrics(four).size(), 1u);
  expect_sharded_rollout(r4, 2);
  expect_trains_like_one_process(one, four);
  // One optimizer shard per (dp, tp) rank; none of TP alone's layout.
  for (int tp = 0; tp < 2; ++tp)
    for (int dp = 0; dp < 2; ++dp)
      EXPECT_TRUE(std::filesystem::exists(four + "/iter_0000000.dp_optimizer/tp_rank_" +
                                          std::to_string(tp) + "_of_2/dp_rank_00" +
                                          std::to_string(dp) + "_of_002/optimizer.json"))
          << "tp " << tp << " dp " << dp;
  EXPECT_FALSE(std::filesystem::exists(four + "/iter_0000000.tp_optimizer"));
  // Resume for one more rollout from the shards: the second step lands where an uninterrupted
  // two-rollout run lands, which needs every shard's Adam moments and step count back.
  auto r5 = test::run_command(mpirun(4) + test::gyre_bin() + train_args(four, 2) + " --load " +
                              four + flags);
  ASSERT_EQ(r5.exit_code, 0) << r5.err << r5.out;
  const std::string straight = test::temp_dir(std::string(tag) + "_straight");
  auto r7 = test::run_command(mpirun(4) + test::gyre_bin() + train_args(straight, 2) + flags);
  ASSERT_EQ(r7.exit_code, 0) << r7.err << r7.out;
  const auto m = metrics(four), ms = metrics(straight);
  ASSERT_EQ(m.size(), 2u);
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_EQ(m[1]["rollout/weight_version"], 2.0);
  EXPECT_EQ(m[1]["rollout/raw_reward"], ms[1]["rollout/raw_reward"]);
  expect_same_weights(straight, four, "iter_0000001");
  // A resume with another layout finds no shards for it and says which sizes it needs.
  auto r6 = test::run_command(mpirun(2) + test::gyre_bin() + train_args(four, 3) + " --load " +
                              four + " --actor-num-gpus-per-node 2 --dp-mode " + dp_mode);
  EXPECT_NE(r6.exit_code, 0);
  EXPECT_NE((r6.err + r6.out).find("data_parallel.json not found"), std::string::npos)
      << r6.err << r6.out;
}

TEST(TrainTensorParallel, DataTimesTensorParallelZero1TrainsLikeOneProcess) {
  data_times_tensor_parallel("zero1", "train_dptp_zero1");
}

TEST(TrainTensorParallel, DataTimesTensorParallelAllReduceTrainsLikeOneProcess) {
  data_times_tensor_parallel("all_reduce", "train_dptp_allreduce");
}

TEST(TrainTensorParallel, WorldSizeNotAMultipleOfTensorParallelIsRejectedWithTheNumbers) {
  const std::string out = test::temp_dir("train_tp_bad");
  auto r = test::run_command(mpirun(3) + test::gyre_bin() + train_args(out, 1) +
                             " --actor-num-gpus-per-node 3 --tensor-model-parallel-size 2");
  EXPECT_NE(r.exit_code, 0);
  const std::string all = r.err + r.out;
  EXPECT_NE(all.find("world size 3 is not a multiple of --tensor-model-parallel-size 2"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("-np 2 or 4"), std::string::npos) << all;
}

TEST(TrainTensorParallel, LeaderFailingMidRolloutEndsTheFollowerWithTheReason) {
  // A custom generate function that returns nothing makes rank 0's rollout fail; its engine is
  // destroyed while the error propagates and tells its follower (rank 1) why, so rank 1 ends with
  // that reason at once instead of waiting in the rollout's broadcast for the comm timeout.
  const std::string dir = test::temp_dir("train_tp_fail");
  test::write_file(dir + "/nogen.c", "void gyre_generate(void* call) { (void)call; }\n");
  ASSERT_EQ(
      std::system(("cc -shared -fPIC -o " + dir + "/libnogen.so " + dir + "/nogen.c").c_str()), 0);
  auto r = test::run_command(mpirun(2) + test::gyre_bin() + train_args(dir + "/out", 1) +
                             " --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2"
                             " --custom-generate-function-path " +
                             dir + "/libnogen.so");
  EXPECT_NE(r.exit_code, 0);
  const std::string all = r.err + r.out;
  EXPECT_NE(all.find("custom generate function returned no samples"), std::string::npos) << all;
  EXPECT_NE(all.find("rank 0's engine stopped during generation: the leader's engine was "
                     "destroyed by an error"),
            std::string::npos)
      << all;
  EXPECT_EQ(all.find("did not complete within"), std::string::npos) << all;
}

}  // namespace
}  // namespace gyre
