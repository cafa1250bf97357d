// Math rewards: every math / math_dapo / deepscaler acceptance case of reference/slime.md §3.3
// (inputs are raw strings; `\` is a literal backslash), plus the symbolic (GiNaC) comparisons.
#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/latex_math.h"
#include "gyre/rl/rewards/math_dapo.h"
#include "gyre/rl/rewards/math_utils.h"
#include "gyre/rl/rewards/reward.h"

using namespace gyre;
using namespace gyre::rl::rewards;

namespace {
int deepscaler(const std::string& resp, const nlohmann::json& label) {
  RewardInput in{"", resp, label, nullptr};
  uint64_t rng = 0;
  return builtin_reward("deepscaler", in, 0, &rng).get<int>();
}
}  // namespace

// ---- deepscaler table ------------------------------------------------------------------------
TEST(RewardsDeepscaler, AcceptanceTable) {
  struct Case {
    const char* name;
    const char* response;
    nlohmann::json label;
    int want;
  } cases[] = {
      {"after_last_think", R"(Let me reconsider. \boxed{99}</think>Final: \boxed{42})", "42", 1},
      {"after_response_marker", R"(Scratch work \boxed{wrong}###Response\boxed{42})", "42", 1},
      {"no_marker", R"(\boxed{42})", "42", 0},
      {"no_box", "plain</think>no box here", "42", 0},
      {"empty_label", R"(</think>\boxed{42})", "", 0},
      {"int_label", R"(</think>\boxed{42})", 42, 1},
      {"boxed_label", R"(</think>\boxed{42})", R"(\boxed{42})", 1},
      {"wrong", R"(</think>\boxed{43})", "42", 0},
      {"frac_vs_decimal", R"(</think>\boxed{\frac{1}{2}})", "0.5", 1},
  };
  for (const auto& c : cases) EXPECT_EQ(deepscaler(c.response, c.label), c.want) << c.name;
}

// ---- math_utils table ----------------------------------------------------------------------
TEST(RewardsMath, LastBoxedOnlyString) {
  EXPECT_EQ(last_boxed_only_string(R"(first attempt \boxed{wrong}, final \boxed{42})"),
            R"(\boxed{42})");
  EXPECT_EQ(last_boxed_only_string(R"(answer: \boxed{\frac{1}{2}})"), R"(\boxed{\frac{1}{2}})");
  EXPECT_EQ(last_boxed_only_string(R"(answer: \fbox{7})"), R"(\fbox{7})");
  EXPECT_EQ(last_boxed_only_string("plain text, no box"), std::nullopt);
  EXPECT_EQ(last_boxed_only_string(R"(start \boxed{never closes)"), std::nullopt);
}

TEST(RewardsMath, RemoveBoxedAndExtract) {
  EXPECT_EQ(remove_boxed(std::string(R"(\boxed{x+1})")), "x+1");
  EXPECT_EQ(remove_boxed(std::string(R"(\boxed{\frac{1}{2}})")), R"(\frac{1}{2})");
  EXPECT_EQ(remove_boxed(std::string("not boxed at all")), std::nullopt);
  EXPECT_EQ(remove_boxed(std::nullopt), std::nullopt);
  EXPECT_EQ(extract_boxed_answer(R"(Solution: \boxed{42})"), "42");
  EXPECT_EQ(extract_answer("just 42"), std::nullopt);
}

TEST(RewardsMath, StripStringTable) {
  struct Case {
    const char* in;
    const char* want;
  } cases[] = {
      {R"(\frac12)", R"(\frac{1}{2})"},
      {R"(\tfrac{1}{2})", R"(\frac{1}{2})"},
      {R"(\left(1\right))", "(1)"},
      {R"(45^{\circ})", "45"},
      {R"(45^\circ)", "45"},
      {".7", "0.7"},
      {"0.5", R"(\frac{1}{2})"},
      {".5", R"(\frac{1}{2})"},
      {"3/4", R"(\frac{3}{4})"},
      {"1 + 1", "1+1"},
  };
  for (const auto& c : cases) EXPECT_EQ(strip_string(c.in), c.want) << c.in;
}

TEST(RewardsMath, MathdNormalize) {
  EXPECT_EQ(mathd_normalize_answer(std::string(R"(\text{42})")), "42");
  EXPECT_EQ(mathd_normalize_answer(std::nullopt), std::nullopt);
  // A strip failure (unbalanced "\text{ " units) keeps the answer as is, like the Python except.
  EXPECT_EQ(mathd_normalize_answer(std::string(R"(5\text{ a}\text{ b})")),
            R"(5\text{ a}\text{ b})");
}

