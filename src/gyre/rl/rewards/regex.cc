// PCRE2-backed Regex with Python re semantics (see regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "gyre/rl/rewards/regex.h"

#include <pcre2.h>

#include "gyre/core/error.h"

namespace gyre::rl::rewards {

std::string Regex::Match::group(size_t i) const {
  if (i >= spans.size() || !spans[i]) return "";
  return subject->substr(spans[i]->first, spans[i]->second - spans[i]->first);
}

Regex::Regex(const std::string& pattern, bool ignore_case) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
  if (ignore_case) opts |= PCRE2_CASELESS;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err,
                        &off, nullptr);
  if (!code_) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    GYRE_THROW(internal, "regex '{}' does not compile at offset {}: {}", pattern, off,
               reinterpret_cast<const char*>(buf));
  }
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::optional<Regex::Match> Regex::search(const std::string& s, size_t start) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const int rc =
      pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, nullptr);
  std::optional<Match> out;
  if (rc > 0) {
    Match m;
    m.subject = &s;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    uint32_t n = pcre2_get_ovector_count(md);
    for (uint32_t i = 0; i < n; ++i) {
      if (ov[2 * i] == PCRE2_UNSET)
        m.spans.emplace_back(std::nullopt);
      else
        m.spans.emplace_back(std::make_pair(size_t(ov[2 * i]), size_t(ov[2 * i + 1])));
    }
    out = std::move(m);
  } else if (rc != PCRE2_ERROR_NOMATCH) {
    pcre2_match_data_free(md);
    GYRE_THROW(internal, "regex '{}' failed on a {}-byte subject (pcre2 error {})", pattern_,
               s.size(), rc);
  }
  pcre2_match_data_free(md);
  return out;
}

std::vector<Regex::Match> Regex::find_all(const std::string& s) const {
  std::vector<Match> all;
  size_t pos = 0;
  while (pos <= s.size()) {
    auto m = search(s, pos);
    if (!m) break;
    const size_t b = m->begin(), e = m->end();
    all.push_back(std::move(*m));
    if (e == b) {
      // Empty match: step one UTF-8 code point forward, as Python does.
      pos = e + 1;
      while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
    } else {
      pos = e;
    }
  }
  return all;
}

std::string Regex::sub(const std::string& s,
                       const std::function<std::string(const Match&)>& fn) const {
  std::string out;
  size_t last = 0;
  for (const Match& m : find_all(s)) {
    out.append(s, last, m.begin() - last);
    out += fn(m);
    last = m.end();
  }
  out.append(s, last, std::string::npos);
  return out;
}

std::string Regex::sub(const std::string& s, const std::string& repl) const {
  return sub(s, [&](const Match& m) {
    std::string r;
    for (size_t i = 0; i < repl.size(); ++i) {
      if (repl[i] == '\\' && i + 1 < repl.size() && repl[i + 1] >= '0' && repl[i + 1] <= '9') {
        r += m.group(size_t(repl[i + 1] - '0'));
        ++i;
      } else {
        r += repl[i];
      }
    }
    return r;
  });
}

}  // namespace gyre::rl::rewards
