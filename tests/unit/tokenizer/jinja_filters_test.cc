// Jinja filters, tests and Python methods, including transformers' tojson (json.dumps with
// ensure_ascii=False). Expected strings are what Jinja 3 / Python render.
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

TEST(JinjaFilters, TojsonMatchesPythonJsonDumps) {
  const char* ctx =
      R"({"x": {"b": 1, "a": [1, 2.5, "é\n\"q\"", null, true, 1e-7, 100000000000000000000.0]}})";
  EXPECT_EQ(R("{{ x | tojson }}", ctx),
            "{\"b\": 1, \"a\": [1, 2.5, \"é\\n\\\"q\\\"\", null, true, 1e-07, 1e+20]}");
  EXPECT_EQ(R("{{ x | tojson(sort_keys=true) }}", R"({"x": {"b": 1, "a": 2}})"),
            "{\"a\": 2, \"b\": 1}");
  EXPECT_EQ(R("{{ x | tojson(indent=2) }}", R"({"x": {"a": [1, 2], "b": {}, "c": []}})"),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": []\n}");
  EXPECT_EQ(R("{{ x | tojson(ensure_ascii=true) }}", R"({"x": "é😀\u0001"})"),
            "\"\\u00e9\\ud83d\\ude00\\u0001\"");
  EXPECT_EQ(R("{{ x | tojson(separators=(',', ':')) }}", R"({"x": {"a": [1, 2]}})"),
            "{\"a\":[1,2]}");
  EXPECT_EQ(R("{{ 'x' | tojson }} {{ none | tojson }} {{ 3 | tojson }}"), "\"x\" null 3");
  EXPECT_NE(E("{{ missing | tojson }}").find("undefined"), std::string::npos);
}

TEST(JinjaFilters, StringFilters) {
  EXPECT_EQ(R("[{{ '  a b \n' | trim }}] [{{ 'xxaxx' | trim('x') }}]"), "[a b] [a]");
  EXPECT_EQ(R("{{ 'Hello' | upper }} {{ 'Hello' | lower }} {{ 'hELLO wORLD' | capitalize }}"),
            "HELLO hello Hello world");
  EXPECT_EQ(R("{{ \"they're bill's friends\" | title }}"), "They'Re Bill'S Friends");
  EXPECT_EQ(R("{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }}"), "bbb bba");
  EXPECT_EQ(R("{{ 'héllo' | length }} {{ 'abc' | count }} {{ 'abc' | reverse }}"), "5 3 cba");
  EXPECT_EQ(R("[{{ 'ab' | center(6) }}] [{{ 'abc' | center(6) }}]"), "[  ab  ] [ abc  ]");
  EXPECT_EQ(R("{{ 'one two  three' | wordcount }}"), "3");
  EXPECT_EQ(R("{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}|{{ 'a\n\nb' | "
              "indent('>', blank=true) }}"),
            "a\n  b\n\n  c|  a\n  b|a\n>\n>b");
  EXPECT_EQ(R("{{ '<a href=\"x\">&' | e }} {{ '<b>' | safe | escape }}"),
            "&lt;a href=&#34;x&#34;&gt;&amp; <b>");
  EXPECT_EQ(R("{{ 42 | string ~ '!' }} {{ [1] | string }}"), "42! [1]");
}

TEST(JinjaFilters, NumberFilters) {
  EXPECT_EQ(
      R("{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }}"),
      "42 4 0 7 3");
  EXPECT_EQ(R("{{ '0x1A' | int(0, 16) }} {{ '1.5' | float }} {{ 'x' | float }} {{ 2 | float }}"),
            "26 1.5 0.0 2.0");
  EXPECT_EQ(
      R("{{ -2.5 | abs }} {{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.1 | round(0, 'ceil') }}"),
      "2.5 2.0 3.14 3.0");  // Python's round() ties to even
  EXPECT_EQ(R("{{ [1, 2, 3] | sum }} {{ [1.5, 2] | sum }} {{ xs | sum(attribute='n') }}",
              R"({"xs": [{"n": 2}, {"n": 5}]})"),
            "6 3.5 7");
}

