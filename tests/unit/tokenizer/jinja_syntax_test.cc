// Jinja lexing/parsing: whitespace control as transformers configures Jinja (trim_blocks,
// lstrip_blocks), literals, operator precedence, and syntax errors with line:column. Expected
// strings are what Jinja 3 renders for the same source.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/template.h"

namespace gyre::tokenizer::jinja {
namespace {

std::string R(std::string_view src, const char* ctx = "{}") {
  return Template::parse(src).render(nlohmann::ordered_json::parse(ctx));
}
std::string E(std::string_view src, const char* ctx = "{}") {
  try {
    R(src, ctx);
  } catch (const gyre::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(JinjaWhitespace, TrimBlocksEatsOneNewlineAfterBlockTags) {
  EXPECT_EQ(R("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");
  EXPECT_EQ(R("{% if true %}\n\nx{% endif %}"), "\nx");
  EXPECT_EQ(R("{% if true +%}\nx{% endif %}"), "\nx");  // + disables trim_blocks
  EXPECT_EQ(R("{{ 'a' }}\nb"), "a\nb");                 // not after variables
}

TEST(JinjaWhitespace, LstripBlocksRemovesIndentBeforeBlockTags) {
  EXPECT_EQ(R("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(R("a\n    {% if true %}x\n    {% endif %}b"), "a\nx\nb");
  EXPECT_EQ(R("  {%+ if true %}x{% endif %}"), "  x");  // + disables lstrip
  EXPECT_EQ(R("  {{ 'x' }}"), "  x");                   // variables are not lstripped
  EXPECT_EQ(R("a {% if true %}x{% endif %}"), "a x");   // text before the tag on the line
  EXPECT_EQ(R("a\n  {# note #}\nb"), "a\nb");           // comments too
}

TEST(JinjaWhitespace, MinusStripsAllWhitespace) {
  EXPECT_EQ(R("a  \n\n {%- if true %}b{% endif %}"), "ab");
  EXPECT_EQ(R("{% if true -%}  \n\n b{% endif %}"), "b");
  EXPECT_EQ(R("{{ 'a' }}  \n  {{- 'b' }}"), "ab");
  EXPECT_EQ(R("{{ 'a' -}}  \n  b"), "ab");
  EXPECT_EQ(R("a {#- c -#} b"), "ab");
}

TEST(JinjaWhitespace, NewlinesNormalisedAndTrailingNewlineDropped) {
  EXPECT_EQ(R("x\n"), "x");
  EXPECT_EQ(R("x\n\n"), "x\n");
  EXPECT_EQ(R("a\r\nb\rc"), "a\nb\nc");
}

TEST(JinjaWhitespace, RawBlockIsVerbatim) {
  EXPECT_EQ(R("{% raw %}{{ x }}{% if %}{% endraw %}!"), "{{ x }}{% if %}!");
  EXPECT_EQ(R("{%- raw -%}  a  {%- endraw %}"), "a");
}

TEST(JinjaLiterals, StringsNumbersAndContainers) {
  EXPECT_EQ(R(R"({{ 'a\nb' }})"), "a\nb");
  EXPECT_EQ(R(R"({{ "it's" }}|{{ 'say \"hi\"' }})"), "it's|say \"hi\"");
  EXPECT_EQ(R(R"({{ '\u00e9\x41\t' }})"),
            "\xc3\xa9"
            "A\t");
  EXPECT_EQ(R(R"({{ 'a\qb' }})"), "a\\qb");  // unknown escape kept, as Python does
  EXPECT_EQ(R("{{ 'a' 'b' }}"), "ab");
  EXPECT_EQ(R("{{ 42 }} {{ 1_000 }} {{ 2.5 }} {{ 1e3 }} {{ 1.0 }}"), "42 1000 2.5 1000.0 1.0");
  EXPECT_EQ(R("{{ true }} {{ False }} {{ none }} {{ None }}"), "True False None None");
  EXPECT_EQ(R("{{ [1, 'a', none, true] }}"), "[1, 'a', None, True]");
  EXPECT_EQ(R("{{ {'k': [1.5], \"q\": {}} }}"), "{'k': [1.5], 'q': {}}");
  EXPECT_EQ(R("{{ (1, 2) }} {{ () }} {{ (1,) }}"), "(1, 2) () (1,)");
  EXPECT_EQ(R("{{ [\"it's\"] }}"), "[\"it's\"]");
}

TEST(JinjaOperators, ArithmeticFollowsPython) {
  EXPECT_EQ(R("{{ 1 + 2 * 3 }}"), "7");
  EXPECT_EQ(R("{{ 7 / 2 }} {{ 4 / 2 }}"), "3.5 2.0");
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }}"), "3 -4 2 -2");
  EXPECT_EQ(R("{{ 2 ** 10 }} {{ 2 ** -1 }}"), "1024 0.5");
  EXPECT_EQ(R("{{ 0.1 + 0.2 }}"), "0.30000000000000004");
  EXPECT_EQ(R("{{ 1e20 * 10 }} {{ 0.00001 }}"), "1e+21 1e-05");
  EXPECT_EQ(R("{{ 'ab' ~ 1 ~ none }}"), "ab1None");
  EXPECT_EQ(R("{{ 'ab' * 3 }} {{ [0] * 2 }}"), "ababab [0, 0]");
  EXPECT_EQ(R("{{ [1, 2] + [3] }} {{ 'a' + 'b' }}"), "[1, 2, 3] ab");
  EXPECT_EQ(R("{{ -2 ** 2 }}"), "4");   // Jinja: unary minus binds tighter than **
  EXPECT_EQ(R("{{ -3 | abs }}"), "3");  // the filter applies to the unary expression
  EXPECT_EQ(R("{{ 10 - -2 }} {{ true + 1 }}"), "12 2");
}

TEST(JinjaOperators, ComparisonsAndLogic) {
  EXPECT_EQ(R("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}"), "True False");
  EXPECT_EQ(R("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1, [2]] == [1, [2]] }}"), "True True True");
  EXPECT_EQ(R("{{ 'b' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }}"), "True True True");
  EXPECT_EQ(R("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not 0 }} {{ none or none }}"), "x y True None");
  EXPECT_EQ(R("{{ not 1 == 2 }}"), "True");
  EXPECT_EQ(R("{{ 'a' if false else 'b' }}|{{ 'a' if false }}|{{ 'a' if 1 }}"), "b||a");
  EXPECT_EQ(R("{{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }}"), "True True");
}

TEST(JinjaParse, SyntaxErrorReportsLineAndColumn) {
  std::string e = E("line one\n{% if %}x{% endif %}");
  EXPECT_NE(e.find("template:2:7:"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an expression"), std::string::npos) << e;
  e = E("{{ 1 + }}");
  EXPECT_NE(e.find("template:1:8:"), std::string::npos) << e;
}

TEST(JinjaParse, UnclosedConstructsAreNamed) {
  EXPECT_NE(E("{% for x in y %}a").find("endfor"), std::string::npos);
  EXPECT_NE(E("{% if x %}a{% else %}b").find("endif"), std::string::npos);
  EXPECT_NE(E("a {{ x").find("never closed"), std::string::npos);
  EXPECT_NE(E("{# c").find("never closed"), std::string::npos);
  EXPECT_NE(E("{{ 'abc }}").find("never closed"), std::string::npos);
  EXPECT_NE(E("{% raw %}x").find("endraw"), std::string::npos);
  EXPECT_NE(E("{{ (1 }}").find("expected ')'"), std::string::npos);
  EXPECT_NE(E("{{ 1 ] }}").find("unexpected ']'"), std::string::npos);
}

TEST(JinjaParse, UnknownTagsFiltersAndTestsAreNamed) {
  EXPECT_NE(E("{% frobnicate %}").find("unknown tag 'frobnicate'"), std::string::npos);
  EXPECT_NE(E("{% endif %}").find("unknown tag 'endif'"), std::string::npos);
  EXPECT_NE(E("{% include 'x' %}").find("not supported"), std::string::npos);
  // Reported even in a branch that never runs, like Jinja's compiler.
  std::string e = E("\n{% if false %}{{ x | nosuchfilter }}{% endif %}");
  EXPECT_NE(e.find("unknown filter 'nosuchfilter'"), std::string::npos) << e;
  EXPECT_NE(e.find(":2:"), std::string::npos) << e;
  EXPECT_NE(E("{{ x is frob }}").find("unknown test 'frob'"), std::string::npos);
}

TEST(JinjaParse, HostileInputFailsCleanly) {
  std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(E("{{ " + deep + " }}").find("nesting deeper"), std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_NE(E(chain + " }}").find("nested deeper"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 500; ++i) ifs += "{% if true %}";
  EXPECT_NE(E(ifs).find("nesting deeper"), std::string::npos);
  EXPECT_NE(E("{{ @ }}").find("unexpected character"), std::string::npos);
  EXPECT_NE(E("{{ 'a' * 10000000000 }}").find("limit"), std::string::npos);
  EXPECT_NE(E("{% for i in range(1000000000) %}{% endfor %}").find("range()"), std::string::npos);
  EXPECT_NE(E("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("recursion"),
            std::string::npos);
  EXPECT_NE(E("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(E("{{ 1 // 0 }}").find("by zero"), std::string::npos);
  EXPECT_NE(E("{{ x[::0] }}", R"({"x": [1]})").find("step cannot be zero"), std::string::npos);
}

}  // namespace
}  // namespace gyre::tokenizer::jinja
