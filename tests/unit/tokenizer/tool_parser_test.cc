// Hermes/Qwen tool-call parsing (single, multiple, malformed, truncated, streaming) and the
// <think> reasoning split.
#include "gyre/tokenizer/tool_parser.h"

#include <gtest/gtest.h>

#include "gyre/tokenizer/reasoning_parser.h"

namespace gyre::tokenizer {
namespace {

TEST(ToolParser, SingleCall) {
  auto r = parse_hermes_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Zürich\", \"days\": 2}}\n</tool_call>");
  EXPECT_EQ(r.content, "Let me check.");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"city\": \"Zürich\", \"days\": 2}");  // json.dumps form
  EXPECT_EQ(r.tool_calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(r.tool_calls[0].id.size(), 5u + 24u);
  EXPECT_TRUE(r.errors.empty());
  auto m = r.to_openai();
  EXPECT_EQ(m["content"], "Let me check.");
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], r.tool_calls[0].arguments);
  EXPECT_EQ(m["tool_calls"][0]["id"], r.tool_calls[0].id);
}

TEST(ToolParser, MultipleCallsAndDeterministicIds) {
  std::string text =
      "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"parameters\": {\"x\": [1, 2.5, null]}}\n</tool_call>\n"
      "<tool_call>{\"name\": \"c\", \"arguments\": \"{\\\"raw\\\": 1}\"}</tool_call>";
  auto r = parse_hermes_tool_calls(text);
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 3u);
  EXPECT_EQ(r.tool_calls[0].arguments, "{}");
  EXPECT_EQ(r.tool_calls[1].name, "b");
  EXPECT_EQ(r.tool_calls[1].arguments, "{\"x\": [1, 2.5, null]}");
  EXPECT_EQ(r.tool_calls[2].arguments, "{\"raw\": 1}");  // a string is kept as written
  EXPECT_NE(r.tool_calls[0].id, r.tool_calls[1].id);
  EXPECT_EQ(parse_hermes_tool_calls(text).tool_calls[1].id, r.tool_calls[1].id);
  EXPECT_TRUE(r.to_openai()["content"].is_null());
}

TEST(ToolParserParse, MalformedBlocksStayInContentAndAreReported) {
  auto r = parse_hermes_tool_calls(
      "Hi\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"ok\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>[1, 2]</tool_call>");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "ok");
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_NE(r.errors[0].find("invalid JSON"), std::string::npos) << r.errors[0];
  EXPECT_NE(r.errors[1].find("\"name\""), std::string::npos) << r.errors[1];
  EXPECT_EQ(r.content,
            "Hi\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call>\n"
            "<tool_call>[1, 2]</tool_call>");
}

TEST(ToolParserParse, TruncatedAndPlainText) {
  auto done = parse_hermes_tool_calls("<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n");
  ASSERT_EQ(done.tool_calls.size(), 1u);  // complete JSON, closing tag cut off
  auto cut = parse_hermes_tool_calls("x <tool_call>\n{\"name\": \"a\", \"argu");
  EXPECT_TRUE(cut.tool_calls.empty());
  EXPECT_EQ(cut.content, "x\n<tool_call>\n{\"name\": \"a\", \"argu");
  EXPECT_NE(cut.errors.at(0).find("not closed"), std::string::npos);
  auto plain = parse_hermes_tool_calls("  just text  ");
  EXPECT_EQ(plain.content, "just text");
  EXPECT_TRUE(plain.tool_calls.empty() && plain.errors.empty());
}

TEST(ToolParser, StreamingMatchesOneShot) {
  std::string text =
      "Sure. <tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"<tool\"}}\n</tool_call>"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call> end";
  auto whole = parse_hermes_tool_calls(text);
  for (size_t chunk : {1u, 3u, 7u, 100u}) {
    HermesToolCallStream s;
    std::string content;
    std::vector<ToolCall> calls;
    for (size_t i = 0; i < text.size(); i += chunk) {
      auto d = s.push(std::string_view(text).substr(i, chunk));
      // Content never leaks a partial tag.
      EXPECT_EQ(d.content.find("<tool"), std::string::npos) << d.content;
      content += d.content;
      calls.insert(calls.end(), d.tool_calls.begin(), d.tool_calls.end());
    }
    auto d = s.finish();
    content += d.content;
    calls.insert(calls.end(), d.tool_calls.begin(), d.tool_calls.end());
    EXPECT_EQ(content, "Sure.  end") << chunk;
    ASSERT_EQ(calls.size(), whole.tool_calls.size()) << chunk;
    for (size_t k = 0; k < calls.size(); ++k) {
      EXPECT_EQ(calls[k].name, whole.tool_calls[k].name);
      EXPECT_EQ(calls[k].arguments, whole.tool_calls[k].arguments);
      EXPECT_EQ(calls[k].id, whole.tool_calls[k].id);
    }
  }
}

TEST(ReasoningParser, SplitsThinkBlocks) {
  auto r = split_reasoning("<think>\nLet me add.\n2+3=5\n</think>\n\nThe answer is 5.");
  EXPECT_EQ(r.reasoning_content, "Let me add.\n2+3=5");
  EXPECT_EQ(r.content, "The answer is 5.");
  EXPECT_TRUE(r.reasoning_finished);
  // The prompt ended with "<think>\n" (DeepSeek-R1 / forced thinking): no opening tag in output.
  auto f = split_reasoning("hmm\n</think>\n\nHi", true);
  EXPECT_EQ(f.reasoning_content, "hmm");
  EXPECT_EQ(f.content, "Hi");
  // Without the flag and without a start tag, everything is content.
  auto n = split_reasoning("hmm\n</think>\n\nHi");
  EXPECT_EQ(n.content, "hmm\n</think>\n\nHi");
  EXPECT_EQ(n.reasoning_content, "");
  // Generation stopped while thinking.
  auto u = split_reasoning("<think>\nstill going");
  EXPECT_EQ(u.reasoning_content, "still going");
  EXPECT_EQ(u.content, "");
  EXPECT_FALSE(u.reasoning_finished);
  // Qwen3 with thinking disabled renders an empty block.
  auto e = split_reasoning("<think>\n\n</think>\n\nHello");
  EXPECT_EQ(e.reasoning_content, "");
  EXPECT_EQ(e.content, "Hello");
}

}  // namespace
}  // namespace gyre::tokenizer
