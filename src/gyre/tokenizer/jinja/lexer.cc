// Jinja lexer (see lexer.h for the whitespace rules it reproduces).
#include "gyre/tokenizer/jinja/lexer.h"

#include <algorithm>

#include "gyre/core/error.h"
#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer::jinja {

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::kText: return "text";
    case TokenType::kVarBegin: return "'{{'";
    case TokenType::kVarEnd: return "'}}'";
    case TokenType::kBlockBegin: return "'{%'";
    case TokenType::kBlockEnd: return "'%}'";
    case TokenType::kName: return "name";
    case TokenType::kString: return "string";
    case TokenType::kInt: return "integer";
    case TokenType::kFloat: return "float";
    case TokenType::kOp: return "operator";
    case TokenType::kEof: return "end of template";
  }
  return "?";
}

namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (unsigned char)c >= 0x80;
}
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Python's str.rstrip() on the text before a `{%-` / `{{-` / `{#-` tag.
std::string rstrip_ws(const std::string& s) {
  return pystr::strip(s, std::nullopt, /*left=*/false, /*right=*/true);
}

class Lexer {
 public:
  Lexer(std::string src, const LexerOptions& o, const std::string& origin)
      : src_(std::move(src)), opt_(o), origin_(origin) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      char kind = src_[tag + 1];  // '{', '%' or '#'
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool only_blank = std::all_of(text.begin() + long(l_pos), text.end(),
                                        [](char c) { return c == ' ' || c == '\t'; });
          if (only_blank) text.resize(l_pos);
        }
      }
      emit_text(text, pos);
      size_t body = tag + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        pos = lex_comment(tag, body, line_starting);
      } else if (kind == '%' && is_raw_begin(body)) {
        pos = lex_raw(tag, body, line_starting);
      } else {
        pos = lex_tag(tag, body, kind == '%', line_starting);
      }
    }
    out_.push_back({TokenType::kEof, "", loc_line(src_.size()), loc_col(src_.size())});
    return std::move(out_);
  }

 private:
  uint32_t loc_line(size_t off) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    return uint32_t(it - line_starts_.begin());
  }
  uint32_t loc_col(size_t off) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    return uint32_t(off - *(it - 1) + 1);
  }
  [[noreturn]] void fail(size_t off, const std::string& msg) const {
    GYRE_THROW(invalid_argument, "{}:{}:{}: template syntax error: {}", origin_, loc_line(off),
               loc_col(off), msg);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return std::string::npos;
  }

  void emit_text(const std::string& text, size_t off) {
    if (!text.empty()) out_.push_back({TokenType::kText, text, loc_line(off), loc_col(off)});
  }

  // After a tag end: `-` strips all following whitespace; trim_blocks eats one newline after a
  // block or comment end unless the end is `+%}`.
  size_t after_end(size_t end, char sign, bool block_like, bool& line_starting) {
    size_t p = end;
    if (sign == '-') {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (sign != '+' && block_like && opt_.trim_blocks && p < src_.size() &&
               src_[p] == '\n') {
      ++p;
    }
    line_starting = p > end && src_[p - 1] == '\n';
    return p;
  }

  size_t lex_comment(size_t tag, size_t body, bool& line_starting) {
    size_t e = src_.find("#}", body);
    if (e == std::string::npos) fail(tag, "comment '{#' is never closed; add '#}'");
    char sign = e > body && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : '\0';
    return after_end(e + 2, sign, true, line_starting);
  }

  // `{% raw %}` (optionally `{%- raw -%}`): everything up to `{% endraw %}` is text.
  bool is_raw_begin(size_t body) const {
    size_t p = body;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < src_.size() && is_name_char(src_[p])) return false;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0;
  }

  size_t lex_raw(size_t tag, size_t body, bool& line_starting) {
    size_t p = body;
    while (is_ws(src_[p])) ++p;
    p += 3;
    while (is_ws(src_[p])) ++p;
    if (src_[p] == '-') {  // `raw -%}` strips whitespace after the tag (no trim_blocks here)
      p += 3;
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else {
      p += 2;
    }
    size_t text_start = p;
    for (size_t i = src_.find("{%", p); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t q = i + 2;
      char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : '\0';
      if (sign) ++q;
      while (q < src_.size() && is_ws(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && is_ws(src_[q])) ++q;
      char end_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      std::string text = src_.substr(text_start, i - text_start);
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && opt_.lstrip_blocks) {
        size_t l_pos = text.rfind('\n');
        if (l_pos != std::string::npos && std::all_of(text.begin() + long(l_pos) + 1, text.end(),
                                                      [](char c) { return c == ' ' || c == '\t'; }))
          text.resize(l_pos + 1);
      }
      emit_text(text, text_start);
      return after_end(q + 2, end_sign, true, line_starting);
    }
    fail(tag, "'{% raw %}' is never closed; add '{% endraw %}'");
  }

  size_t lex_tag(size_t tag, size_t p, bool block, bool& line_starting) {
    out_.push_back(
        {block ? TokenType::kBlockBegin : TokenType::kVarBegin, "", loc_line(tag), loc_col(tag)});
    std::vector<char> balance;  // open brackets: an end tag inside them is not an end
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (p >= src_.size())
        fail(tag, block ? "block tag '{%' is never closed; add '%}'"
                        : "expression '{{' is never closed; add '}}'");
      if (balance.empty()) {
        const char* close = block ? "%}" : "}}";
        char sign = '\0';
        size_t q = p;
        if (src_[q] == '-' || (block && src_[q] == '+')) {
          sign = src_[q];
          ++q;
        }
        if (src_.compare(q, 2, close) == 0) {
          out_.push_back(
              {block ? TokenType::kBlockEnd : TokenType::kVarEnd, "", loc_line(p), loc_col(p)});
          return after_end(q + 2, sign, block, line_starting);
        }
      }
      p = lex_token(p, balance);
    }
  }

  size_t lex_token(size_t p, std::vector<char>& balance) {
    char c = src_[p];
    uint32_t line = loc_line(p), col = loc_col(p);
    if (is_name_start(c)) {
      size_t e = p;
      while (e < src_.size() && is_name_char(src_[e])) ++e;
      out_.push_back({TokenType::kName, src_.substr(p, e - p), line, col});
      return e;
    }
    if (is_digit(c)) return lex_number(p, line, col);
    if (c == '\'' || c == '"') return lex_string(p, line, col);
    static const char* kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : kOps2) {
      if (src_.compare(p, 2, op) == 0) {
        out_.push_back({TokenType::kOp, op, line, col});
        return p + 2;
      }
    }
    static const std::string kOps1 = "+-*/%~<>=()[]{},.:|";
    if (kOps1.find(c) != std::string::npos) {
      if (c == '(' || c == '[' || c == '{') balance.push_back(c);
      if (c == ')' || c == ']' || c == '}') {
        char want = c == ')' ? '(' : (c == ']' ? '[' : '{');
        if (balance.empty()) fail(p, fmt::format("unexpected '{}' (brackets do not match)", c));
        if (balance.back() != want) {
          char close = balance.back() == '(' ? ')' : (balance.back() == '[' ? ']' : '}');
          fail(p, fmt::format("unexpected '{}', expected '{}' (brackets do not match)", c, close));
        }
        balance.pop_back();
      }
      out_.push_back({TokenType::kOp, std::string(1, c), line, col});
      return p + 1;
    }
    fail(p, fmt::format("unexpected character '{}' inside a tag", pystr::repr(std::string(1, c))));
  }

  size_t lex_number(size_t p, uint32_t line, uint32_t col) {
    auto digits = [&](size_t q) {  // \d+(_\d+)*
      while (q < src_.size() && (is_digit(src_[q]) ||
                                 (src_[q] == '_' && q + 1 < src_.size() && is_digit(src_[q + 1]))))
        ++q;
      return q;
    };
    size_t e = digits(p);
    bool is_float = false;
    bool after_dot = p > 0 && src_[p - 1] == '.';  // `x.0` is an item access, not a float
    if (!after_dot && e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) {
      e = digits(e + 1);
      is_float = true;
    }
    if (!after_dot && e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t q = e + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && is_digit(src_[q])) {
        e = digits(q);
        is_float = true;
      }
    }
    std::string v;
    for (size_t i = p; i < e; ++i)
      if (src_[i] != '_') v.push_back(src_[i]);
    out_.push_back({is_float ? TokenType::kFloat : TokenType::kInt, v, line, col});
    return e;
  }

  // Python string literal escapes (Jinja decodes them with unicode-escape); an unknown escape
  // keeps its backslash, as Python does.
  size_t lex_string(size_t p, uint32_t line, uint32_t col) {
    char q = src_[p];
    std::string v;
    size_t i = p + 1;
    while (true) {
      if (i >= src_.size()) fail(p, "string literal is never closed; add the closing quote");
      char c = src_[i];
      if (c == q) break;
      if (c != '\\') {
        v.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) fail(p, "string literal is never closed; add the closing quote");
      char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': v.push_back('\n'); break;
        case 't': v.push_back('\t'); break;
        case 'r': v.push_back('\r'); break;
        case '\\': v.push_back('\\'); break;
        case '\'': v.push_back('\''); break;
        case '"': v.push_back('"'); break;
        case 'a': v.push_back('\a'); break;
        case 'b': v.push_back('\b'); break;
        case 'f': v.push_back('\f'); break;
        case 'v': v.push_back('\v'); break;
        case '\n': break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            char h = i + k < src_.size() ? src_[i + k] : '\0';
            int d = is_digit(h)              ? h - '0'
                    : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                             : -1;
            if (d < 0) fail(i - 2, fmt::format("truncated \\{} escape in string literal", e));
            cp = cp * 16 + uint32_t(d);
          }
          if (cp > 0x10FFFF) fail(i - 2, "\\U escape beyond U+10FFFF in string literal");
          i += n;
          pystr::append_utf8(v, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {  // octal, up to 3 digits
            uint32_t cp = uint32_t(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k)
              cp = cp * 8 + uint32_t(src_[i++] - '0');
            pystr::append_utf8(v, cp);
          } else {
            v.push_back('\\');
            v.push_back(e);
          }
      }
    }
    out_.push_back({TokenType::kString, v, line, col});
    return i + 1;
  }

  std::string src_;
  LexerOptions opt_;
  const std::string& origin_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const LexerOptions& options,
                            const std::string& origin) {
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {  // Jinja normalises newlines to "\n"
    if (source[i] == '\r') {
      src.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src.push_back(source[i]);
    }
  }
  if (!options.keep_trailing_newline && !src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src), options, origin).run();
}

}  // namespace gyre::tokenizer::jinja
