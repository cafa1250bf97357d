// F1 and GPQA rewards: every f1 / gpqa acceptance case of reference/slime.md §3.3.
#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/reward.h"
#include "gyre/rl/rewards/text_rewards.h"

using namespace gyre;
using namespace gyre::rl::rewards;
using nlohmann::json;

TEST(RewardsF1, NormalizeAnswerTable) {
  EXPECT_EQ(f1_normalize_answer("The Quick Brown Fox."), "quick brown fox");
  EXPECT_EQ(f1_normalize_answer("An apple, a day"), "apple day");
  EXPECT_EQ(f1_normalize_answer("HELLO   WORLD"), "hello world");
  EXPECT_EQ(f1_normalize_answer("a.b,c!"), "abc");
  EXPECT_EQ(f1_normalize_answer(""), "");
  EXPECT_EQ(f1_normalize_answer("the"), "");
}

TEST(RewardsF1, ScoreTable) {
  auto expect = [](const std::optional<std::string>& p, const std::string& g, double f1, double pr,
                   double rc) {
    F1 s = f1_score(p, g);
    EXPECT_NEAR(s.f1, f1, 1e-12) << (p ? *p : "None") << " / " << g;
    EXPECT_NEAR(s.precision, pr, 1e-12);
    EXPECT_NEAR(s.recall, rc, 1e-12);
  };
  expect("Paris is the capital", "Paris is the capital", 1, 1, 1);
  // pred {brown, fox}, truth {quick, brown, fox}: p = 1, r = 2/3, f1 = 2*(2/3)/(5/3) = 0.8
  expect("the brown fox", "a quick brown fox", 0.8, 1.0, 2.0 / 3);
  expect("apple banana", "carrot date", 0, 0, 0);
  expect(std::nullopt, "anything", 0, 0, 0);
  for (const char* special : {"yes", "no", "noanswer"}) {
    expect(special, "some other phrase", 0, 0, 0);
    expect("some other phrase", special, 0, 0, 0);
  }
  expect("yes", "yes", 1, 1, 1);
}

TEST(RewardsGpqa, ExtractLetterTable) {
  const std::vector<std::string> aj = {"A", "B", "C", "D", "E", "F", "G", "H", "I", "J"};
  struct Case {
    const char* text;
    std::optional<std::string> want;
  } cases[] = {
      {"The answer is B.", "B"},
      {"Answer: C", "C"},
      {"My choice is D", "D"},
      {"A is correct here", "A"},
      {"E is the correct option", "E"},
      {"Final answer: B", "B"},
      {"the final option is C", "C"},
      {"we ruled out A, then B, settled on C", "C"},
      {"Let me think… Answer: A is wrong.</think>The answer is B.", "B"},
      {"no idea, sorry", std::nullopt},
      {"", std::nullopt},
  };
  for (const auto& c : cases)
    EXPECT_EQ(gpqa_extract_letter(std::string(c.text), aj), c.want) << c.text;
  EXPECT_EQ(gpqa_extract_letter(std::nullopt, aj), std::nullopt);
  EXPECT_EQ(gpqa_extract_letter(std::string("Answer: C, but actually A was right, no wait B."),
                                {"A", "B"}),
            "B");
}

TEST(RewardsGpqa, RewardTable) {
  struct Case {
    const char* name;
    std::optional<std::string> response;
    json label;
    json metadata;
    double want;
  } cases[] = {
      {"letter_match", "The answer is C.", "C", nullptr, 1.0},
      {"letter_mismatch", "The answer is C.", "D", nullptr, 0.0},
      {"int_label_index", "Answer: C", 2, {{"choices", {"alpha", "beta", "gamma", "delta"}}}, 1.0},
      {"dict_choices",
       "Answer: B",
       1,
       {{"choices", {{"a", "first"}, {"b", "second"}, {"c", "third"}}}},
       1.0},
      {"label_text_to_choice",
       "I think the answer is B.",
       "capital of france",
       {{"choices", {"London", "Capital of France", "Berlin"}}},
       1.0},
      {"text_containment",
       "Definitely paris.",
       "Paris",
       {{"choices", {"London", "Paris", "Berlin"}}},
       1.0},
      {"metadata_correct_letter", "Answer: A", "anything", {{"correct_letter", "a"}}, 1.0},
      {"none_response", std::nullopt, "A", nullptr, 0.0},
      {"random_text", "random text", "some answer", nullptr, 0.0},
  };
  for (const auto& c : cases)
    EXPECT_EQ(gpqa_reward(c.response, c.label, c.metadata), c.want) << c.name;
}

TEST(RewardsGpqa, ParseMissingLabelNamesSample) {
  uint64_t rng = 0;
  try {
    builtin_reward("gpqa", RewardInput{"", "Answer: A", nullptr, nullptr, 17}, 17, &rng);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 17"), std::string::npos) << e.what();
  }
  // metadata.correct_letter is enough without a label
  EXPECT_EQ(builtin_reward("gpqa", RewardInput{"", "Answer: A", nullptr, {{"correct_letter", "A"}}},
                           0, &rng),
            1.0);
}

TEST(RewardsFactory, MetadataRmTypeOverridesAndRandomIsBinary) {
  RewardConfig c;
  c.rm_type = "random";
  auto f = make_reward_function(c);
  std::vector<RewardInput> in(64, RewardInput{"", "x", nullptr, nullptr});
  in[0] = RewardInput{"", R"(\boxed{2})", "2", {{"rm_type", "math"}}};
  auto r = f->score(in);
  EXPECT_EQ(r[0].value, 1);
  int ones = 0;
  for (size_t i = 1; i < r.size(); ++i) {
    ASSERT_TRUE(r[i].value == 0 || r[i].value == 1);
    ones += r[i].value.get<int>();
  }
  EXPECT_GT(ones, 10);
  EXPECT_LT(ones, 53);
  c.rm_type = "";
  EXPECT_THROW(make_reward_function(c), Error);
  c.rm_type = "remote_rm";
  EXPECT_THROW(make_reward_function(c), Error);  // needs --rm-url
  EXPECT_THROW(reward_value(json(NAN), std::nullopt, 4), Error);
  EXPECT_EQ(reward_value(json(true), std::nullopt, 0), 1.0);
}

// Without --rm-type / --custom-rm-path each prompt's metadata.rm_type picks its reward; gyre train
// checks the loaded prompts for one (a prompt without would fail its samples in every rollout).
TEST(RewardsFactory, ParseMetadataRmTypeNamesThePrompt) {
  check_metadata_rm_type(json{{"rm_type", "math"}}, 0, "p.jsonl");
  check_metadata_rm_type(json{{"rm_type", " boxed_f1 "}}, 1, "p.jsonl");
  auto error_of = [](const json& m) -> std::string {
    try {
      check_metadata_rm_type(m, 1, "p.jsonl");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  for (const json& bad : {json::object(), json{{"rm_type", ""}}, json{{"rm_type", 3}},
                          json(nullptr), json{{"other", "math"}}}) {
    const std::string e = error_of(bad);
    EXPECT_NE(e.find("no reward for prompt 1 of p.jsonl"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("--rm-type"), std::string::npos) << e;
  }
  const std::string e = error_of(json{{"rm_type", "nonsense"}});
  EXPECT_NE(e.find("prompt 1 of p.jsonl: metadata.rm_type"), std::string::npos) << e;
  EXPECT_NE(e.find("nonsense"), std::string::npos) << e;
}
