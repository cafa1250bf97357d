// `gyre chat-template`: JSONL in, {text, ids} out, matching the Qwen3 fixture; a bad line exits 2
// with the file and line number in the message.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace gyre::tokenizer {
namespace {

using OJ = nlohmann::ordered_json;

TEST(ChatTemplateCli, RendersFixtureCasesToTextAndIds) {
  OJ cases = OJ::parse(
      test::read_file(test::source_path("tests/fixtures/tokenizer_cases.json")))["chat_qwen3"];
  std::string dir = test::temp_dir("chat_template_cli");
  std::string in;
  for (const auto& c : cases) {
    OJ line = {{"messages", c["messages"]},
               {"tools", c["tools"]},
               {"add_generation_prompt", c["add_generation_prompt"]},
               {"kwargs", c["kwargs"]}};
    in += line.dump() + "\n\n";  // blank lines are skipped
  }
  test::write_file(dir + "/in.jsonl", in);
  auto r = test::run_command(test::gyre_bin() + " chat-template --tokenizer " +
                             test::source_path("tests/fixtures/tokenizers/qwen3") + " --input " +
                             dir + "/in.jsonl --output " + dir + "/out.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream out(test::read_file(dir + "/out.jsonl"));
  std::string line;
  size_t k = 0;
  while (std::getline(out, line)) {
    ASSERT_LT(k, cases.size());
    OJ got = OJ::parse(line);
    EXPECT_EQ(got["text"], cases[k]["text"]) << "line " << k + 1;
    EXPECT_EQ(got["ids"], cases[k]["ids"]) << "line " << k + 1;
    ++k;
  }
  EXPECT_EQ(k, cases.size());
}

TEST(ChatTemplateCliParse, BadLineExitsTwoNamingTheLine) {
  std::string dir = test::temp_dir("chat_template_cli_bad");
  test::write_file(
      dir + "/in.jsonl",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"messages\": 5}\n");
  auto r = test::run_command(test::gyre_bin() + " chat-template --tokenizer " +
                             test::source_path("tests/fixtures/tokenizers/qwen3") + " --input " +
                             dir + "/in.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("in.jsonl:2:"), std::string::npos) << r.err;
  test::write_file(dir + "/in.jsonl", "{oops\n");
  r = test::run_command(test::gyre_bin() + " chat-template --tokenizer " +
                        test::source_path("tests/fixtures/tokenizers/qwen3") + " --input " + dir +
                        "/in.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("in.jsonl:1: invalid JSON"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gyre::tokenizer
