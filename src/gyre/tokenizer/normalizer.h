// Normalizers of HF tokenizers' tokenizer.json ("normalizer" field): NFC, NFD, NFKC, NFKD
// (utf8proc), Lowercase, Prepend, Replace (String or Regex pattern), Strip, Sequence.
// Invariants: input and output are valid UTF-8; a Normalizer is immutable after construction and
// safe to share between threads.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace gyre::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites s in place.
  virtual void normalize(std::string& s) const = 0;
  // Builds the normalizer described by j; null JSON gives nullptr. `where` names the JSON path for
  // error messages (e.g. "tokenizer.json: normalizer").
  static std::unique_ptr<Normalizer> from_json(const nlohmann::json& j, const std::string& where);
};

enum class UnicodeForm { nfc, nfd, nfkc, nfkd };
// Unicode normalization of valid UTF-8 text. ASCII stretches are copied untouched: ASCII
// characters are stable starters that never compose with a preceding character, so only the
// non-ASCII runs (plus the ASCII character just before each, which may compose with a following
// combining mark) go through utf8proc.
std::string unicode_normalize(std::string_view s, UnicodeForm form);

}  // namespace gyre::tokenizer
