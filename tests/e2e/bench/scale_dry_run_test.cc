// bench/scale_device_run.sh (issue 9's 8-GPU scale run) in its CPU dry-run mode: the rollout part
// (1 and 2 CPU engines behind `gyre router`, cache-aware then round-robin, bench_rollout_scaling)
// and the disaggregated part (2 mpirun trainer ranks + 2 CPU engines, weights through the disk).
// The script only ever runs for real on a machine this project rarely gets, so every build checks
// that its plumbing, its load generator and its checks still work.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

using namespace gyre;
using nlohmann::json;

TEST(ScaleDryRun, RolloutAndDisaggregatedPartsPassTheirChecksOnTheCpu) {
  const std::string bin_dir = std::filesystem::path(test::gyre_bin()).parent_path().string();
  ASSERT_TRUE(std::filesystem::exists(bin_dir + "/bench_rollout_scaling"))
      << "build bench_rollout_scaling (ninja -C build bench_rollout_scaling)";
  const std::string out = test::temp_dir("scale_dry_run");
  // Ports below the ephemeral range, spread by pid so parallel runs of the suite do not collide.
  const int port_base = 20000 + int(getpid() % 60) * 200;
  const std::string cmd = "SCALE_CPU=1 SCALE_BIN=" + bin_dir + " OUT=" + out +
                          " SCALE_WORK=" + out +
                          "/work SCALE_PORT_BASE=" + std::to_string(port_base) +
                          " DISAGG_STEPS=2 RANK_TIMEOUT=240 timeout 300 bash " +
                          test::source_path("bench/scale_device_run.sh") + " rollout disagg";
  const auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("scale parts [rollout disagg]: 0 failed check(s)"), std::string::npos)
      << r.out;

  std::ifstream f(out + "/scale.jsonl");
  ASSERT_TRUE(f) << "no scale.jsonl in " << out;
  std::map<std::string, json> load;  // bench_rollout_scaling's lines by label
  std::vector<json> scaled, disagg;
  for (std::string line; std::getline(f, line);) {
    const json j = json::parse(line);
    if (j["bench"] == "rollout_scaling") load[j["label"].get<std::string>()] = j;
    if (j["bench"] == "scale_rollout") scaled.push_back(j);
    if (j["bench"] == "scale_disagg") disagg.push_back(j);
  }
  for (const char* label : {"cache_aware_1", "cache_aware_2", "round_robin_1", "round_robin_2"}) {
    ASSERT_TRUE(load.count(label)) << label;
    const json& j = load[label];
    const int engines = label[std::string(label).size() - 1] - '0';
    // Weak scaling: 8 prompts x 4 samples per engine, 16 new tokens each (ignore_eos).
    EXPECT_EQ(j["prompts"], 8 * engines) << label;
    EXPECT_EQ(j["requests"], 32 * engines) << label;
    EXPECT_EQ(j["failed"], 0) << label;
    EXPECT_EQ(j["output_tokens"], 32 * engines * 16) << label;
    EXPECT_GT(j["output_tokens_per_s"].get<double>(), 0) << label;
    EXPECT_GE(j["prefix_cache_hit"].get<double>(), 0) << label;
    EXPECT_LE(j["prefix_cache_hit"].get<double>(), j["prefix_cache_hit_max"].get<double>() + 1e-9)
        << label;
  }
  ASSERT_EQ(scaled.size(), 4u);
  for (const auto& j : scaled) {
    if (j["engines"] == 1) {
      EXPECT_DOUBLE_EQ(j["efficiency"].get<double>(), 1.0);
    }
  }

  ASSERT_EQ(disagg.size(), 1u);
  const json& d = disagg[0];
  EXPECT_EQ(d["checks_failed"], 0) << d.dump();
  EXPECT_EQ(d["steps"], 2);
  EXPECT_EQ(d["train_ranks"], 2);
  EXPECT_EQ(d["weight_transport"], "disk");  // a CPU trainer pushes through the disk
  ASSERT_EQ(d["engine_weight_versions"].size(), 2u);
  EXPECT_TRUE(d["phase_mean_s_after_step_0"].contains("perf/rollout_time")) << d.dump();
  EXPECT_TRUE(d["phase_mean_s_after_step_0"].contains("perf/train_time")) << d.dump();
}

// A part whose run fails is reported, and the script's exit status says so (here the load
// generator is missing from SCALE_BIN).
TEST(ScaleDryRun, AFailedPartMakesTheExitStatusNonZero) {
  const std::string out = test::temp_dir("scale_dry_run_fail");
  const std::string bin = out + "/bin";
  std::filesystem::create_directories(bin);
  std::filesystem::create_symlink(test::gyre_bin(), bin + "/gyre");
  const int port_base = 20000 + int((getpid() + 30) % 60) * 200;
  const auto r = test::run_command(
      "SCALE_CPU=1 SCALE_BIN=" + bin + " OUT=" + out + " SCALE_WORK=" + out +
      "/work SCALE_PORT_BASE=" + std::to_string(port_base) + " timeout 300 bash " +
      test::source_path("bench/scale_device_run.sh") + " rollout");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("SCALE CHECK FAILED: bench_rollout_scaling cache_aware 1 engines"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("scale parts [rollout]: 4 failed check(s)"), std::string::npos) << r.out;
}
