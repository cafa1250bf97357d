// Bad input to small CLI commands exits 2 with a message naming the flag, before any work:
// `gyre init-model` refuses an --output folder that already holds a model (random weights used to
// replace a trained model.safetensors with exit 0) unless --force, and a --std that is not a
// finite number > 0 (NaN wrote an all-NaN model); `gyre reward` refuses a --rm-timeout <= 0
// (every remote attempt timed out at once and the retries ran until killed).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_util.h"

using namespace gyre;

namespace {

test::CommandResult gyre_cmd(const std::string& args) {
  return test::run_command("timeout 60 " + test::gyre_bin() + " " + args);
}

}  // namespace

TEST(CliBadInput, InitModelKeepsAnExistingModelAndChecksStd) {
  const std::string cfg = test::source_path("tests/fixtures/models/qwen3_tiny/config.json");
  const std::string out = test::temp_dir("init_model") + "/m";
  auto r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto written = std::filesystem::last_write_time(out + "/model.safetensors");
  r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already holds"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(std::filesystem::last_write_time(out + "/model.safetensors"), written);
  r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 2 --force");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* std_arg : {"nan", "-1", "0", "inf"}) {
    r = gyre_cmd("init-model --config " + cfg + " --output " + out + "_std --std " + std_arg);
    EXPECT_EQ(r.exit_code, 2) << std_arg;
    EXPECT_NE(r.err.find("--std"), std::string::npos) << std_arg << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(out + "_std/model.safetensors")) << std_arg;
  }
}

TEST(CliBadInput, RewardTimeoutsMustBePositive) {
  const std::string dir = test::temp_dir("reward_timeout");
  test::write_file(dir + "/r.jsonl", R"({"response":"4","label":"4"})"
                                     "\n");
  for (const char* flag : {"--rm-timeout", "--custom-rm-timeout"})
    for (const char* v : {"-1", "0"}) {
      const auto r =
          gyre_cmd(std::string("reward --rm-type remote_rm --rm-url http://127.0.0.1:1/x ") +
                   "--input " + dir + "/r.jsonl " + flag + " " + v);
      EXPECT_NE(r.exit_code, 0) << flag << " " << v;
      EXPECT_NE(r.exit_code, 124) << flag << " " << v << ": timed out";
      EXPECT_NE(r.err.find(flag), std::string::npos) << flag << " " << v << ": " << r.err;
    }
}
