// Added tokens of tokenizer.json ("added_tokens"): matched in the text before the model sees it and
// never split. Reproduces HF's AddedVocabulary: leftmost-longest matching (its Aho-Corasick
// MatchKind::LeftmostLongest), then the single_word / lstrip / rstrip rules; tokens with
// normalized=false are matched on the raw text, the others on the normalized text.
// Invariants: immutable after construction (thread-safe reads); ids are those of the JSON.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gyre::tokenizer {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, normalized = true, single_word = false;
};

// A piece of the input: either plain text (id < 0) or one added token.
struct TextSplit {
  size_t begin, end;
  int32_t id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  explicit AddedVocabulary(std::vector<AddedToken> tokens);

  // Splits s into plain-text and added-token pieces, using the tokens whose `normalized` flag
  // equals `normalized_set`. Appends to out, in order; plain pieces may be empty-free only.
  void split(std::string_view s, bool normalized_set, std::vector<TextSplit>& out) const;
  bool has_normalized_tokens() const { return !tries_[1].nodes.empty(); }
  bool empty() const { return tokens_.empty(); }

  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
      int32_t token = -1;                                   // index into tokens_ ending here
    };
    std::vector<Node> nodes;  // nodes[0] is the root when non-empty
    bool first_byte[256] = {};
    void add(std::string_view s, int32_t token);
    // Longest token starting at s[i], as (length, token index), or length 0.
    std::pair<size_t, int32_t> longest_at(std::string_view s, size_t i) const;
  };
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  Trie tries_[2];  // [0]: normalized=false tokens (raw text); [1]: normalized=true
};

}  // namespace gyre::tokenizer
