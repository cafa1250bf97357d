// Pre-tokenizer implementations (see pretokenizer.h). The split behaviours reproduce HF
// tokenizers' NormalizedString::split (normalizer.rs): the pattern yields alternating
// (range, is_match) spans covering the piece, which are then kept, isolated, merged or removed.
#include "gyre/tokenizer/pretokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "gyre/tokenizer/pcre_regex.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

using nlohmann::json;

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct Span {
  uint32_t b, e;
  bool is_match;
};

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Behavior parse_behavior(const json& j, const std::string& where) {
  std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  GYRE_THROW(invalid_argument,
             "{}.behavior: \"{}\" is not one of Removed, Isolated, MergedWithPrevious, "
             "MergedWithNext, Contiguous",
             where, b);
}

// Turns match ranges into alternating spans covering [0, n).
void spans_from_matches(const std::vector<std::pair<uint32_t, uint32_t>>& m, uint32_t n,
                        std::vector<Span>& out) {
  uint32_t prev = 0;
  for (auto [b, e] : m) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != n) out.push_back({prev, n, false});
}

// Spans for a per-character predicate: each matching character is its own match.
void spans_from_predicate(std::string_view s, const std::function<bool(char32_t)>& pred,
                          std::vector<Span>& out) {
  uint32_t last = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t b = i;
    char32_t c = utf8_next(s, i);
    if (pred(c)) {
      if (last < b) out.push_back({last, uint32_t(b), false});
      out.push_back({uint32_t(b), uint32_t(i), true});
      last = uint32_t(i);
    }
  }
  if (s.size() > last) out.push_back({last, uint32_t(s.size()), false});
}

