// A compiled PCRE2 regex (UTF + UCP, JIT when available) used by the Split pre-tokenizer and the
// Replace normalizer/decoder. HF tokenizers compiles these patterns with Oniguruma; the Qwen/Llama
// 3 patterns (\p{L}, \p{N}, look-ahead, (?i:...)) mean the same in PCRE2 with UCP. Invariants:
// compiled once and immutable, so one Regex is shared by all threads (match data and JIT stacks are
// per thread); subjects must already be valid UTF-8 (the tokenizer repairs input first), which lets
// matching skip PCRE2's own UTF check.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gyre::tokenizer {

class Regex {
 public:
  // `where` names the JSON field the pattern came from, for error messages.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of all non-overlapping matches in s, left to right (an
  // empty match right after the previous match is skipped, as Rust's and Oniguruma's iterators do).
  void find_all(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*
  bool jit_ = false;
};

// Escapes s so that it matches literally in a PCRE2 pattern.
std::string regex_escape(std::string_view s);

}  // namespace gyre::tokenizer
