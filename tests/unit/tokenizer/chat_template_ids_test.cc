// Rendered Qwen3 chat text encodes (add_special_tokens=false) to exactly the ids transformers
// produced for the fixture cases: template rendering and tokenization agree end to end.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"
#include "test_util.h"

namespace gyre::tokenizer {
namespace {

TEST(ChatTemplateGolden, Qwen3FixtureCasesEncodeToIds) {
  const std::string dir = test::source_path("tests/fixtures/tokenizers/qwen3");
  ChatTemplate ct = ChatTemplate::from_dir(dir);
  auto tok = Tokenizer::from_dir(dir);
  auto cases = nlohmann::ordered_json::parse(
      test::read_file(test::source_path("tests/fixtures/tokenizer_cases.json")))["chat_qwen3"];
  ASSERT_EQ(cases.size(), 7u);
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& c = cases[k];
    std::string text =
        ct.render(c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int32_t>>()) << "case " << k;
  }
}

}  // namespace
}  // namespace gyre::tokenizer
