// Prompt data: `path@[a:b]` slice semantics (Python's, as slime), the JSONL reader with
// --input-key/--label-key/--metadata-key/--tool-key, malformed-line skipping vs --strict-data,
// and --rollout-max-prompt-len filtering through a length callback.
#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/rl/data/prompt_dataset.h"
#include "gyre/rl/data/slice.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl;
using json = nlohmann::json;

namespace {

using test::error_of;

std::string rows(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += json{{"input", "q" + std::to_string(i)}}.dump() + "\n";
  return out;
}

std::vector<std::string> prompts_of(const PromptDataset& d) {
  std::vector<std::string> out;
  for (const auto& s : d.prompts()) out.push_back(s.prompt.get<std::string>());
  return out;
}

}  // namespace

TEST(DataSlice, ParseSliceSyntax) {
  struct Case {
    const char* spec;
    const char* path;
    std::optional<int64_t> start, stop;
    bool has_slice;
  } cases[] = {
      {"/a/b.jsonl@[3:7]", "/a/b.jsonl", 3, 7, true},
      {"/a/b.jsonl@[-100:]", "/a/b.jsonl", -100, std::nullopt, true},
      {"/a/b.jsonl@[:-2]", "/a/b.jsonl", std::nullopt, -2, true},
      {"/a/b.jsonl@[:]", "/a/b.jsonl", std::nullopt, std::nullopt, true},
      {"/a/b.jsonl@[ 1 : +5 ]", "/a/b.jsonl", 1, 5, true},
      {"/a/b.jsonl", "/a/b.jsonl", std::nullopt, std::nullopt, false},
      {"/a/we@[ird.jsonl", "/a/we@[ird.jsonl", std::nullopt, std::nullopt, false},
      {"/x@[1:2]/b.jsonl@[0:1]", "/x@[1:2]/b.jsonl", 0, 1, true},
  };
  for (const auto& c : cases) {
    DataPath p = parse_data_path(c.spec);
    EXPECT_EQ(p.path, c.path) << c.spec;
    ASSERT_EQ(p.slice.has_value(), c.has_slice) << c.spec;
    if (c.has_slice) {
      EXPECT_EQ(p.slice->start, c.start) << c.spec;
      EXPECT_EQ(p.slice->stop, c.stop) << c.spec;
    }
  }
  for (const char* bad :
       {"/a.jsonl@[1:2:3]", "/a.jsonl@[a:b]", "/a.jsonl@[5]", "@[1:2]", "/a.jsonl@[1.5:2]"}) {
    std::string e = error_of([&] { parse_data_path(bad); });
    EXPECT_NE(e.find(bad), std::string::npos) << bad << " -> " << e;
  }
}

TEST(DataSlice, ResolveMatchesPythonSemantics) {
  // Expected [begin, end) for a 10-row dataset, as Python's list(range(10))[a:b].
  struct Case {
    std::optional<int64_t> a, b;
    int64_t begin, end;
  } cases[] = {
      {1, -1, 1, 9},
      {-5, -2, 5, 8},
      {3, 7, 3, 7},
      {-100, std::nullopt, 0, 10},
      {std::nullopt, -2, 0, 8},
      {std::nullopt, std::nullopt, 0, 10},
      {7, 3, 7, 7},
      {0, 0, 0, 0},
      {3, 100, 3, 10},
      {100, 200, 10, 10},
      {-3, std::nullopt, 7, 10},
      {std::nullopt, -100, 0, 0},
      {-1, 10, 9, 10},
      {5, -5, 5, 5},
  };
  for (const auto& c : cases) {
    auto [b, e] = RowSlice{c.a, c.b}.resolve(10);
    EXPECT_EQ(b, c.begin) << (c.a ? *c.a : 999) << ":" << (c.b ? *c.b : 999);
    EXPECT_EQ(e, c.end) << (c.a ? *c.a : 999) << ":" << (c.b ? *c.b : 999);
  }
  auto [b, e] = RowSlice{-5, std::nullopt}.resolve(0);
  EXPECT_EQ(b, 0);
  EXPECT_EQ(e, 0);
}

