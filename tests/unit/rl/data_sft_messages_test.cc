// Per-turn SFT loss masks for chat message lists (rl/data/sft_messages.h): only assistant turns are
// trained, the generation prompt before each is not, and templates that rewrite earlier turns are
// rejected with a clear error. Uses the Qwen3 fixture tokenizer (tests/fixtures/tokenizers/qwen3).
#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/rl/data/sft_messages.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl;
using json = nlohmann::json;

namespace {

// ChatML as Qwen2.5 renders it: every turn is "<|im_start|>role\ncontent<|im_end|>\n".
const char* kChatMl =
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' "
    "}}{%- endif %}";

std::shared_ptr<const tokenizer::Tokenizer> qwen3_tokenizer() {
  return tokenizer::Tokenizer::from_dir(gyre::test::source_path("tests/fixtures/tokenizers/qwen3"));
}

json conversation() {
  return json::array({{{"role", "system"}, {"content", "You add numbers."}},
                      {{"role", "user"}, {"content", "2+2?"}},
                      {{"role", "assistant"}, {"content", "4"}},
                      {{"role", "user"}, {"content", "And 3+5?"}},
                      {{"role", "assistant"}, {"content", "It is 8."}}});
}

}  // namespace

using test::error_of;

TEST(SftMessages, LossOnAssistantTurnsOnly) {
  auto tok = qwen3_tokenizer();
  auto tmpl = tokenizer::ChatTemplate::from_string(kChatMl);
  Sample s;
  s.index = 3;
  s.prompt = conversation();
  build_sft_messages_sample(s, s.prompt, nullptr, nullptr, *tok, tmpl, "row 3");

  // The prompt is everything up to the first assistant content, generation prompt included.
  std::vector<int32_t> prompt(s.tokens.begin(), s.tokens.begin() + s.prompt_length());
  EXPECT_EQ(tok->decode(prompt),
            "<|im_start|>system\nYou add numbers.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Trained tokens decode to exactly the two assistant turns with their end markers.
  ASSERT_EQ(s.loss_mask.size(), size_t(s.response_length));
  std::vector<int32_t> trained, untrained;
  for (int64_t t = 0; t < s.response_length; ++t)
    (s.loss_mask[size_t(t)] ? trained : untrained)
        .push_back(s.tokens[size_t(s.prompt_length() + t)]);
  EXPECT_EQ(tok->decode(trained), "4<|im_end|>\nIt is 8.<|im_end|>\n");
  EXPECT_EQ(tok->decode(untrained),
            "<|im_start|>user\nAnd 3+5?<|im_end|>\n<|im_start|>assistant\n");
  // The whole trajectory is the template's rendering of the conversation.
  EXPECT_EQ(tok->decode(s.tokens), tmpl.render(conversation(), nullptr, false, nullptr));
  // Segments: trained assistant / untrained user / untrained header / trained assistant.
  ASSERT_EQ(s.segments.size(), 4u);
  EXPECT_TRUE(s.segments[0].trainable);
  EXPECT_EQ(s.segments[0].role, "assistant");
  EXPECT_FALSE(s.segments[1].trainable);
  EXPECT_EQ(s.segments[1].role, "user");
  EXPECT_FALSE(s.segments[2].trainable);
  EXPECT_TRUE(s.segments[3].trainable);
  EXPECT_EQ(s.segments.back().end, s.response_length);
  EXPECT_TRUE(s.rollout_log_probs.empty());
  EXPECT_NO_THROW(s.validate());
}

TEST(SftMessages, SingleTurnWithTheQwen3TemplateTrainsTheAnswer) {
  auto tok = qwen3_tokenizer();
  auto tmpl =
      tokenizer::ChatTemplate::from_dir(gyre::test::source_path("tests/fixtures/tokenizers/qwen3"));
  json msgs = json::array(
      {{{"role", "user"}, {"content", "2+2?"}}, {{"role", "assistant"}, {"content", "4"}}});
  Sample s;
  build_sft_messages_sample(s, msgs, nullptr, nullptr, *tok, tmpl, "row 0");
  std::vector<int32_t> trained;
  for (int64_t t = 0; t < s.response_length; ++t)
    if (s.loss_mask[size_t(t)]) trained.push_back(s.tokens[size_t(s.prompt_length() + t)]);
  // Qwen3 renders the final assistant turn with an (empty) reasoning block: it is part of what the
  // model must produce after "<|im_start|>assistant\n", so it is trained.
  EXPECT_EQ(tok->decode(trained), "<think>\n\n</think>\n\n4<|im_end|>\n");
}

TEST(SftMessages, BadConversationsAreRejectedWithTheRowAndTurn) {
  auto tok = qwen3_tokenizer();
  auto chatml = tokenizer::ChatTemplate::from_string(kChatMl);
  Sample s;
  // No assistant turn.
  json no_answer = json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_NE(error_of([&] {
              build_sft_messages_sample(s, no_answer, nullptr, nullptr, *tok, chatml, "row 7");
            }).find("row 7: no assistant turn"),
            std::string::npos);
  // A message without a role.
  json no_role = json::array({{{"content", "hi"}}});
  EXPECT_NE(error_of([&] {
              build_sft_messages_sample(s, no_role, nullptr, nullptr, *tok, chatml, "row 8");
            }).find("message 0 has no string \"role\""),
            std::string::npos);
  // Not a list.
  EXPECT_NE(error_of([&] {
              build_sft_messages_sample(s, json("hi"), nullptr, nullptr, *tok, chatml, "row 9");
            }).find("non-empty list"),
            std::string::npos);
  // Qwen3's template renders an earlier assistant turn differently once a later user turn follows
  // (the reasoning block of past turns is dropped), so per-turn masks are ambiguous: an error
  // naming the turn, never a silently wrong mask.
  auto qwen3 =
      tokenizer::ChatTemplate::from_dir(gyre::test::source_path("tests/fixtures/tokenizers/qwen3"));
  const std::string err = error_of([&] {
    build_sft_messages_sample(s, conversation(), nullptr, nullptr, *tok, qwen3, "row 10");
  });
  EXPECT_NE(err.find("row 10: the chat template's rendering of turn 3"), std::string::npos) << err;
}