// Applies the delimiter behaviour (HF's fold over the spans) and appends non-empty pieces.
void emit_spans(const Piece& piece, std::vector<Span>& spans, Behavior behavior, bool invert,
                std::vector<Piece>& out) {
  if (invert)
    for (auto& s : spans) s.is_match = !s.is_match;
  // After the fold, `is_match` means "remove this span".
  std::vector<Span> res;
  res.reserve(spans.size());
  switch (behavior) {
    case Behavior::removed: res = spans; break;
    case Behavior::isolated:
      for (auto s : spans) res.push_back({s.b, s.e, false});
      break;
    case Behavior::contiguous: {
      bool prev_match = false;
      for (auto s : spans) {
        if (s.is_match == prev_match && !res.empty())
          res.back().e = s.e;
        else
          res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::merged_with_previous: {
      bool prev_match = false;
      for (auto s : spans) {
        if (s.is_match && !prev_match && !res.empty())
          res.back().e = s.e;
        else
          res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        auto s = spans[k];
        if (s.is_match && !prev_match && !res.empty())
          res.back().b = s.b;
        else
          res.push_back({s.b, s.e, false});
        prev_match = s.is_match;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
  }
  for (auto s : res) {
    if (s.is_match || s.b == s.e) continue;
    out.push_back({piece.text.substr(s.b, s.e - s.b), piece.at_start && s.b == 0});
  }
}

// Shared loop: runs `split_one` on each piece, collecting into scratch, then swaps.
template <typename F>
void for_each_piece(Pieces& p, F&& split_one) {
  p.scratch.clear();
  for (const Piece& piece : p.items) split_one(piece, p.scratch);
  std::swap(p.items, p.scratch);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(const json& j, const std::string& where) {
    auto it = j.find("pattern");
    if (it == j.end() || !it->is_object() ||
        !((it->contains("Regex") && (*it)["Regex"].is_string()) ||
          (it->contains("String") && (*it)["String"].is_string())))
      GYRE_THROW(invalid_argument,
                 "{}.pattern: expected {{\"Regex\": \"...\"}} or {{\"String\": \"...\"}}", where);
    if (it->contains("Regex"))
      regex_ = std::make_unique<Regex>((*it)["Regex"].get<std::string>(), where + ".pattern.Regex");
    else
      literal_ = (*it)["String"].get<std::string>();
    behavior_ = parse_behavior(j.value("behavior", json("")), where);
    invert_ = j.value("invert", false);
  }
  void pre_tokenize(Pieces& p) const override {
    thread_local std::vector<std::pair<uint32_t, uint32_t>> m;
    thread_local std::vector<Span> spans;
    for_each_piece(p, [&](const Piece& piece, std::vector<Piece>& out) {
      m.clear();
      spans.clear();
      if (regex_) {
        regex_->find_all(piece.text, m);
      } else if (!literal_.empty()) {
        size_t pos = 0, f;
        while ((f = piece.text.find(literal_, pos)) != std::string_view::npos) {
          m.emplace_back(uint32_t(f), uint32_t(f + literal_.size()));
          pos = f + literal_.size();
        }
      }
      if (behavior_ == Behavior::isolated) {  // hot path (Qwen, Llama 3): no span bookkeeping
        uint32_t prev = 0, n = uint32_t(piece.text.size());
        auto push = [&](uint32_t b, uint32_t e) {
          if (b < e) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
        };
        for (auto [b, e] : m) {
          push(prev, b);
          push(b, e);
          prev = e;
        }
        push(prev, n);
        return;
      }
      spans_from_matches(m, uint32_t(piece.text.size()), spans);
      emit_spans(piece, spans, behavior_, invert_, out);
    });
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  explicit ByteLevelPreTokenizer(const json& j)
      : add_prefix_space_(j.value("add_prefix_space", true)),
        use_regex_(j.value("use_regex", true)) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel GPT-2 pattern");
  }
  void pre_tokenize(Pieces& p) const override {
    if (add_prefix_space_) {
      // HF prepends a space to every split that does not start with one.
      for (auto& piece : p.items)
        if (piece.text.empty() || piece.text[0] != ' ')
          piece.text = p.store(" " + std::string(piece.text));
    }
    if (!use_regex_) return;
    thread_local std::vector<std::pair<uint32_t, uint32_t>> m;
    for_each_piece(p, [&](const Piece& piece, std::vector<Piece>& out) {
      m.clear();
      regex_->find_all(piece.text, m);
      uint32_t prev = 0, n = uint32_t(piece.text.size());
      auto push = [&](uint32_t b, uint32_t e) {
        if (b < e) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
      };
      for (auto [b, e] : m) {
        push(prev, b);
        push(b, e);
        prev = e;
      }
      push(prev, n);
    });
  }
  bool byte_level() const override { return true; }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

// Splits on a per-character predicate with a fixed behaviour (Digits, WhitespaceSplit,
// Punctuation).
class PredicatePreTokenizer final : public PreTokenizer {
 public:
  PredicatePreTokenizer(std::function<bool(char32_t)> pred, Behavior b)
      : pred_(std::move(pred)), behavior_(b) {}
  void pre_tokenize(Pieces& p) const override {
    std::vector<Span> spans;
    for_each_piece(p, [&](const Piece& piece, std::vector<Piece>& out) {
      spans.clear();
      spans_from_predicate(piece.text, pred_, spans);
      emit_spans(piece, spans, behavior_, false, out);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  Behavior behavior_;
};

// Rust's char::is_whitespace (Unicode White_Space).
bool is_whitespace(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
// Rust's char::is_numeric: general categories Nd, Nl, No.
bool is_numeric(char32_t c) {
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}
// HF's is_punc: ASCII punctuation or a Unicode P* category.
bool is_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(const json& j, const std::string& where) {
    std::string rep = j.value("replacement", std::string("\xE2\x96\x81"));
    size_t i = 0;
    if (rep.empty() || (utf8_next(rep, i), i != rep.size()))
      GYRE_THROW(invalid_argument, "{}.replacement must be exactly one character, got \"{}\"",
                 where, rep);
    replacement_ = rep;
    std::string scheme;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      scheme = j["prepend_scheme"].get<std::string>();
    else
      scheme = j.value("add_prefix_space", true) ? "always" : "never";
    if (scheme != "always" && scheme != "never" && scheme != "first")
      GYRE_THROW(invalid_argument, "{}.prepend_scheme: \"{}\" is not always, never or first", where,
                 scheme);
    scheme_ = scheme;
    split_ = j.value("split", true);
  }
  void pre_tokenize(Pieces& p) const override {
    std::vector<Span> spans;
    for_each_piece(p, [&](const Piece& piece, std::vector<Piece>& out) {
      std::string s;
      s.reserve(piece.text.size() + 3);
      for (char c : piece.text) {
        if (c == ' ')
          s += replacement_;
        else
          s += c;
      }
      bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == "always" || (scheme_ == "first" && piece.at_start)))
        s.insert(0, replacement_);
      Piece np{p.store(std::move(s)), piece.at_start};
      if (!split_) {
        if (!np.text.empty()) out.push_back(np);
        return;
      }
      spans.clear();
      std::vector<std::pair<uint32_t, uint32_t>> m;
      size_t pos = 0, f;
      while ((f = np.text.find(replacement_, pos)) != std::string_view::npos) {
        m.emplace_back(uint32_t(f), uint32_t(f + replacement_.size()));
        pos = f + replacement_.size();
      }
      spans_from_matches(m, uint32_t(np.text.size()), spans);
      emit_spans(np, spans, Behavior::merged_with_next, false, out);
    });
  }

 private:
  std::string replacement_, scheme_;
  bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> v)
      : items_(std::move(v)) {}
  void pre_tokenize(Pieces& p) const override {
    for (auto& t : items_) t->pre_tokenize(p);
  }
  bool byte_level() const override { return !items_.empty() && items_.back()->byte_level(); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

}  // namespace

std::unique_ptr<PreTokenizer> PreTokenizer::from_json(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    GYRE_THROW(invalid_argument, "{}: expected an object with a string \"type\"", where);
  std::string type = j["type"].get<std::string>();
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(j, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(j);
  if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(j, where);
  if (type == "Digits")
    return std::make_unique<PredicatePreTokenizer>(is_numeric, j.value("individual_digits", false)
                                                                   ? Behavior::isolated
                                                                   : Behavior::contiguous);
  if (type == "WhitespaceSplit")
    return std::make_unique<PredicatePreTokenizer>(is_whitespace, Behavior::removed);
  if (type == "Punctuation") {
    Behavior b = j.contains("behavior") ? parse_behavior(j["behavior"], where) : Behavior::isolated;
    return std::make_unique<PredicatePreTokenizer>(is_punctuation, b);
  }
  if (type == "Whitespace") {
    // HF: split on \w+|[^\w\s]+, keeping the matches (Removed + invert).
    json s = {{"type", "Split"},
              {"pattern", {{"Regex", R"(\w+|[^\w\s]+)"}}},
              {"behavior", "Removed"},
              {"invert", true}};
    return std::make_unique<SplitPreTokenizer>(s, where);
  }
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array())
      GYRE_THROW(invalid_argument, "{}: Sequence needs an array \"pretokenizers\"", where);
    std::vector<std::unique_ptr<PreTokenizer>> v;
    for (size_t k = 0; k < it->size(); ++k) {
      auto t = from_json((*it)[k], fmt::format("{}.pretokenizers[{}]", where, k));
      if (!t) continue;
      if (!v.empty() && v.back()->byte_level())
        GYRE_THROW(unsupported,
                   "{}.pretokenizers[{}]: a pre-tokenizer after ByteLevel is not supported (gyre "
                   "runs BPE on raw bytes, so ByteLevel must come last)",
                   where, k);
      v.push_back(std::move(t));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(v));
  }
  GYRE_THROW(unsupported,
             "{}: pre-tokenizer type \"{}\" is not supported (supported: Split, ByteLevel, "
             "Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, Sequence)",
             where, type);
}

}  // namespace gyre::tokenizer
