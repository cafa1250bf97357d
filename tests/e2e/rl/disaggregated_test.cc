// Disaggregated GRPO: the quick-start trained by one `gyre train` process whose rollouts run on two
// `gyre serve` processes — behind `gyre router` (--sglang-router-ip/--sglang-router-port) and
// addressed directly (--rollout-external-engine-addrs, fan-out) — with weights pushed through
// /update_weights_from_disk after every step. It must learn like the colocated run
// (tests/e2e/rl/quickstart_test.cc: +10 points of held-out accuracy in 20 rollouts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "e2e/serve/serve_process.h"
#include "test_util.h"

namespace gyre {
namespace {

std::unique_ptr<test::ChildProcess> start_engine() {
  return std::make_unique<test::ChildProcess>(
      std::vector<std::string>{test::gyre_bin(), "serve", "--model-path",
                               test::source_path("examples/quickstart/base_model"), "--port", "0",
                               "--max-running-requests", "256", "--io-threads", "1"},
      120);
}

struct RunMetrics {
  double first_eval = -1, last_eval = -1;
  bool saw_sync_time = false;
  int rollouts = 0;
};

RunMetrics read_metrics(const std::string& dir) {
  RunMetrics r;
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/heldout")) {
      if (r.first_eval < 0) r.first_eval = j["eval/heldout"].get<double>();
      r.last_eval = j["eval/heldout"].get<double>();
    }
    if (j.contains("rollout/raw_reward")) ++r.rollouts;
    r.saw_sync_time |= j.contains("perf/update_weights_time");
  }
  return r;
}

std::string train_cmd(const std::string& out, const std::string& engines, int rollouts) {
  return "cd " + test::source_path("") + " && timeout 600 " + test::gyre_bin() +
         " train --config examples/quickstart/grpo.yaml --num-rollout " + std::to_string(rollouts) +
         " --eval-interval " + std::to_string(rollouts) + " --quiet --save " + out + " " + engines;
}

TEST(DisaggregatedGrpo, TwoServersBehindTheRouterLearnLikeColocated) {
  auto e1 = start_engine();
  auto e2 = start_engine();
  test::ChildProcess router({test::gyre_bin(), "router", "--port", "0", "--policy", "round_robin",
                             "--worker-urls", e1->url(), e2->url()});
  const std::string out = test::temp_dir("disagg_router");
  auto r = test::run_command(train_cmd(
      out, "--sglang-router-ip 127.0.0.1 --sglang-router-port " + std::to_string(router.port()),
      20));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunMetrics m = read_metrics(out);
  EXPECT_EQ(m.rollouts, 20);
  EXPECT_TRUE(m.saw_sync_time);
  ASSERT_GE(m.first_eval, 0.0);
  EXPECT_LT(m.first_eval, 0.40) << "the base model should start weak";
  EXPECT_GT(m.last_eval, m.first_eval + 0.10)
      << "disaggregated GRPO did not learn: " << m.first_eval << " -> " << m.last_eval;
  // Only the latest pushed weights stay on disk.
  int weight_dirs = 0;
  for (auto& e : std::filesystem::directory_iterator(out + "/weight_sync"))
    weight_dirs += e.path().filename().string().rfind("weight_v", 0) == 0;
  EXPECT_EQ(weight_dirs, 1);
}

TEST(DisaggregatedGrpo, FanOutOverTwoAddressesUpdatesBothEngines) {
  auto e1 = start_engine();
  auto e2 = start_engine();
  const std::string out = test::temp_dir("disagg_fanout");
  auto r = test::run_command(
      train_cmd(out, "--rollout-external-engine-addrs " + e1->url() + " " + e2->url(), 3));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_metrics(out).rollouts, 3);
  // Both engines reloaded the trainer's weights: initial push + one per step = version 4.
  for (auto* e : {e1.get(), e2.get()}) {
    auto v = test::run_command("curl -s -m 60 " + e->url() + "/get_weight_version");
    auto j = nlohmann::json::parse(v.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << e->url() << ": " << v.out;
    EXPECT_EQ(j.value("weight_version", std::string()), "4") << e->url() << ": " << v.out;
  }
}

TEST(DisaggregatedGrpo, ParseUnreachableEngineIsNamed) {
  const std::string out = test::temp_dir("disagg_bad");
  auto r = test::run_command(train_cmd(out, "--rollout-external-engine-addrs 127.0.0.1:1", 1));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("http://127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("does not answer"), std::string::npos) << r.err;
  auto r2 = test::run_command(train_cmd(out, "--rollout-external-engine-addrs nohost", 1));
  EXPECT_EQ(r2.exit_code, 2) << r2.err;
  EXPECT_NE(r2.err.find("'nohost' is not an address"), std::string::npos) << r2.err;
}

}  // namespace
}  // namespace gyre
