// Python str semantics over UTF-8 std::string: code-point indexing and slicing, whitespace as
// str.isspace() defines it, case mapping (utf8proc), and the str methods chat templates call
// (split, strip, replace, find, title, ...). Invalid UTF-8 bytes are treated as single code points
// (U+FFFD when re-encoded is NOT done: the original bytes are kept), so no input crashes.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer::jinja::pystr {

// Code points of `s`; each element remembers its byte span so slices keep the original bytes.
struct CodePoints {
  std::vector<uint32_t> cps;
  std::vector<uint32_t> offsets;  // byte offset of each code point, plus a final s.size()
};
CodePoints decode(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);
size_t length(std::string_view s);  // number of code points

bool is_space(uint32_t cp);  // Python str.isspace() for one code point
// str.strip/lstrip/rstrip; chars == nullopt strips whitespace.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// str.split / str.rsplit; sep == nullopt splits on runs of whitespace, dropping empty parts.
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit, bool from_right);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// Code-point index of the first occurrence of sub, or -1.
int64_t find(std::string_view s, std::string_view sub);
int64_t count(std::string_view s, std::string_view sub);
std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);  // first upper, rest lower
std::string title(std::string_view s);       // Python str.title(): after a non-letter, upper
// Python repr() of a str: single quotes unless the text has ' and no ", escapes \\ \n \r \t and
// other control characters.
std::string repr(std::string_view s);

}  // namespace gyre::tokenizer::jinja::pystr
