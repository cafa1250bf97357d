// `gyre tokenize`: JSONL text -> ids and ids -> text through the real CLI binary; a bad line exits
// 2 with an error that names the line number.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gyre/tokenizer/tokenizer.h"
#include "test_util.h"

namespace {

using gyre::test::run_command;
using nlohmann::json;

std::string tok_dir() { return gyre::test::source_path("tests/fixtures/tokenizers/llama3"); }

TEST(TokenizeCli, EncodeThenDecode) {
  std::string dir = gyre::test::temp_dir("tokcli");
  gyre::test::write_file(dir + "/in.jsonl",
                         "{\"text\": \"Hello world\"}\n{\"text\": \"<|eot_id|> ok \\u4f60\"}\n");
  auto r = run_command(gyre::test::gyre_bin() + " tokenize --tokenizer " + tok_dir() + " --input " +
                       dir + "/in.jsonl --output " + dir + "/ids.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto tok = gyre::tokenizer::Tokenizer::from_dir(tok_dir());
  std::string out = gyre::test::read_file(dir + "/ids.jsonl");
  auto nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  EXPECT_EQ(json::parse(out.substr(0, nl))["ids"].get<std::vector<int32_t>>(),
            tok->encode("Hello world"));

  r = run_command(gyre::test::gyre_bin() + " tokenize --tokenizer " + tok_dir() + " --input " +
                  dir + "/in.jsonl --add-special-tokens");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out.substr(0, r.out.find('\n')))["ids"][0], 128000);

  r = run_command(gyre::test::gyre_bin() + " tokenize --decode --skip-special-tokens --tokenizer " +
                  tok_dir() + " --input " + dir + "/ids.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> texts;
  size_t p = 0;
  while (p < r.out.size()) {
    size_t e = r.out.find('\n', p);
    texts.push_back(json::parse(r.out.substr(p, e - p))["text"]);
    p = e + 1;
  }
  ASSERT_EQ(texts.size(), 2u);
  EXPECT_EQ(texts[0], "Hello world");
  EXPECT_EQ(texts[1], " ok \xE4\xBD\xA0");
}

TEST(TokenizeCli, ParseBadLineNamesLineNumber) {
  std::string dir = gyre::test::temp_dir("tokcli");
  gyre::test::write_file(dir + "/in.jsonl", "{\"text\": \"fine\"}\n\n{\"text\": 42}\n");
  auto r = run_command(gyre::test::gyre_bin() + " tokenize --tokenizer " + tok_dir() + " --input " +
                       dir + "/in.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;

  gyre::test::write_file(dir + "/ids.jsonl", "{\"ids\": [1, 2]}\n{\"ids\": [1, \"x\"]}\n");
  r = run_command(gyre::test::gyre_bin() + " tokenize --decode --tokenizer " + tok_dir() +
                  " --input " + dir + "/ids.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;

  gyre::test::write_file(dir + "/junk.jsonl", "{not json\n");
  r = run_command(gyre::test::gyre_bin() + " tokenize --tokenizer " + tok_dir() + " --input " +
                  dir + "/junk.jsonl");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("line 1"), std::string::npos) << r.err;
}

// --decode used to wrap ids into int32 (4294967297 decoded as id 1) and silently drop negative or
// too-large ones; now each is an error naming the line, the position, the id and the valid range.
TEST(TokenizeCli, ParseDecodeRejectsIdsOutOfRange) {
  std::string dir = gyre::test::temp_dir("tokcli");
  auto decode = [&](const std::string& ids) {
    gyre::test::write_file(dir + "/ids.jsonl", "{\"ids\": [1, 2]}\n{\"ids\": [1, " + ids + "]}\n");
    return run_command(gyre::test::gyre_bin() + " tokenize --decode --tokenizer " + tok_dir() +
                       " --input " + dir + "/ids.jsonl");
  };
  const int32_t vocab = gyre::tokenizer::Tokenizer::from_dir(tok_dir())->vocab_size();
  for (const std::string& id : {std::string("-1"), std::to_string(vocab), std::string("4294967297"),
                                std::string("2147483648"), std::string("-2147483649"),
                                std::string("18446744073709551615")}) {
    auto r = decode(id);
    EXPECT_EQ(r.exit_code, 2) << id << ": " << r.out;
    EXPECT_NE(r.err.find("ids.jsonl:2: ids[1] = " + id + " is out of range"), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("[0, " + std::to_string(vocab) + ")"), std::string::npos) << r.err;
  }
  auto r = decode(std::to_string(vocab - 1));  // the last id is fine
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