TEST(PromptData, LoadsKeysLabelsMetadataToolsAndSlice) {
  std::string dir = test::temp_dir("prompts");
  std::string path = dir + "/data.jsonl";
  test::write_file(
      path,
      json{{"prompt", json::array({{{"role", "user"}, {"content", "hi"}}})},
           {"answer", 34},
           {"metadata", {{"rm_type", "math"}}},
           {"tools", R"([{"name": "search"}])"}}
              .dump() +
          "\n\n" + json{{"prompt", "plain text"}, {"metadata", R"({"source_name": "s"})"}}.dump() +
          "\r\n" +
          json{{"prompt", "third"}, {"answer", "x"}, {"tools", json::array({{{"name", "a"}}})}}
              .dump() +
          "\n");
  PromptDataOptions o;
  o.input_key = "prompt";
  o.label_key = "answer";
  PromptDataset d = PromptDataset::load(path, o);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_TRUE(d[0].prompt.is_array());
  EXPECT_EQ(d[0].label, 34);
  EXPECT_EQ(d[0].metadata["rm_type"], "math");
  EXPECT_EQ(d[0].metadata["tools"][0]["name"], "search");  // JSON string decoded
  EXPECT_EQ(d[1].prompt, "plain text");
  EXPECT_TRUE(d[1].label.is_null());  // absent label -> null
  EXPECT_EQ(d[1].metadata["source_name"], "s");
  EXPECT_EQ(d[2].metadata["tools"][0]["name"], "a");
  EXPECT_EQ(d.stats().rows, 3);
  EXPECT_EQ(d.stats().malformed, 0);
  // Without --label-key the label stays null.
  PromptDataOptions no_label;
  no_label.input_key = "prompt";
  EXPECT_TRUE(PromptDataset::load(path, no_label)[0].label.is_null());
  // Slices select non-blank lines.
  test::write_file(path, rows(10));
  PromptDataOptions def;  // slime default --input-key input
  EXPECT_EQ(prompts_of(PromptDataset::load(path + "@[1:-1]", def)),
            (std::vector<std::string>{"q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"}));
  EXPECT_EQ(prompts_of(PromptDataset::load(path + "@[-5:-2]", def)),
            (std::vector<std::string>{"q5", "q6", "q7"}));
  EXPECT_EQ(PromptDataset::load(path + "@[8:2]", def).size(), 0u);
  EXPECT_EQ(PromptDataset::load(path + "@[-3:]", def).source(), path + "@[-3:]");
}

TEST(PromptData, ParseMalformedLinesSkippedWithCountAndFirstLine) {
  std::string text = rows(2) +                                        // lines 1-2 fine
                     "{\"input\": \"ok\"\n" +                         // 3: invalid JSON
                     "\n" +                                           // 4: blank, ignored
                     "[1, 2]\n" +                                     // 5: not an object
                     "{\"question\": \"x\"}\n" +                      // 6: no input key
                     "{\"input\": 5}\n" +                             // 7: wrong prompt type
                     "{\"input\": \"ok\", \"metadata\": [1]}\n" +     // 8: bad metadata
                     "{\"input\": \"ok\", \"tools\": \"{nope\"}\n" +  // 9: bad tools
                     "{\"input\": [\"no role\"]}\n" +                 // 10: not messages
                     rows(1);                                         // 11 fine
  PromptDataOptions o;
  PromptDataset d = PromptDataset::parse(text, o, "train.jsonl");
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.stats().rows, 10);
  EXPECT_EQ(d.stats().malformed, 7);
  EXPECT_EQ(d.stats().first_bad_line, 3);
  EXPECT_EQ(d.stats().first_bad_reason, "invalid JSON");
  // The first bad line is found even when it is not the first line with a problem kind.
  PromptDataset d2 = PromptDataset::parse(rows(3) + "{\"question\": 1}\n", o, "t.jsonl");
  EXPECT_EQ(d2.stats().first_bad_line, 4);
  EXPECT_NE(d2.stats().first_bad_reason.find("--input-key"), std::string::npos);
}

TEST(PromptData, ParseStrictModeErrorNamesFileAndLine) {
  PromptDataOptions o;
  o.strict = true;
  std::string e = error_of(
      [&] { PromptDataset::parse(rows(4) + "\n{\"input\": 1}\n", o, "/data/train.jsonl"); });
  EXPECT_NE(e.find("/data/train.jsonl line 6"), std::string::npos) << e;
  EXPECT_NE(e.find("--strict-data"), std::string::npos) << e;
  EXPECT_NO_THROW(PromptDataset::parse(rows(4), o, "ok.jsonl"));
}

TEST(PromptData, ParseMaxPromptLenFiltersThroughCallback) {
  std::string text;
  for (std::string p : {"short", "a much longer prompt", "mid-size", "x"})
    text += json{{"input", p}}.dump() + "\n";
  PromptDataOptions o;
  o.max_prompt_len = 8;
  EXPECT_NE(error_of([&] { PromptDataset::parse(text, o); }).find("tokenizer"), std::string::npos);
  int calls = 0;
  o.prompt_length = [&](const Sample& s) {
    ++calls;
    return s.prompt.get<std::string>().size();  // stand-in tokenizer: one token per byte
  };
  PromptDataset d = PromptDataset::parse(text, o);
  EXPECT_EQ(prompts_of(d), (std::vector<std::string>{"short", "mid-size", "x"}));  // order kept
  EXPECT_EQ(d.stats().filtered_too_long, 1);
  EXPECT_EQ(calls, 4);
  o.max_prompt_len = 0;
  EXPECT_NE(error_of([&] { PromptDataset::parse(text, o); }).find("positive"), std::string::npos);
}

TEST(PromptData, ParseUnsupportedAndMissingFiles) {
  PromptDataOptions o;
  EXPECT_NE(error_of([&] { PromptDataset::load("/data/x.parquet@[0:10]", o); }).find("parquet"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              PromptDataset::load("/nonexistent/x.jsonl", o);
            }).find("/nonexistent/x.jsonl"),
            std::string::npos);
  // Fingerprints tell datasets apart.
  EXPECT_EQ(PromptDataset::parse(rows(3), o).fingerprint(),
            PromptDataset::parse(rows(3), o).fingerprint());
  EXPECT_NE(PromptDataset::parse(rows(3), o).fingerprint(),
            PromptDataset::parse(rows(4), o).fingerprint());
}
