// UTF-8 helpers shared by the tokenizer: validation, lossy repair with Rust's
// String::from_utf8_lossy policy (each maximal invalid subpart becomes one U+FFFD, as the Unicode
// "substitution of maximal subparts" practice), and code point iteration over valid text.
// Invariant: utf8_next/utf8_char_len are only called on text that is already valid UTF-8.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gyre::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length in bytes of the next valid UTF-8 sequence at s[i], or 0 when s[i..] starts with an invalid
// sequence; *bad_len then receives the length of its maximal invalid subpart (>= 1).
size_t utf8_valid_prefix(std::string_view s, size_t i, size_t* bad_len);
bool utf8_is_valid(std::string_view s);
// Text with every invalid subpart replaced by U+FFFD (what Rust's from_utf8_lossy returns).
std::string utf8_lossy(std::string_view s);
// Appends the UTF-8 encoding of cp.
void utf8_append(std::string& out, char32_t cp);

inline size_t utf8_char_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
// Decodes the code point at s[i] (valid UTF-8) and advances i past it.
inline char32_t utf8_next(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  size_t n = utf8_char_len(b);
  char32_t cp = b & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}
// Code point ending at s[end) (valid UTF-8), with its start in *start.
char32_t utf8_prev(std::string_view s, size_t end, size_t* start);

}  // namespace gyre::tokenizer