TEST(RewardsMath, GradeAnswerMathdTable) {
  EXPECT_TRUE(grade_answer_mathd(R"(\frac{1}{2})", "0.5"));
  EXPECT_TRUE(grade_answer_mathd(R"(\frac12)", R"(\frac{1}{2})"));
  EXPECT_TRUE(grade_answer_mathd(R"(45^\circ)", "45"));
  EXPECT_TRUE(grade_answer_mathd("3/4", R"(\frac{3}{4})"));
  EXPECT_FALSE(grade_answer_mathd("42", "43"));
}

TEST(RewardsMath, GradeAnswerSympy) {
  EXPECT_TRUE(grade_answer_sympy("x+1", "1+x"));                         // needs symbolic simplify
  EXPECT_FALSE(grade_answer_sympy(R"(\frac{2}{4})", R"(\frac{1}{2})"));  // unreduced fraction
  // More symbolic cases (GiNaC): expanded products, sqrt, pi, mixed numbers, tuples.
  EXPECT_TRUE(grade_answer_sympy("2x+2", "2(x+1)"));
  EXPECT_TRUE(grade_answer_sympy(R"(\sqrt{8})", R"(2\sqrt{2})"));
  EXPECT_TRUE(grade_answer_sympy(R"(\frac{\sqrt{2}}{2})", R"(\frac{1}{\sqrt{2}})"));
  EXPECT_TRUE(grade_answer_sympy(R"(2\pi)", R"(\pi\cdot 2)"));
  // "7\frac{3}{4}" normalises to the mixed number "7+3/4", not a plain fraction, so it is compared
  // symbolically with "31/4".
  EXPECT_TRUE(grade_answer_sympy(R"(7\frac{3}{4})", "31/4"));
  EXPECT_TRUE(grade_answer_sympy(R"(7\frac{3}{4})", "7.75"));
  EXPECT_TRUE(grade_answer_sympy("(1, 2)", R"(\left(1,2\right))"));
  EXPECT_FALSE(grade_answer_sympy("(1, 2)", "[1, 2]"));  // interval brackets must match
  EXPECT_TRUE(grade_answer_sympy("1,000", "1000"));
  EXPECT_TRUE(grade_answer_sympy(R"(50\%)", "50"));
  EXPECT_FALSE(grade_answer_sympy("x^2", "x"));
  EXPECT_FALSE(grade_answer_sympy("3.5", "3"));  // integer ground truth needs an integer
  // More than two unknown letters: slime refuses to evaluate, so only a literal match counts.
  EXPECT_FALSE(grade_answer_sympy("x+y+z", "z+y+x"));
}

TEST(RewardsMath, GradeAnswerVerl) {
  EXPECT_TRUE(grade_answer_verl(R"(answer: \boxed{42})", R"(\boxed{42})"));
  EXPECT_FALSE(grade_answer_verl("just 42", "42"));
  EXPECT_FALSE(grade_answer_verl(R"(\boxed{42})", ""));
}

TEST(RewardsMath, ExpressionIsZero) {
  EXPECT_TRUE(expression_is_zero("(x+1)-(1+x)"));
  EXPECT_TRUE(expression_is_zero("(sqrt(2)*sqrt(2))-(2)"));
  EXPECT_TRUE(expression_is_zero("(2x(x+1))-(2x^2+2x)"));
  EXPECT_TRUE(expression_is_zero("(3!)-(6)"));
  EXPECT_FALSE(expression_is_zero("(sqrt(x^2))-(x)"));  // false for negative x
  EXPECT_FALSE(expression_is_zero("(1/3)-(0.333)"));
  EXPECT_FALSE(expression_is_zero("(1)-(1/0)"));
  EXPECT_FALSE(expression_is_zero("((("));
  EXPECT_FALSE(expression_is_zero("(2^99999999)-(1)"));  // refused, not computed
  EXPECT_EQ(latex_to_text(R"(\frac{x+1}{2})"), "(x+1)/2");
  EXPECT_EQ(latex_to_text(R"(\frac{1}{2})"), "1/2");
  EXPECT_EQ(latex_to_text(R"(\sqrt{3}\cdot\pi)"), "sqrt(3)*pi");
}

