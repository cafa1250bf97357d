// GPT-2's byte-level alphabet (openai/gpt-2 encoder.py bytes_to_unicode, reproduced by HF
// tokenizers' ByteLevel): every byte maps to one printable code point, so a byte string becomes a
// text the BPE vocab can spell. Invariant: the mapping is a bijection between the 256 byte values
// and 256 code points; code points outside it have no byte (byte_level_decode reports that).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gyre::tokenizer {

// Code point that stands for byte b.
char32_t byte_to_char(uint8_t b);
// Byte that code point cp stands for, or -1 when cp is not in the alphabet.
int char_to_byte(char32_t cp);
// Byte string -> its byte-level spelling (UTF-8 of the mapped code points).
std::string byte_level_encode(std::string_view bytes);
// Byte-level spelling (valid UTF-8) -> the bytes, or nullopt if a character is outside the
// alphabet.
std::optional<std::string> byte_level_decode(std::string_view text);

}  // namespace gyre::tokenizer
