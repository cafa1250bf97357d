// PCRE2 wrapper (see pcre_regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "gyre/tokenizer/pcre_regex.h"

#include <pcre2.h>

#include "gyre/core/error.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

// Per-thread match state: match data and a JIT stack large enough for long runs of one class
// (the default 32 KiB stack can be too small for pathological inputs).
struct ThreadMatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatchState() {
    md = pcre2_match_data_create(32, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (stack) pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    if (stack) pcre2_jit_stack_free(stack);
  }
};
ThreadMatchState& thread_state() {
  thread_local ThreadMatchState st;
  return st;
}

// Oniguruma's \s (what HF compiles patterns with) is Unicode White_Space; PCRE2's \s with UCP
// also matches U+180E (Mongolian vowel separator, no longer White_Space since Unicode 6.3).
constexpr const char* kOnigSpace =
    "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Rewrites \s and \S (outside character classes) and \s (inside them) to Oniguruma's set.
std::string translate_onig(const std::string& p) {
  std::string out;
  bool in_class = false;
  size_t class_start = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      if (e == 's') {
        out += in_class ? std::string(kOnigSpace) : "[" + std::string(kOnigSpace) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kOnigSpace) + "]";
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = i + 1;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i], class_start = i + 1;
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:name:]
      size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']' && i != class_start) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  const std::string translated = translate_onig(pattern);
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    GYRE_THROW(invalid_argument,
               "{}: cannot compile regex /{}/ at offset {}: {} (the pattern must be a valid "
               "PCRE2/Oniguruma regex)",
               where, pattern, err_off, reinterpret_cast<const char*>(buf));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  auto& st = thread_state();
  auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  size_t last_end = SIZE_MAX;
  while (pos <= s.size()) {
    int rc = jit_
                 ? pcre2_jit_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, st.md, st.mctx)
                 : pcre2_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, st.md, st.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0 && jit_) {
      // JIT resource limit on a pathological input: the interpreter keeps its frames on the heap.
      rc = pcre2_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.md,
                       st.mctx);
      if (rc == PCRE2_ERROR_NOMATCH) break;
    }
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof(buf));
      GYRE_THROW(internal, "regex /{}/ failed on a {}-byte input at offset {}: {}", pattern_,
                 s.size(), pos, reinterpret_cast<const char*>(buf));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
    size_t b = ov[0], e = ov[1];
    if (b == e) {
      // Empty match: keep it unless it touches the previous match, then step one character.
      if (b != last_end) out.emplace_back(uint32_t(b), uint32_t(e));
      if (b >= s.size()) break;
      pos = b + utf8_char_len(static_cast<unsigned char>(s[b]));
      continue;
    }
    out.emplace_back(uint32_t(b), uint32_t(e));
    last_end = e;
    pos = e;
  }
}

std::string regex_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/#& ").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace gyre::tokenizer
