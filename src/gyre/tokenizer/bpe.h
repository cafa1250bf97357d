// The BPE model of HF tokenizers (models/bpe): vocab, ranked merges, and the merge loop that turns
// one pre-token into ids. Reproduces HF's semantics: lowest-rank pair first, ties to the leftmost;
// ignore_merges (a pre-token that is itself in the vocab is one token, as Llama 3 sets);
// continuing_subword_prefix / end_of_word_suffix; byte_fallback (<0xAB> tokens); unk_token with
// fuse_unk. Dropout is rejected at load time (non-deterministic encodes have no place in RL data).
// Invariants: immutable after construction except the bounded word cache, which is internally
// locked, so one model serves many threads. In byte-level mode words are raw bytes: the GPT-2
// byte->char mapping of HF's ByteLevel pre-tokenizer is folded into the vocab at load time (each
// token's spelling is decoded to bytes), which gives the same merges on the same symbols.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gyre/tokenizer/flat_map.h"

namespace gyre::tokenizer {

struct BpeConfig {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  bool byte_level = false;  // words are raw bytes (the pre-tokenizer ends with ByteLevel)
  bool use_cache = true;
};

class WordCache;

class BpeModel {
 public:
  // Throws gyre::Error when a merge names a token missing from the vocab.
  explicit BpeModel(BpeConfig cfg);
  ~BpeModel();
  // Appends the ids of one pre-token.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  // Lookups by the tokenizer.json spelling of a token (e.g. "Ġthe").
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  int32_t max_id() const { return int32_t(id_to_token_.size()) - 1; }
  size_t vocab_len() const { return vocab_.size(); }  // number of vocab entries (HF get_vocab_size)
  size_t num_merges() const { return num_merges_; }

 private:
  void initial_symbols(std::string_view word, std::vector<int32_t>& syms) const;
  void merge(std::vector<int32_t>& syms) const;
  void merge_long(std::vector<int32_t>& syms) const;

  StringIdMap vocab_;      // tokenizer.json spelling -> id
  StringIdMap raw_vocab_;  // byte-level mode: raw bytes -> id
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> has_token_;
  PairMap merges_;
  size_t num_merges_ = 0;
  std::array<int32_t, 256> byte_ids_{};      // byte-level mode: id of each single-byte token or -1
  std::array<int32_t, 256> fallback_ids_{};  // byte_fallback: id of "<0xAB>" or -1
  int32_t unk_id_ = -1;
  BpeConfig cfg_;  // options only (vocab and merges are moved out)
  std::unique_ptr<WordCache> cache_;
};

}  // namespace gyre::tokenizer
