// Decoder implementations (see decoder.h); each mirrors the decode_chain of the HF decoder of the
// same name.
#include "gyre/tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "gyre/tokenizer/byte_level.h"
#include "gyre/tokenizer/pcre_regex.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

using nlohmann::json;

// All tokens -> bytes (a token with a character outside the byte alphabet, e.g. an added token
// like "<|im_end|>" containing a space, contributes its own UTF-8 bytes), then one lossy string.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      if (auto raw = byte_level_decode(t))
        bytes += *raw;
      else
        bytes += t;
    }
    tokens.assign(1, utf8_is_valid(bytes) ? std::move(bytes) : utf8_lossy(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(const json& j) {
    replacement_ = j.value("replacement", std::string("\xE2\x96\x81"));
    std::string scheme;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      scheme = j["prepend_scheme"].get<std::string>();
    else
      scheme = j.value("add_prefix_space", true) ? "always" : "never";
    strip_first_ = scheme != "never";
  }
  // Replacement chars become spaces, except in the first token where they are dropped.
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      size_t p = 0, f;
      while ((f = t.find(replacement_, p)) != std::string::npos) {
        out.append(t, p, f - p);
        if (!(i == 0 && strip_first_)) out += ' ';
        p = f + replacement_.size();
      }
      out.append(t, p, std::string::npos);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const json& j, const std::string& where) {
    auto it = j.find("pattern");
    if (it == j.end() || !it->is_object())
      GYRE_THROW(invalid_argument, "{}: Replace needs \"pattern\": {{\"String\"|\"Regex\": ...}}",
                 where);
    if (it->contains("Regex") && (*it)["Regex"].is_string())
      regex_ = std::make_unique<Regex>((*it)["Regex"].get<std::string>(), where + ".pattern");
    else if (it->contains("String") && (*it)["String"].is_string())
      literal_ = (*it)["String"].get<std::string>();
    else
      GYRE_THROW(invalid_argument, "{}.pattern: expected a String or Regex", where);
    if (!j.contains("content") || !j["content"].is_string())
      GYRE_THROW(invalid_argument, "{}: Replace needs a string \"content\"", where);
    content_ = j["content"].get<std::string>();
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::string out;
      if (regex_) {
        std::vector<std::pair<uint32_t, uint32_t>> m;
        regex_->find_all(t, m);
        size_t prev = 0;
        for (auto [b, e] : m) {
          out.append(t, prev, b - prev);
          out += content_;
          prev = e;
        }
        out.append(t, prev, std::string::npos);
      } else {
        if (literal_.empty()) continue;
        size_t p = 0, f;
        while ((f = t.find(literal_, p)) != std::string::npos) {
          out.append(t, p, f - p);
          out += content_;
          p = f + literal_.size();
        }
        out.append(t, p, std::string::npos);
      }
      t = std::move(out);
    }
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_, content_;
};

// "<0xAB>" tokens are gathered into bytes; a run that is not valid UTF-8 becomes one U+FFFD per
// byte (HF's ByteFallback, not from_utf8_lossy).
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t nbytes = 0;
    auto flush = [&] {
      if (!nbytes) return;
      if (utf8_is_valid(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < nbytes; ++k) out.emplace_back(kReplacementChar);
      }
      bytes.clear();
      nbytes = 0;
    };
    for (auto& t : tokens) {
      int b = parse_byte(t);
      if (b >= 0) {
        bytes.push_back(char(b));
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int parse_byte(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of one character per token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(const json& j, const std::string& where) {
    content_ = j.value("content", std::string(" "));
    if (content_.empty()) GYRE_THROW(invalid_argument, "{}: Strip needs a \"content\" char", where);
    start_ = j.value("start", size_t(0));
    stop_ = j.value("stop", size_t(0));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      size_t b = 0, e = t.size();
      for (size_t k = 0;
           k < start_ && e - b >= content_.size() && t.compare(b, content_.size(), content_) == 0;
           ++k)
        b += content_.size();
      for (size_t k = 0; k < stop_ && e - b >= content_.size() &&
                         t.compare(e - content_.size(), content_.size(), content_) == 0;
           ++k)
        e -= content_.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> v) : items_(std::move(v)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& d : items_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

}  // namespace

std::unique_ptr<Decoder> Decoder::from_json(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    GYRE_THROW(invalid_argument, "{}: expected an object with a string \"type\"", where);
  std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(j);
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, where);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(j, where);
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array())
      GYRE_THROW(invalid_argument, "{}: Sequence needs an array \"decoders\"", where);
    std::vector<std::unique_ptr<Decoder>> v;
    for (size_t k = 0; k < it->size(); ++k) {
      auto d = from_json((*it)[k], fmt::format("{}.decoders[{}]", where, k));
      if (d) v.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(v));
  }
  GYRE_THROW(unsupported,
             "{}: decoder type \"{}\" is not supported (supported: ByteLevel, Metaspace, Replace, "
             "ByteFallback, Fuse, Strip, Sequence)",
             where, type);
}

}  // namespace gyre::tokenizer
