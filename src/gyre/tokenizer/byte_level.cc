// GPT-2 byte-level alphabet tables (see byte_level.h).
#include "gyre/tokenizer/byte_level.h"

#include <array>

#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // all mapped code points are < 256 + 68
  Tables() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the others are shifted to 256 + n in byte
    // order (bytes_to_unicode in GPT-2's encoder.py).
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      char32_t c = printable(b) ? char32_t(b) : char32_t(256 + n++);
      to_char[b] = c;
      to_byte[c] = int16_t(b);
    }
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_to_char(uint8_t b) { return tables().to_char[b]; }

int char_to_byte(char32_t cp) { return cp < 324 ? tables().to_byte[cp] : -1; }

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8_append(out, byte_to_char(b));
  return out;
}

std::optional<std::string> byte_level_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    int b = char_to_byte(utf8_next(text, i));
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
  }
  return out;
}

}  // namespace gyre::tokenizer
