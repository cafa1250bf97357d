// Normalizer implementations (see normalizer.h).
#include "gyre/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/tokenizer/pcre_regex.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

using nlohmann::json;

void normalize_span(std::string_view s, UnicodeForm form, std::string& out) {
  int opts = UTF8PROC_STABLE;
  switch (form) {
    case UnicodeForm::nfc: opts |= UTF8PROC_COMPOSE; break;
    case UnicodeForm::nfd: opts |= UTF8PROC_DECOMPOSE; break;
    case UnicodeForm::nfkc: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case UnicodeForm::nfkd: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* dst = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    utf8proc_ssize_t(s.size()), &dst, utf8proc_option_t(opts));
  if (n < 0) {
    // Only reachable on invalid UTF-8, which the tokenizer repairs before normalizing.
    GYRE_THROW(internal, "utf8proc failed to normalize a {}-byte span: {}", s.size(),
               utf8proc_errmsg(n));
  }
  out.append(reinterpret_cast<const char*>(dst), size_t(n));
  free(dst);
}

std::string get_string(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    GYRE_THROW(invalid_argument, "{}: field \"{}\" must be a string", where, key);
  return it->get<std::string>();
}

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm f) : form_(f) {}
  void normalize(std::string& s) const override { s = unicode_normalize(s, form_); }

 private:
  UnicodeForm form_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> v) : items_(std::move(v)) {}
  void normalize(std::string& s) const override {
    for (auto& n : items_) n->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      char32_t c = utf8_next(s, i);
      if (c == 0x130) {  // Rust's char::to_lowercase: 'İ' -> "i̇" (full, not simple, mapping)
        out += "i\xCC\x87";
        continue;
      }
      utf8_append(out, char32_t(utf8proc_tolower(utf8proc_int32_t(c))));
    }
    s = std::move(out);
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  // HF prepends only to non-empty text.
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& where) {
    content_ = get_string(j, "content", where);
    auto it = j.find("pattern");
    if (it == j.end() || !it->is_object())
      GYRE_THROW(invalid_argument, "{}: Replace needs \"pattern\": {{\"String\"|\"Regex\": ...}}",
                 where);
    if (it->contains("Regex")) {
      regex_ = std::make_unique<Regex>(get_string(*it, "Regex", where + ".pattern"),
                                       where + ".pattern.Regex");
    } else {
      literal_ = get_string(*it, "String", where + ".pattern");
    }
  }
  void normalize(std::string& s) const override { s = replace_all(s); }

  std::string replace_all(std::string_view s) const {
    std::string out;
    if (regex_) {
      std::vector<std::pair<uint32_t, uint32_t>> m;
      regex_->find_all(s, m);
      size_t prev = 0;
      for (auto [b, e] : m) {
        out.append(s.substr(prev, b - prev));
        out += content_;
        prev = e;
      }
      out.append(s.substr(prev));
      return out;
    }
    if (literal_.empty()) return std::string(s);
    size_t prev = 0, p;
    while ((p = s.find(literal_, prev)) != std::string_view::npos) {
      out.append(s.substr(prev, p - prev));
      out += content_;
      prev = p + literal_.size();
    }
    out.append(s.substr(prev));
    return out;
  }

 private:
  std::string literal_, content_;
  std::unique_ptr<Regex> regex_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        char32_t c = utf8_next(s, i);
        if (!utf8proc_category_is_space(c)) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t st;
        char32_t c = utf8_prev(s, e, &st);
        if (!utf8proc_category_is_space(c)) break;
        e = st;
      }
    }
    s = s.substr(b, e - b);
  }

 private:
  // Rust's char::is_whitespace (the Unicode White_Space property).
  static bool utf8proc_category_is_space(char32_t c) {
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
  }
  bool left_, right_;
};

}  // namespace

std::string unicode_normalize(std::string_view s, UnicodeForm form) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    // Copy the ASCII run, holding back its last character when non-ASCII text follows.
    size_t j = i;
    while (j < n && static_cast<unsigned char>(s[j]) < 0x80) ++j;
    if (j == n) {
      out.append(s.substr(i));
      break;
    }
    size_t span_begin = j > i ? j - 1 : j;
    out.append(s.substr(i, span_begin - i));
    size_t k = j;
    while (k < n && static_cast<unsigned char>(s[k]) >= 0x80) ++k;
    normalize_span(s.substr(span_begin, k - span_begin), form, out);
    i = k;
  }
  return out;
}

std::unique_ptr<Normalizer> Normalizer::from_json(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    GYRE_THROW(invalid_argument, "{}: expected an object with a string \"type\"", where);
  std::string type = j["type"].get<std::string>();
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::nfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(get_string(j, "prepend", where));
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, where);
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(j.value("strip_left", true),
                                             j.value("strip_right", true));
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array())
      GYRE_THROW(invalid_argument, "{}: Sequence needs an array \"normalizers\"", where);
    std::vector<std::unique_ptr<Normalizer>> v;
    for (size_t k = 0; k < it->size(); ++k) {
      auto n = from_json((*it)[k], fmt::format("{}.normalizers[{}]", where, k));
      if (n) v.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(v));
  }
  GYRE_THROW(unsupported,
             "{}: normalizer type \"{}\" is not supported (supported: NFC, NFD, NFKC, NFKD, "
             "Lowercase, Prepend, Replace, Strip, Sequence)",
             where, type);
}

}  // namespace gyre::tokenizer
