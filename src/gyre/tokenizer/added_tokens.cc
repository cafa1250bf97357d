// AddedVocabulary (see added_tokens.h); the matching rules follow HF's
// AddedVocabulary::find_matches (added_vocabulary.rs).
#include "gyre/tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>

#include "gyre/core/error.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {
namespace {

bool is_whitespace(char32_t c) {  // Rust's char::is_whitespace
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace

bool is_word_char(char32_t c);  // defined below

void AddedVocabulary::Trie::add(std::string_view s, int32_t token) {
  if (nodes.empty()) nodes.emplace_back();
  if (s.empty()) return;
  first_byte[static_cast<unsigned char>(s[0])] = true;
  int32_t cur = 0;
  for (unsigned char c : s) {
    auto& nx = nodes[size_t(cur)].next;
    auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(c, int32_t(-1)),
                               [](auto& a, auto& b) { return a.first < b.first; });
    if (it != nx.end() && it->first == c) {
      cur = it->second;
    } else {
      int32_t id = int32_t(nodes.size());
      nx.insert(it, {c, id});
      nodes.emplace_back();
      cur = id;
    }
  }
  // A duplicated content keeps the first token (HF's map from content to token).
  if (nodes[size_t(cur)].token < 0) nodes[size_t(cur)].token = token;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::longest_at(std::string_view s, size_t i) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t cur = 0;
  for (size_t k = i; k < s.size(); ++k) {
    auto c = static_cast<unsigned char>(s[k]);
    auto& nx = nodes[size_t(cur)].next;
    auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(c, int32_t(-1)),
                               [](auto& a, auto& b) { return a.first < b.first; });
    if (it == nx.end() || it->first != c) break;
    cur = it->second;
    if (nodes[size_t(cur)].token >= 0) best = {k + 1 - i, nodes[size_t(cur)].token};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t k = 0; k < tokens_.size(); ++k) {
    const auto& t = tokens_[k];
    if (t.content.empty())
      GYRE_THROW(invalid_argument, "tokenizer.json: added_tokens[{}] (id {}) has empty content", k,
                 t.id);
    by_id_[t.id] = k;
    by_content_.emplace(t.content, k);
    tries_[t.normalized ? 1 : 0].add(t.content, int32_t(k));
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::split(std::string_view s, bool normalized_set,
                            std::vector<TextSplit>& out) const {
  const Trie& trie = tries_[normalized_set ? 1 : 0];
  if (trie.nodes.empty() || s.empty()) {
    out.push_back({0, s.size(), -1});
    return;
  }
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    // Leftmost-longest: the first position where any token starts, its longest token there.
    if (!trie.first_byte[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    auto [len, tok] = trie.longest_at(s, i);
    if (len == 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;  // matches never overlap
    const AddedToken& t = tokens_[size_t(tok)];
    if (t.single_word) {
      bool start_space = true, stop_space = true;
      if (start > 0) {
        size_t st;
        start_space = !is_word_char(utf8_prev(s, start, &st));
      }
      if (stop < s.size()) {
        size_t j = stop;
        stop_space = !is_word_char(utf8_next(s, j));
      }
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t st;
        if (!is_whitespace(utf8_prev(s, ns, &st))) break;
        ns = st;
      }
      start = std::max(ns, start_offset);  // spaces a previous match took are not taken again
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t j = stop;
        if (!is_whitespace(utf8_next(s, j))) break;
        stop = j;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
}

// HF's is_word_character: Rust's char::is_alphanumeric (letters and numbers) or '_'.
bool is_word_char(char32_t c) {
  if (c < 0x80) return std::isalnum(int(c)) || c == '_';
  auto cat = utf8proc_category(utf8proc_int32_t(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

}  // namespace gyre::tokenizer
