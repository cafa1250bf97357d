// `gyre score` / `gyre grad` on bad input: every problem exits 2 with a message naming the input
// line (non-JSON, missing key, out-of-range id, prompt_len beyond the sequence, a score sequence
// longer than the model's context), and no output.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace gyre {
namespace {

const std::string kModel = "tests/fixtures/models/qwen3_tiny";

test::CommandResult run(const std::string& cmd, const std::string& input, std::string* tmp_out) {
  const std::string tmp = test::temp_dir("cli_bad");
  test::write_file(tmp + "/in.jsonl", input);
  *tmp_out = tmp;
  const std::string out = cmd == "grad" ? " --output " + tmp + "/g.safetensors" : "";
  return test::run_command(test::gyre_bin() + " " + cmd + " --model " + test::source_path(kModel) +
                           " --input " + tmp + "/in.jsonl" + out);
}

void expect_line_error(const std::string& cmd, const std::string& input, int line,
                       const std::string& what) {
  std::string tmp;
  auto r = run(cmd, input, &tmp);
  EXPECT_EQ(r.exit_code, 2) << cmd << " accepted: " << input;
  EXPECT_NE(r.err.find("in.jsonl:" + std::to_string(line) + ":"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_FALSE(std::filesystem::exists(tmp + "/g.safetensors"));
}

TEST(ModelCliErrors, ParseScoreBadLines) {
  const std::string ok = "{\"ids\": [1, 2, 3]}\n";
  expect_line_error("score", ok + "{\"ids\": [1, 2\n", 2, "not valid JSON");
  expect_line_error("score", ok + ok + "{\"tokens\": [1]}\n", 3, "\"ids\"");
  expect_line_error("score", ok + "{\"ids\": [4, 100000]}\n", 2, "100000");
  expect_line_error("score", "{\"ids\": [-1]}\n", 1, "-1");
  expect_line_error("score", ok + "{\"ids\": []}\n", 2, "empty");
}

// A sequence past max_position_embeddings (512 for qwen3_tiny) would run RoPE past the trained
// context and give log-probs / gradients without meaning; score and grad used to take it with exit
// 0. Now each refuses it naming the line and the limit; exactly the context still scores.
TEST(ModelCliErrors, ParseSequenceLongerThanTheContext) {
  auto seq = [](int n, const std::string& extra) {
    std::string s = "{\"ids\": [1";
    for (int i = 1; i < n; ++i) s += ", 1";
    return s + "]" + extra + "}\n";
  };
  for (const std::string cmd : {"score", "grad"}) {
    const std::string extra = cmd == "grad" ? ", \"prompt_len\": 1, \"advantage\": 1" : "";
    expect_line_error(cmd, seq(3, extra) + seq(513, extra), 2, "513 tokens");
    expect_line_error(cmd, seq(513, extra), 1, "context of 512 tokens (max_position_embeddings");
  }
  std::string tmp;
  auto r = run("score", seq(512, ""), &tmp);  // exactly the context: fine
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("token_logprobs"), std::string::npos);
}

TEST(ModelCliErrors, ParseGradBadLines) {
  const std::string ok = "{\"ids\": [1, 2, 3], \"prompt_len\": 1, \"advantage\": 0.5}\n";
  expect_line_error("grad", ok + "not json\n", 2, "not valid JSON");
  expect_line_error("grad", "{\"ids\": [1, 2, 3], \"advantage\": 0.5}\n", 1, "prompt_len");
  expect_line_error("grad", ok + "{\"ids\": [1, 2], \"prompt_len\": 1}\n", 2, "advantage");
  expect_line_error("grad",
                    ok + ok + "{\"ids\": [1, 9999999], \"prompt_len\": 1, \"advantage\": 1}\n", 3,
                    "9999999");
  expect_line_error("grad", "{\"ids\": [1, 2, 3], \"prompt_len\": 4, \"advantage\": 1}\n", 1,
                    "prompt_len 4");
}

TEST(ModelCliErrors, ParseMissingFlagsAndFiles) {
  auto r = test::run_command(test::gyre_bin() + " score --model " + test::source_path(kModel));
  EXPECT_NE(r.exit_code, 0);
  r = test::run_command(test::gyre_bin() + " score --model " + test::source_path(kModel) +
                        " --input /nonexistent/in.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/in.jsonl"), std::string::npos) << r.err;
  r = test::run_command(test::gyre_bin() + " grad --model /nonexistent/model --input x --output y");
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace gyre
