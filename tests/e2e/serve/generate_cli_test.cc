// `gyre generate` on the qwen3_tiny fixture: integer sampling parameters outside their type's
// range are an error naming the line, the key and the range (exit 2, nothing generated) — they
// used to wrap silently (max_new_tokens 4294967299 ran as 3, top_k 4294967297 as 1, a negative
// seed as a huge one) — while in-range requests still generate.
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

using namespace gyre;

namespace {

test::CommandResult generate(const std::string& jsonl) {
  const std::string dir = test::temp_dir("generate_cli");
  test::write_file(dir + "/in.jsonl", jsonl);
  return test::run_command("timeout 60 " + test::gyre_bin() + " generate --model " +
                           test::source_path("tests/fixtures/models/qwen3_tiny") + " --input " +
                           dir + "/in.jsonl --output " + dir + "/out.jsonl");
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
}