TEST(JinjaFilters, SequenceFilters) {
  const char* ctx = R"({"xs": [{"n": "b", "v": 2, "ok": true}, {"n": "a", "v": 1, "ok": false},
                                {"n": "c", "v": 3}], "d": {"b": 1, "A": 3, "a": 2}})";
  EXPECT_EQ(R("{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ [] | first is defined }}"),
            "3 2 False");
  EXPECT_EQ(R("{{ [1, 2, 3] | join('-') }} {{ xs | join(',', attribute='n') }}", ctx),
            "1-2-3 b,a,c");
  EXPECT_EQ(R("{{ 'ab' | list }} {{ d | list }}", ctx), "['a', 'b'] ['b', 'A', 'a']");
  EXPECT_EQ(R("{{ d | items | list }}", ctx), "[('b', 1), ('A', 3), ('a', 2)]");
  EXPECT_EQ(
      R("{{ d | dictsort }} {{ d | dictsort(true) }} {{ d | dictsort(by='value', reverse=true) }}",
        ctx),
      "[('A', 3), ('a', 2), ('b', 1)] [('A', 3), ('a', 2), ('b', 1)] "
      "[('A', 3), ('a', 2), ('b', 1)]");
  EXPECT_EQ(R("{{ xs | map(attribute='n') | list }} {{ ['a', 'b'] | map('upper') | join }}", ctx),
            "['b', 'a', 'c'] AB");
  EXPECT_EQ(R("{{ xs | map(attribute='ok', default='-') | list }}", ctx), "[True, False, '-']");
  EXPECT_EQ(R("{{ [1, 2, 3, 4] | select('even') | list }} {{ [0, 1, '', 'x'] | select | list }}"),
            "[2, 4] [1, 'x']");
  EXPECT_EQ(R("{{ [1, 2, 3, 4] | reject('divisibleby', 3) | list }}"), "[1, 2, 4]");
  EXPECT_EQ(R("{{ xs | selectattr('ok') | map(attribute='n') | join }} "
              "{{ xs | rejectattr('ok') | map(attribute='n') | join }} "
              "{{ xs | selectattr('v', 'gt', 1) | map(attribute='n') | join }} "
              "{{ xs | selectattr('n', 'equalto', 'a') | list | length }}",
              ctx),
            "b ac bc 1");
  EXPECT_EQ(R("{{ [1, 2, 1, 3] | unique | list }} {{ ['a', 'A', 'b'] | unique | list }}"),
            "[1, 2, 3] ['a', 'b']");
  EXPECT_EQ(R("{{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }} {{ xs | max(attribute='v') }}", ctx),
            "1 3 {'n': 'c', 'v': 3}");
  EXPECT_EQ(
      R("{{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ ['b', 'A', 'c'] | sort }}"),
      "[1, 2, 3] [3, 2, 1] ['A', 'b', 'c']");
  EXPECT_EQ(R("{{ xs | sort(attribute='n') | map(attribute='v') | list }}", ctx), "[1, 2, 3]");
  EXPECT_EQ(R("{{ [1, 2, 3] | reverse | list }}"), "[3, 2, 1]");
  EXPECT_EQ(R("{{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ [1, 2, 3] | batch(2, 0) | list }}"),
            "[[1, 2], [3, 4], [5]] [[1, 2], [3, 0]]");
  EXPECT_EQ(R("{{ missing | default('dflt') }} {{ '' | d('e') }} {{ '' | default('e', true) }} "
              "{{ none | default('n') }}"),
            "dflt  e None");
  EXPECT_EQ(R("{{ xs | length }} {{ d | count }}", ctx), "3 3");
}

TEST(JinjaTests, BuiltinTests) {
  const char* ctx = R"({"s": "x", "i": 3, "f": 1.5, "b": true, "n": null, "l": [1], "d": {}})";
  EXPECT_EQ(
      R("{{ s is string }}{{ i is string }}{{ i is number }}{{ f is number }}{{ b is number }}"
        "{{ b is boolean }}{{ i is boolean }}",
        ctx),
      "TrueFalseTrueTrueTrueTrueFalse");
  EXPECT_EQ(R("{{ d is mapping }}{{ l is mapping }}{{ l is iterable }}{{ s is iterable }}"
              "{{ i is iterable }}{{ l is sequence }}{{ s is sequence }}{{ i is sequence }}",
              ctx),
            "TrueFalseTrueTrueFalseTrueTrueFalse");
  EXPECT_EQ(R("{{ n is none }}{{ s is none }}{{ b is true }}{{ b is false }}{{ 1 is true }}"
              "{{ zz is undefined }}{{ s is not defined }}",
              ctx),
            "TrueFalseTrueFalseFalseTrueFalse");
  EXPECT_EQ(R("{{ 3 is odd }}{{ 3 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}"
              "{{ 2 is equalto 2 }}{{ i is integer }}{{ f is float }}"),
            "TrueFalseTrueFalseTrueFalseFalse");
  EXPECT_EQ(R("{{ i is integer }}{{ f is float }}{{ 'a' is in 'cat' }}{{ 'ab' is lower }}", ctx),
            "TrueTrueTrueTrue");
}

TEST(JinjaMethods, StringMethods) {
  EXPECT_EQ(
      R("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}"),
      "TrueTrueTrue");
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b,c']");
  EXPECT_EQ(R("{{ 'a,b,c'.rsplit(',', 1) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }}"),
            "['a,b', 'c'] z");
  EXPECT_EQ(R("[{{ ' x '.strip() }}][{{ ' x '.lstrip() }}][{{ ' x '.rstrip() }}][{{ "
              "'\nx\n'.strip('\n') }}]"),
            "[x][x ][ x][x]");
  EXPECT_EQ(R("{{ 'aXb'.upper() }} {{ 'aXb'.lower() }} {{ 'hello world'.title() }}"),
            "AXB axb Hello World");
  EXPECT_EQ(R("{{ 'aXa'.replace('a', 'o') }} {{ 'héllo'.find('l') }} {{ 'abc'.find('z') }} "
              "{{ 'banana'.count('an') }}"),
            "oXo 2 -1 2");
  EXPECT_EQ(
      R("{{ '{} and {}'.format(1, 'b') }} {{ '{0}{0}'.format('x') }} {{ '{n}!'.format(n=5) }}"),
      "1 and b xx 5!");
  EXPECT_EQ(R("{{ 'a\nb\r\nc'.splitlines() }} {{ '-'.join(['a', 'b']) }}"), "['a', 'b', 'c'] a-b");
}

TEST(JinjaMethods, DictAndListMethods) {
  const char* ctx = R"({"d": {"a": 1, "b": 2}, "l": [5, 6, 5]})";
  EXPECT_EQ(R("{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }}", ctx),
            "[('a', 1), ('b', 2)] ['a', 'b'] [1, 2]");
  EXPECT_EQ(R("{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }}", ctx), "1 None 0");
  EXPECT_EQ(R("{{ l.index(6) }} {{ l.count(5) }}{% set _ = l.append(7) %} {{ l }}", ctx),
            "1 2 [5, 6, 5, 7]");
  EXPECT_NE(E("{{ l.index(9) }}", ctx).find("not in list"), std::string::npos);
}

}  // namespace
}  // namespace gyre::tokenizer::jinja
