// `gyre generate` on the qwen3_tiny fixture: integer sampling parameters outside their type's
// range are an error naming the line, the key and the range (exit 2, nothing generated) — they
// used to wrap silently (max_new_tokens 4294967299 ran as 3, top_k 4294967297 as 1, a negative
// seed as a huge one) — while in-range requests still generate. A request the engine rejects
// keeps its output line and the others run, but the exit status is 1 (it used to be 0). An
// unknown sampling key is refused with the list /generate uses (serve::is_sampling_param_key).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

using namespace gyre;

namespace {

test::CommandResult generate(const std::string& jsonl, std::string* out_jsonl = nullptr) {
  const std::string dir = test::temp_dir("generate_cli");
  test::write_file(dir + "/in.jsonl", jsonl);
  auto r = test::run_command("timeout 60 " + test::gyre_bin() + " generate --model " +
                             test::source_path("tests/fixtures/models/qwen3_tiny") + " --input " +
                             dir + "/in.jsonl --output " + dir + "/out.jsonl");
  if (out_jsonl) *out_jsonl = test::read_file(dir + "/out.jsonl");
  return r;
}

}  // namespace

TEST(GenerateCli, IntegersOutsideTheirRangeAreErrorsNotWrapped) {
  const auto ok =
      generate(R"({"input_ids":[1,2,3],"sampling_params":{"max_new_tokens":4,"temperature":0}})"
               "\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  for (const std::string sp :
       {R"("max_new_tokens":4294967299)", R"("max_new_tokens":4294967296)", R"("top_k":4294967297)",
        R"("max_new_tokens":1000000000000)", R"("seed":-5)"}) {
    const auto r = generate(R"({"input_ids":[1,2],"sampling_params":{)" + sp + "}}\n");
    EXPECT_EQ(r.exit_code, 2) << sp << ": " << r.err;
    EXPECT_NE(r.err.find("in.jsonl:1"), std::string::npos) << sp << ": " << r.err;
    EXPECT_NE(r.err.find("is outside ["), std::string::npos) << sp << ": " << r.err;
  }
  // Prompt ids past int32 were narrowed to -1 before the engine's check named them.
  for (const std::string id : {"4294967297", "-2147483649", "18446744073709551615"}) {
    const auto r = generate(R"({"input_ids":[1,)" + id + "]}\n");
    EXPECT_EQ(r.exit_code, 2) << id << ": " << r.err;
    EXPECT_NE(r.err.find("input_ids[1] = " + id + " is not a token id"), std::string::npos)
        << id << ": " << r.err;
  }
}

TEST(GenerateCli, FailedRequestsKeepTheirLinesAndExit1) {
  std::string out;
  const auto r =
      generate(R"({"input_ids":[1,2],"sampling_params":{"max_new_tokens":2,"temperature":0}})"
               "\n"
               R"({"input_ids":[1,999]})"
               "\n"
               R"({"input_ids":[3],"rid":"third","sampling_params":{"max_new_tokens":1,"n":2}})"
               "\n",
               &out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("gyre generate: 1 of 4 requests failed (their output lines carry "
                       "\"error\"); first: line2: input_ids[1] = 999 is out of range"),
            std::string::npos)
      << r.err;
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 4u) << out;  // every line is written, failed or not
  EXPECT_EQ(lines[0]["output_ids"].size(), 2u);
  EXPECT_TRUE(lines[1].contains("error"));
  EXPECT_EQ(lines[1]["meta_info"]["id"], "line2");
  EXPECT_EQ(lines[2]["output_ids"].size(), 1u);
  EXPECT_EQ(lines[3]["output_ids"].size(), 1u);
}

TEST(GenerateCli, UnknownSamplingKeysListTheKnownOnes) {
  auto r = generate(R"({"input_ids":[1],"sampling_params":{"max_tokens":4}})"
                    "\n");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("in.jsonl:1: unknown sampling_params key \"max_tokens\""), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("known keys: max_new_tokens, min_new_tokens, temperature"),
            std::string::npos)
      << r.err;
  // SGLang keys that gyre does not implement are refused as such, not called unknown.
  r = generate(R"({"input_ids":[1],"sampling_params":{"regex":"a+"}})"
               "\n");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("\"regex\" is not supported"), std::string::npos) << r.err;
}
