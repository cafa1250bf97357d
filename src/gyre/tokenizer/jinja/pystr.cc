// Python str semantics over UTF-8 (see pystr.h).
#include "gyre/tokenizer/jinja/pystr.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>

namespace gyre::tokenizer::jinja::pystr {

CodePoints decode(std::string_view s) {
  CodePoints r;
  r.cps.reserve(s.size());
  r.offsets.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                          utf8proc_ssize_t(s.size() - i), &cp);
    r.offsets.push_back(uint32_t(i));
    if (n <=
        0) {  // invalid byte: keep it as its own "code point" (0xDC80 + byte, like surrogateescape)
      r.cps.push_back(0xDC00u + uint8_t(s[i]));
      i += 1;
    } else {
      r.cps.push_back(uint32_t(cp));
      i += size_t(n);
    }
  }
  r.offsets.push_back(uint32_t(s.size()));
  return r;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= 0xDC80u && cp <= 0xDCFFu) {  // a byte kept from invalid input
    out.push_back(char(cp - 0xDC00u));
    return;
  }
  utf8proc_uint8_t buf[8];
  utf8proc_ssize_t n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool is_space(uint32_t cp) {
  // Python's str.isspace(): bidi class WS/B/S or category Zs.
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F)) return true;
  if (cp < 0x80) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  CodePoints p = decode(s);
  std::vector<uint32_t> set;
  if (chars) set = decode(*chars).cps;
  auto strippable = [&](uint32_t cp) {
    if (!chars) return is_space(cp);
    for (uint32_t c : set)
      if (c == cp) return true;
    return false;
  };
  size_t b = 0, e = p.cps.size();
  if (left)
    while (b < e && strippable(p.cps[b])) ++b;
  if (right)
    while (e > b && strippable(p.cps[e - 1])) --e;
  return std::string(s.substr(p.offsets[b], p.offsets[e] - p.offsets[b]));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep) {
    if (!from_right) {
      size_t pos = 0;
      int64_t n = 0;
      while (n < maxsplit) {
        size_t f = s.find(*sep, pos);
        if (f == std::string_view::npos) break;
        parts.emplace_back(s.substr(pos, f - pos));
        pos = f + sep->size();
        ++n;
      }
      parts.emplace_back(s.substr(pos));
    } else {
      size_t end = s.size();
      int64_t n = 0;
      while (n < maxsplit && end >= sep->size()) {
        size_t f = s.rfind(*sep, end - sep->size());
        if (f == std::string_view::npos) break;
        parts.emplace_back(s.substr(f + sep->size(), end - f - sep->size()));
        end = f;
        ++n;
      }
      parts.emplace_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
    return parts;
  }
  CodePoints p = decode(s);
  std::vector<std::pair<size_t, size_t>> words;  // code-point spans
  size_t n = p.cps.size();
  if (!from_right) {
    size_t i = 0;
    while (i < n) {
      while (i < n && is_space(p.cps[i])) ++i;
      if (i == n) break;
      if (int64_t(words.size()) == maxsplit) {
        size_t e = n;
        while (e > i && is_space(p.cps[e - 1])) --e;
        words.emplace_back(i, e);
        break;
      }
      size_t j = i;
      while (j < n && !is_space(p.cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
  } else {
    size_t i = n;
    while (i > 0) {
      while (i > 0 && is_space(p.cps[i - 1])) --i;
      if (i == 0) break;
      if (int64_t(words.size()) == maxsplit) {
        size_t b = 0;
        while (b < i && is_space(p.cps[b])) ++b;
        words.emplace_back(b, i);
        break;
      }
      size_t j = i;
      while (j > 0 && !is_space(p.cps[j - 1])) --j;
      words.emplace_back(j, i);
      i = j;
    }
    std::reverse(words.begin(), words.end());
  }
  for (auto [b, e] : words) parts.emplace_back(s.substr(p.offsets[b], p.offsets[e] - p.offsets[b]));
  return parts;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  std::vector<std::string> lines;
  CodePoints p = decode(s);
  size_t start = 0, i = 0, n = p.cps.size();
  while (i < n) {
    uint32_t c = p.cps[i];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
               c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (c == '\r' && eol < n && p.cps[eol] == '\n') ++eol;
    size_t end = keepends ? eol : i;
    lines.emplace_back(s.substr(p.offsets[start], p.offsets[end] - p.offsets[start]));
    start = i = eol;
  }
  if (start < n) lines.emplace_back(s.substr(p.offsets[start]));
  return lines;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old.empty()) {  // Python inserts repl between every code point (and at both ends)
    CodePoints p = decode(s);
    int64_t n = 0;
    for (size_t i = 0; i <= p.cps.size(); ++i) {
      if (n < count) {
        out.append(repl);
        ++n;
      }
      if (i < p.cps.size()) out.append(s.substr(p.offsets[i], p.offsets[i + 1] - p.offsets[i]));
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (n < count) {
    size_t f = s.find(old, pos);
    if (f == std::string_view::npos) break;
    out.append(s.substr(pos, f - pos));
    out.append(repl);
    pos = f + old.size();
    ++n;
  }
  out.append(s.substr(pos));
  return out;
}

int64_t find(std::string_view s, std::string_view sub) {
  size_t f = s.find(sub);
  if (f == std::string_view::npos) return -1;
  return int64_t(length(s.substr(0, f)));
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return int64_t(length(s)) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string_view::npos; pos = s.find(sub, pos + sub.size()))
    ++n;
  return n;
}

namespace {
template <typename F>
std::string map_cps(std::string_view s, F f) {
  CodePoints p = decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < p.cps.size(); ++i) append_utf8(out, f(i, p.cps[i]));
  return out;
}
bool valid_cp(uint32_t cp) { return cp < 0x110000 && !(cp >= 0xD800 && cp <= 0xDFFF); }
uint32_t to_upper(uint32_t cp) { return valid_cp(cp) ? uint32_t(utf8proc_toupper(cp)) : cp; }
uint32_t to_lower(uint32_t cp) { return valid_cp(cp) ? uint32_t(utf8proc_tolower(cp)) : cp; }
uint32_t to_title(uint32_t cp) { return valid_cp(cp) ? uint32_t(utf8proc_totitle(cp)) : cp; }
bool is_cased(uint32_t cp) {
  if (!valid_cp(cp)) return false;
  auto cat = utf8proc_category(utf8proc_int32_t(cp));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}
}  // namespace

std::string upper(std::string_view s) {
  return map_cps(s, [](size_t, uint32_t c) { return to_upper(c); });
}
std::string lower(std::string_view s) {
  return map_cps(s, [](size_t, uint32_t c) { return to_lower(c); });
}
std::string capitalize(std::string_view s) {
  return map_cps(s, [](size_t i, uint32_t c) { return i == 0 ? to_upper(c) : to_lower(c); });
}
std::string title(std::string_view s) {
  bool prev_cased = false;
  return map_cps(s, [&](size_t, uint32_t c) {
    uint32_t r = prev_cased ? to_lower(c) : to_title(c);
    prev_cased = is_cased(c);
    return r;
  });
}

std::string repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  CodePoints p = decode(s);
  for (uint32_t c : p.cps) {
    if (c == uint32_t(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(char(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      out += fmt::format("\\udc{:02x}", c - 0xDC00);
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(q);
  return out;
}

}  // namespace gyre::tokenizer::jinja::pystr
