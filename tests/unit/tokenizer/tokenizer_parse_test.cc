// Bad input: malformed or unsupported tokenizer.json must raise gyre::Error naming the problem,
// and invalid UTF-8 text must be repaired (U+FFFD) rather than crash. Names contain "Parse" so CI
// also runs them under AddressSanitizer + UBSan.
#include <gtest/gtest.h>

#include <string>

#include "gyre/core/error.h"
#include "gyre/tokenizer/tokenizer.h"
#include "test_util.h"

namespace {

using gyre::Error;
using gyre::ErrorKind;
using gyre::tokenizer::Tokenizer;

// Runs f, expecting a gyre::Error of `kind` whose message contains every needle.
template <typename F>
void expect_error(F&& f, ErrorKind kind, std::initializer_list<const char*> needles) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const char* n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

const char* kTiny = R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": null,
  "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": {"a": 0, "b": 1, "ab": 2},
            "merges": ["a b"]}})";

TEST(TokenizerParse, TinyModelLoads) {
  auto t = Tokenizer::from_json_string(kTiny);
  EXPECT_EQ(t->encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(t->vocab_size(), 3);
}

TEST(TokenizerParse, InvalidJsonNamesLine) {
  expect_error(
      [] { Tokenizer::from_json_string("{\n\"model\": {\n  \"type\": \"BPE\",,\n}}", "bad.json"); },
      ErrorKind::invalid_argument, {"bad.json", "line 3"});
  expect_error([] { Tokenizer::from_json_string("[1, 2]", "arr.json"); },
               ErrorKind::invalid_argument, {"arr.json", "object"});
}

TEST(TokenizerParse, MissingModel) {
  expect_error([] { Tokenizer::from_json_string(R"({"added_tokens": []})", "t.json"); },
               ErrorKind::invalid_argument, {"t.json", "\"model\""});
}

TEST(TokenizerParse, OtherModelTypesUnsupported) {
  for (const char* type : {"Unigram", "WordPiece", "WordLevel"}) {
    std::string j = std::string(R"({"model": {"type": ")") + type + R"(", "vocab": {"a": 0}}})";
    expect_error([&] { Tokenizer::from_json_string(j, "t.json"); }, ErrorKind::unsupported, {type});
  }
}

TEST(TokenizerParse, BadFieldsAreNamed) {
  // A merge naming a token that is not in the vocab.
  expect_error(
      [] {
        Tokenizer::from_json_string(
            R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a z"]}})");
      },
      ErrorKind::invalid_argument, {"merges[0]", "\"z\""});
  expect_error(
      [] {
        Tokenizer::from_json_string(
            R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})");
      },
      ErrorKind::invalid_argument, {"model.vocab"});
  expect_error(
      [] {
        Tokenizer::from_json_string(
            R"({"model": {"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []}})");
      },
      ErrorKind::unsupported, {"dropout"});
  expect_error(
      [] {
        Tokenizer::from_json_string(
            R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
      "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
      },
      ErrorKind::invalid_argument, {"pre_tokenizer", "(a"});
  expect_error(
      [] {
        Tokenizer::from_json_string(R"({"pre_tokenizer": {"type": "BertPreTokenizer"},
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
      },
      ErrorKind::unsupported, {"BertPreTokenizer"});
  expect_error([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); }, ErrorKind::not_found,
               {"/nonexistent/tokenizer.json"});
}

TEST(TokenizerParse, InvalidUtf8InputBecomesReplacementChar) {
  auto tok = Tokenizer::from_dir(gyre::test::source_path("tests/fixtures/tokenizers/qwen3"));
  // Lone continuation byte, truncated 3-byte sequence, overlong encoding, surrogate, 0xFF.
  const std::string bad = "a\x80 b\xE4\xBD c\xC0\xAF d\xED\xA0\x80 e\xFF";
  // Rust's from_utf8_lossy: one U+FFFD per maximal invalid subpart (\xC0, \xAF separately; the
  // surrogate's three bytes separately).
  const std::string fixed = "a\uFFFD b\uFFFD c\uFFFD\uFFFD d\uFFFD\uFFFD\uFFFD e\uFFFD";
  EXPECT_EQ(tok->encode(bad), tok->encode(fixed));
  EXPECT_EQ(tok->decode(tok->encode(bad)), fixed);
  // Ids whose bytes are a broken UTF-8 sequence decode to U+FFFD (from_utf8_lossy), as HF.
  auto parrot = tok->encode("\xF0\x9F\xA6\x9C");  // a rare emoji: split into byte tokens
  ASSERT_GT(parrot.size(), 1u);
  parrot.pop_back();
  EXPECT_EQ(tok->decode(parrot), "\uFFFD");
}

}  // namespace
