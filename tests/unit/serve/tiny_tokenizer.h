// Test helper (header-only, shared by the serve unit and e2e tests): a real byte-level BPE
// tokenizer whose vocabulary fits the 512-token fixture models. The fixture tokenizers (Qwen3,
// Llama 3) have ~150k tokens, so their ids would be out of range for tests/fixtures/models/*_tiny.
// Layout: ids 0..255 = the 256 bytes (GPT-2 byte-to-unicode alphabet), 256..504 = merges of
// lowercase letter pairs ("aa", "ab", ...), 505..511 = Qwen-style added tokens (<|im_start|>,
// <|im_end|>, <think>, </think>, <tool_call>, </tool_call>, <|endoftext|>; only the <|...|> ones
// are special), numbered after the model vocabulary as Hugging Face numbers them. Written as a
// Hugging Face folder (tokenizer.json + tokenizer_config.json with the Qwen3 chat template from
// tests/fixtures/tokenizers/qwen3 and eos "<|im_end|>" = id 506), loadable by Tokenizer::from_dir
// and ChatTemplate::from_dir.
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace gyre::test {

inline std::string byte_to_unicode_char(int b) {
  // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + k in order.
  auto printable = [](int x) {
    return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
  };
  int cp = b;
  if (!printable(b)) {
    int k = 0;
    for (int x = 0; x < b; ++x)
      if (!printable(x)) ++k;
    cp = 256 + k;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

inline const char* const kTinySpecials[] = {"<|im_start|>", "<|im_end|>",  "<think>",
                                            "</think>",     "<tool_call>", "</tool_call>",
                                            "<|endoftext|>"};

inline nlohmann::ordered_json tiny_tokenizer_json() {
  using oj = nlohmann::ordered_json;
  oj vocab = oj::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_unicode_char(b)] = b;
  int id = 256;
  oj merges = oj::array();
  for (char a = 'a'; a <= 'z' && id < 505; ++a)
    for (char b = 'a'; b <= 'z' && id < 505; ++b) {
      std::string pa(1, a), pb(1, b);
      vocab[pa + pb] = id++;
      merges.push_back(oj::array({pa, pb}));
    }
  oj added = oj::array();
  for (const char* s : kTinySpecials)
    added.push_back({{"id", id++},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     // As in Qwen's tokenizer: <think> and <tool_call> tags are added tokens
                     // but not special, so skip_special_tokens keeps them in the text.
                     {"special", std::string(s).find("|") != std::string::npos}});
  oj bl = {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", true}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", bl},
          {"post_processor", nullptr},
          {"decoder", bl},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

// Writes the tokenizer folder into a fresh temp dir and returns its path.
inline std::string write_tiny_tokenizer_dir() {
  std::string dir = temp_dir("tiny_tok");
  write_file(dir + "/tokenizer.json", tiny_tokenizer_json().dump());
  auto qwen = nlohmann::ordered_json::parse(
      read_file(source_path("tests/fixtures/tokenizers/qwen3/tokenizer_config.json")));
  nlohmann::ordered_json cfg = {{"chat_template", qwen["chat_template"]},
                                {"eos_token", "<|im_end|>"},
                                {"pad_token", "<|endoftext|>"},
                                {"bos_token", nullptr},
                                {"add_bos_token", false}};
  write_file(dir + "/tokenizer_config.json", cfg.dump());
  return dir;
}

}  // namespace gyre::test
