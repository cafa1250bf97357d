// Pre-tokenizers of HF tokenizers' tokenizer.json ("pre_tokenizer" field): Split (Regex or String
// pattern; Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel
// (add_prefix_space, use_regex with GPT-2's pattern), Digits, Metaspace, Whitespace,
// WhitespaceSplit, Sequence. They cut normalized text into pieces that BPE encodes one by one.
// Invariants: pieces are non-empty and valid UTF-8; ByteLevel's byte->char mapping is not applied
// here: the BPE model works on raw bytes when the pipeline is byte-level (bpe.h), which is why a
// ByteLevel pre-tokenizer must be the last one of a Sequence.
#pragma once
#include <deque>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer {

struct Piece {
  std::string_view text;
  bool at_start;  // starts at offset 0 of the original input (Metaspace prepend_scheme "first")
};

// Pieces plus storage for text that a pre-tokenizer rewrote (e.g. Metaspace's ▁). Views into
// `storage` stay valid because deque growth never moves existing strings.
struct Pieces {
  std::vector<Piece> items;
  std::vector<Piece> scratch;
  std::deque<std::string> storage;
  std::string_view store(std::string s) {
    storage.push_back(std::move(s));
    return storage.back();
  }
  void clear() {
    items.clear();
    storage.clear();
  }
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece of p.items further.
  virtual void pre_tokenize(Pieces& p) const = 0;
  // True when this is (or a Sequence ends with) ByteLevel.
  virtual bool byte_level() const { return false; }
  static std::unique_ptr<PreTokenizer> from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace gyre::tokenizer