TEST(RewardsMath, MathRewardType) {
  uint64_t rng = 0;
  auto r = [&](const std::string& type, const std::string& resp, const nlohmann::json& label) {
    return builtin_reward(type, RewardInput{"", resp, label, nullptr}, 3, &rng);
  };
  EXPECT_EQ(r("math", R"(so \boxed{\dfrac{1}{2}})", "0.5"), 1);
  EXPECT_EQ(r("math", R"(\boxed{3})", 0), 0);  // falsy label
  EXPECT_EQ(r("math", R"(\boxed{42.0})", 42), 1);
  EXPECT_EQ(r("boxed_f1", R"(blah \boxed{paris})", "Paris"), 1.0);
  try {
    r("math", R"(\boxed{1})", nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r("nonsense", "x", "1"), Error);
  EXPECT_EQ(python_str(42.0), "42.0");
  EXPECT_EQ(python_str(42), "42");
  EXPECT_EQ(python_str(0.5), "0.5");
}

// ---- math_dapo_utils table -----------------------------------------------------------------
TEST(RewardsDapo, BoxedHelpers) {
  EXPECT_EQ(dapo::last_boxed_only_string(R"(\boxed{first}, then \boxed{42})"), R"(\boxed{42})");
  EXPECT_EQ(dapo::last_boxed_only_string(R"(\boxed{\frac{1}{2}})"), R"(\boxed{\frac{1}{2}})");
  EXPECT_EQ(dapo::last_boxed_only_string("no box"), std::nullopt);
  EXPECT_EQ(dapo::last_boxed_only_string(R"(\boxed{never closes)"), std::nullopt);
  EXPECT_EQ(dapo::last_boxed_only_string(R"(\fbox{7})"), std::nullopt);  // no \fbox fallback
  EXPECT_EQ(dapo::remove_boxed(R"(\boxed{42})"), "42");
  try {
    dapo::remove_boxed("not boxed");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("box error"), std::string::npos);
  }
}

TEST(RewardsDapo, NormalizeFinalAnswerTable) {
  struct Case {
    const char* in;
    const char* want;
  } cases[] = {
      {"x = 42", "42"},
      {"an answer", "answer"},
      {"42 square", "42"},
      {"100 dollars", "100"},
      {R"(\text{hello})", "hello"},
      {R"(\boxed{42})", "42"},
      {"1,234,567", "1234567"},
      {"a b c", "bc"},
      {"42<|endoftext|>", "42"},
      {"42<|im_end|>", "42"},
  };
  for (const auto& c : cases) EXPECT_EQ(dapo::normalize_final_answer(c.in), c.want) << c.in;
}

TEST(RewardsDapo, StrictBoxAndMinerva) {
  auto s = dapo::is_correct_strict_box(R"(long preamble … \boxed{42})", "42");
  EXPECT_EQ(s.score, 1);
  EXPECT_EQ(s.pred, "42");
  s = dapo::is_correct_strict_box(R"(\boxed{43})", "42");
  EXPECT_EQ(s.score, -1);
  EXPECT_EQ(s.pred, "43");
  s = dapo::is_correct_strict_box("plain 42", "42");
  EXPECT_EQ(s.score, -1);
  EXPECT_EQ(s.pred, std::nullopt);
  auto m = dapo::is_correct_minerva("Long solution. Answer: 42", "42");
  EXPECT_TRUE(m.correct);
  EXPECT_EQ(m.pred, "42");
  EXPECT_TRUE(dapo::is_correct_minerva("Answer: 41 was a wrong guess.\nAnswer: 42", "42").correct);
  EXPECT_FALSE(dapo::is_correct_minerva("just a number 42", "42").correct);  // [INVALID]
  auto v = dapo::verify(R"(\boxed{42})", "42", true);
  EXPECT_TRUE(v.correct);
  EXPECT_EQ(v.pred, "42");
  EXPECT_TRUE(dapo::verify("Answer: 42", "42", false).correct);
}

TEST(RewardsDapo, ComputeScore) {
  auto s = dapo::compute_score(R"(\boxed{42})", "42", true);
  EXPECT_EQ(s.score, 1.0);
  EXPECT_TRUE(s.acc);
  EXPECT_EQ(s.pred, "42");
  s = dapo::compute_score(R"(\boxed{43})", "42", true);
  EXPECT_EQ(s.score, -1.0);
  EXPECT_FALSE(s.acc);
  std::string long_resp = R"(\boxed{42})";
  for (int i = 0; i < 60; ++i) long_resp += " filler";
  EXPECT_EQ(dapo::compute_score(long_resp, "42", true).score, -1.0);  // only the last 300 chars
  // Through the rm_type dispatcher: a dict reward, --reward-key score picks the scalar.
  uint64_t rng = 0;
  auto j = builtin_reward("dapo", RewardInput{"", "Answer: 42", "42", nullptr}, 0, &rng);
  EXPECT_EQ(j["score"], 1.0);
  EXPECT_EQ(reward_value(j, std::string("score"), 0), 1.0);
  EXPECT_THROW(reward_value(j, std::nullopt, 0), Error);
}

TEST(RewardsDapo, ParseNonNumericLabelIsError) {
  uint64_t rng = 0;
  EXPECT_THROW(builtin_reward("dapo", RewardInput{"", "Answer: x", "x+1", nullptr}, 5, &rng),
               Error);
}
