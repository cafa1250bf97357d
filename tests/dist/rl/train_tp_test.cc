// `gyre train` under `mpirun -np 2 ... --tensor-model-parallel-size 2`: GRPO on the quick-start
// with the policy sharded over two ranks trains like one process — the same rollouts, the first
// step's loss and gradient norm up to float summation order, the same weights in the (full)
// checkpoint — writes one optimizer shard per tp rank, resumes from them, and rejects DP x TP with
// a message.
#include <gtest/gtest.h>

#include <cmath>
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

TEST(TrainTensorParallel, TwoRanksTrainLikeOneProcess) {
  const std::string one = test::temp_dir("train_tp1"), two = test::temp_dir("train_tp2");
  auto r1 = test::run_command("cd " + test::source_path("") + " && GYRE_NUM_THREADS=1 " +
                              test::gyre_bin() + train_args(one, 1));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = test::run_command(mpirun(2) + test::gyre_bin() + train_args(two, 1) +
                              " --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2");
  ASSERT_EQ(r2.exit_code, 0) << r2.err << r2.out;
  auto m1 = metrics(one), m2 = metrics(two);
  ASSERT_EQ(m1.size(), 1u);
  ASSERT_EQ(m2.size(), 1u) << "only rank 0 writes metrics";
  // Rollout 0 comes from the same weights with the same seeds: identical samples.
  EXPECT_EQ(m1[0]["rollout/raw_reward"], m2[0]["rollout/raw_reward"]);
  const double g1 = m1[0]["train/grad_norm"], g2 = m2[0]["train/grad_norm"];
  EXPECT_LE(std::fabs(g1 - g2), 1e-5 * std::fabs(g1)) << g1 << " vs " << g2;
  const double l1 = m1[0]["train/loss"], l2 = m2[0]["train/loss"];
  EXPECT_LE(std::fabs(l1 - l2), 1e-7) << l1 << " vs " << l2;
  const double e1 = m1[0]["train/entropy"], e2 = m2[0]["train/entropy"];
  EXPECT_LE(std::fabs(e1 - e2), 1e-5 * std::fabs(e1)) << e1 << " vs " << e2;
  // The TP checkpoint is a full HF folder: it loads in one process and holds the weights the
  // single-process run reached after its optimizer step.
  auto a = model::CausalLM::load(one + "/iter_0000000/model");
  auto b = model::CausalLM::load(two + "/iter_0000000/model");
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
    EXPECT_LE(diff, 1e-5 * std::max(scale, 1e-3)) << pa[i].name;
  }
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(std::filesystem::exists(two + "/iter_0000000.tp_optimizer/tp_rank_" +
                                        std::to_string(r) + "_of_2/optimizer.json"));
  // Resume the TP run for one more rollout from its shards.
  auto r3 = test::run_command(mpirun(2) + test::gyre_bin() + train_args(two, 2) + " --load " + two +
                              " --actor-num-gpus-per-node 2 --tensor-model-parallel-size 2");
  ASSERT_EQ(r3.exit_code, 0) << r3.err << r3.out;
  EXPECT_EQ(metrics(two).size(), 2u);
}

TEST(TrainTensorParallel, DataTimesTensorParallelIsRejectedWithTheNumbers) {
  const std::string out = test::temp_dir("train_tp_bad");
  auto r = test::run_command(mpirun(4) + test::gyre_bin() + train_args(out, 1) +
                             " --actor-num-gpus-per-node 4 --tensor-model-parallel-size 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.err + r.out).find("--tensor-model-parallel-size 2 with 2 data-parallel replicas"),
            std::string::npos)
      << r.err << r.out;
}

}  // namespace
}  // namespace gyre
