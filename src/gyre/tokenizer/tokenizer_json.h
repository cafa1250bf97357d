// Fast loading of tokenizer.json: a SAX pass (nlohmann's lexer) that streams model.vocab and
// model.merges straight into flat vectors, and builds an ordinary nlohmann::json document only for
// the small rest (normalizer, pre_tokenizer, added_tokens, ...). Building a DOM of the 150k-entry
// vocab object and 280k merges would dominate load time.
// Invariants: `doc` is an object; doc["model"] (when present) lacks "vocab" and "merges", whose
// presence is reported by has_vocab / has_merges.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gyre::tokenizer {

struct TokenizerJson {
  nlohmann::json doc;
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false, has_merges = false;
};

// Throws gyre::Error (invalid_argument) naming `name` and the line/column of a syntax error.
TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& name);

}  // namespace gyre::tokenizer
