// `gyre reward` end to end: JSONL cases in, one {"reward": ...} line per case out; a malformed
// line exits 2 naming the line; dict rewards with --reward-key; a custom JSON-lines process; a
// failed reward exits 1 after writing every line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

using namespace gyre;
using nlohmann::json;

namespace {
std::vector<json> lines_of(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) v.push_back(json::parse(l));
  return v;
}
}  // namespace

TEST(RewardCli, MathCases) {
  const std::string dir = test::temp_dir("reward_cli");
  test::write_file(dir + "/cases.jsonl",
                   R"({"response": "so \\boxed{\\frac{1}{2}}", "label": "0.5"}
{"response": "\\boxed{43}", "label": "42"}

{"response": "</think>\\boxed{42}", "label": 42, "metadata": {"rm_type": "deepscaler"}}
)");
  auto r = test::run_command(test::gyre_bin() + " reward --rm-type math --input " + dir +
                             "/cases.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = lines_of(r.out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0]["reward"], 1);
  EXPECT_EQ(out[1]["reward"], 0);
  EXPECT_EQ(out[2]["reward"], 1);
}

TEST(RewardCli, DapoWithRewardKey) {
  const std::string dir = test::temp_dir("reward_cli");
  test::write_file(dir + "/cases.jsonl", R"({"response": "Answer: 42", "label": "42"}
{"response": "Answer: 7", "label": "42"}
)");
  auto r =
      test::run_command(test::gyre_bin() + " reward --rm-type dapo --reward-key score --input " +
                        dir + "/cases.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = lines_of(r.out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["reward"], 1.0);
  EXPECT_EQ(out[1]["reward"], -1.0);
}

TEST(RewardCli, ParseBadLineExits2NamingTheLine) {
  const std::string dir = test::temp_dir("reward_cli");
  test::write_file(dir + "/cases.jsonl", R"({"response": "x", "label": "1"}
{"response": oops}
)");
  auto r = test::run_command(test::gyre_bin() + " reward --rm-type math --input " + dir +
                             "/cases.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cases.jsonl:2"), std::string::npos) << r.err;
}

TEST(RewardCli, ParseMissingLabelExits2NamingTheSample) {
  const std::string dir = test::temp_dir("reward_cli");
  test::write_file(dir + "/cases.jsonl",
                   "{\"response\": \"x\", \"label\": \"1\"}\n"
                   "{\"response\": \"\\\\boxed{1}\"}\n");
  auto r = test::run_command(test::gyre_bin() + " reward --rm-type math --input " + dir +
                             "/cases.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("sample 2"), std::string::npos) << r.err;
}

// A failed reward keeps its line ({"reward": null, "error"}) and the others are still scored, but
// the exit status is 1 (it used to be 0) with a stderr summary naming the first failure.
TEST(RewardCli, CustomProcessFailureKeepsEveryLineAndExits1) {
  const std::string dir = test::temp_dir("reward_cli");
  test::write_file(dir + "/rm.sh", R"(while IFS= read -r line; do
  case "$line" in
    *'"response":"crash"'*) exit 1 ;;
    *) echo '{"reward": 0.25}' ;;
  esac
done
)");
  test::write_file(dir + "/cases.jsonl", R"({"response": "a"}
{"response": "crash"}
{"response": "b"}
)");
  auto r = test::run_command(test::gyre_bin() + " reward --custom-rm-path 'sh " + dir +
                             "/rm.sh' --input " + dir + "/cases.jsonl");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("gyre reward: 1 of 3 cases failed (their output lines carry \"error\"); "
                       "first: " +
                       dir + "/cases.jsonl:2: custom reward process"),
            std::string::npos)
      << r.err;
  auto out = lines_of(r.out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0]["reward"], 0.25);
  EXPECT_TRUE(out[1]["reward"].is_null());
  EXPECT_NE(out[1]["error"].get<std::string>().find("exited with status 1"), std::string::npos);
  EXPECT_EQ(out[2]["reward"], 0.25);
}
