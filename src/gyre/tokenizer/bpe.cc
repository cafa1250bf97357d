// BPE model (see bpe.h). The merge loop follows HF's Word::merge_all: among the current adjacent
// pairs, the one with the lowest merge rank is merged first, ties going to the leftmost position.
#include "gyre/tokenizer/bpe.h"

#include <climits>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "gyre/core/error.h"
#include "gyre/core/thread_pool.h"
#include "gyre/tokenizer/byte_level.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {

// Bounded pre-token -> ids cache, sharded by hash so that encode_batch threads rarely contend. A
// full shard is cleared (HF's cache instead stops inserting; clearing adapts to a new corpus).
class WordCache {
 public:
  static constexpr size_t kShards = 64;
  static constexpr size_t kShardCapacity = 2048;
  static constexpr size_t kMaxWordBytes = 256;

  bool lookup(std::string_view w, uint64_t h, std::vector<int32_t>& out) {
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lk(s.mu);
    auto it = s.map.find(w);
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(std::string_view w, uint64_t h, const int32_t* ids, size_t n) {
    Shard& s = shards_[h % kShards];
    std::lock_guard<std::mutex> lk(s.mu);
    if (s.map.size() >= kShardCapacity) s.map.clear();
    s.map.emplace(std::string(w), std::vector<int32_t>(ids, ids + n));
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return hash_bytes(s); }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, Eq> map;
  };
  std::array<Shard, kShards> shards_;
};

BpeModel::~BpeModel() = default;

BpeModel::BpeModel(BpeConfig cfg) {
  int32_t max_id = -1;
  for (auto& [tok, id] : cfg.vocab) {
    if (id < 0)
      GYRE_THROW(invalid_argument, "tokenizer.json: model.vocab[\"{}\"] has negative id {}", tok,
                 id);
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(size_t(max_id + 1), std::string());
  has_token_.assign(size_t(max_id + 1), 0);
  vocab_.reserve(cfg.vocab.size());
  if (cfg.byte_level) raw_vocab_.reserve(cfg.vocab.size());
  // The two maps are independent: build them concurrently.
  gyre::parallel_for(2, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      if (task == 0) {
        for (const auto& [tok, id] : cfg.vocab) vocab_.insert(tok, id);
      } else if (cfg.byte_level) {
        // Spellings outside the byte alphabet can never come out of a byte-level pre-token.
        for (const auto& [tok, id] : cfg.vocab)
          if (auto raw = byte_level_decode(tok)) raw_vocab_.insert(*raw, id);
      }
    }
  });
  for (auto& [tok, id] : cfg.vocab) {
    id_to_token_[size_t(id)] = std::move(tok);
    has_token_[size_t(id)] = 1;
  }
  cfg.vocab.clear();
  cfg.vocab.shrink_to_fit();

  byte_ids_.fill(-1);
  fallback_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    utf8_append(spelled, byte_to_char(uint8_t(b)));
    if (cfg.byte_level) byte_ids_[size_t(b)] = vocab_.find(spelled);
    fallback_ids_[size_t(b)] = vocab_.find(fmt::format("<0x{:02X}>", b));
  }
  if (cfg.unk_token) unk_id_ = vocab_.find(*cfg.unk_token);

  // Merges: rank = position in the list; the merged token must be in the vocab. The three vocab
  // lookups per merge are read-only, so they run on the thread pool; insertion stays sequential
  // (a later duplicate pair overwrites an earlier one, as HF's HashMap collect does).
  const std::string& prefix = cfg.continuing_subword_prefix;
  struct Resolved {
    int32_t a, b, merged;
  };
  std::vector<Resolved> resolved(cfg.merges.size());
  gyre::parallel_for(int64_t(cfg.merges.size()), 8192, [&](int64_t lo, int64_t hi) {
    std::string merged;
    for (int64_t r = lo; r < hi; ++r) {
      const auto& [a, b] = cfg.merges[size_t(r)];
      Resolved& x = resolved[size_t(r)];
      x.a = vocab_.find(a);
      x.b = vocab_.find(b);
      merged.assign(a);
      merged += (!prefix.empty() && b.compare(0, prefix.size(), prefix) == 0)
                    ? std::string_view(b).substr(prefix.size())
                    : std::string_view(b);
      x.merged = vocab_.find(merged);
    }
  });
  merges_.reserve(cfg.merges.size());
  for (size_t r = 0; r < cfg.merges.size(); ++r) {
    const auto& [a, b] = cfg.merges[r];
    const Resolved& x = resolved[r];
    if (x.a < 0 || x.b < 0)
      GYRE_THROW(invalid_argument,
                 "tokenizer.json: model.merges[{}] = \"{} {}\": token \"{}\" is not in model.vocab "
                 "(the merges and vocab do not belong together)",
                 r, a, b, x.a < 0 ? a : b);
    if (x.merged < 0)
      GYRE_THROW(invalid_argument,
                 "tokenizer.json: model.merges[{}] = \"{} {}\": the merged token is not in "
                 "model.vocab",
                 r, a, b);
    merges_.insert(x.a, x.b, {int32_t(r), x.merged});
  }
  num_merges_ = cfg.merges.size();
  cfg.merges.clear();
  cfg.merges.shrink_to_fit();
  cfg_ = std::move(cfg);
  if (cfg_.use_cache) cache_ = std::make_unique<WordCache>();
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  int32_t id = vocab_.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= id_to_token_.size() || !has_token_[size_t(id)]) return nullptr;
  return &id_to_token_[size_t(id)];
}

void BpeModel::initial_symbols(std::string_view w, std::vector<int32_t>& syms) const {
  const bool affixes = !cfg_.continuing_subword_prefix.empty() || !cfg_.end_of_word_suffix.empty();
  if (cfg_.byte_level && !affixes) {
    bool all = true;
    for (unsigned char b : w) {
      int32_t id = byte_ids_[b];
      all &= id >= 0;
      syms.push_back(id);
    }
    if (all) return;
    syms.clear();  // a byte missing from the vocab: take the general path (unk / fallback)
  }
  int32_t unk = -1;  // pending unk (fuse_unk merges consecutive unknowns)
  std::string s;
  size_t i = 0;
  while (i < w.size()) {
    size_t b = i;
    i += cfg_.byte_level ? 1 : utf8_char_len(static_cast<unsigned char>(w[i]));
    if (i > w.size()) i = w.size();
    std::string_view unit = w.substr(b, i - b);
    int32_t id;
    if (!affixes && !cfg_.byte_level) {
      id = vocab_.find(unit);
    } else {
      s.clear();
      if (b != 0) s += cfg_.continuing_subword_prefix;
      if (cfg_.byte_level)
        s += byte_level_encode(unit);
      else
        s += unit;
      if (i == w.size()) s += cfg_.end_of_word_suffix;
      id = vocab_.find(s);
    }
    if (id >= 0) {
      if (unk >= 0) syms.push_back(unk), unk = -1;
      syms.push_back(id);
      continue;
    }
    if (cfg_.byte_fallback) {
      std::string_view spelled = s.empty() ? unit : std::string_view(s);
      bool ok = true;
      for (unsigned char c : spelled) ok &= fallback_ids_[c] >= 0;
      if (ok) {
        if (unk >= 0) syms.push_back(unk), unk = -1;
        for (unsigned char c : spelled) syms.push_back(fallback_ids_[c]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (unk >= 0 && !cfg_.fuse_unk) syms.push_back(unk);
      unk = unk_id_;
    }
    // Without an unk token HF drops the unknown character.
  }
  if (unk >= 0) syms.push_back(unk);
}

void BpeModel::merge(std::vector<int32_t>& syms) const {
  size_t n = syms.size();
  if (n < 2) return;
  if (n > 96) return merge_long(syms);
  // packed[i] = rank << 32 | merged id for the pair (syms[i], syms[i+1]); no merge = max.
  constexpr uint64_t kNone = ~0ULL;
  uint64_t packed[96];
  auto lookup = [&](int32_t a, int32_t b) -> uint64_t {
    auto v = merges_.find(a, b);
    return v.rank < 0 ? kNone : (uint64_t(uint32_t(v.rank)) << 32) | uint32_t(v.id);
  };
  for (size_t i = 0; i + 1 < n; ++i) packed[i] = lookup(syms[i], syms[i + 1]);
  while (n > 1) {
    size_t best = 0;
    uint64_t best_v = packed[0];
    for (size_t i = 1; i + 1 < n; ++i)
      if (packed[i] < best_v) best_v = packed[i], best = i;
    if (best_v == kNone) break;
    syms[best] = int32_t(uint32_t(best_v));
    for (size_t i = best + 1; i + 1 < n; ++i) syms[i] = syms[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) packed[i] = packed[i + 1];
    --n;
    if (best > 0) packed[best - 1] = lookup(syms[best - 1], syms[best]);
    if (best + 1 < n) packed[best] = lookup(syms[best], syms[best + 1]);
  }
  syms.resize(n);
}

// Long words (runs of spaces, minified code): HF's heap of candidate merges over a linked list of
// symbols, O(n log n) instead of the quadratic scan.
void BpeModel::merge_long(std::vector<int32_t>& syms) const {
  const int n = int(syms.size());
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) prev[size_t(i)] = i - 1, next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  std::vector<uint8_t> alive(size_t(n), 1);
  struct Cand {
    int32_t rank;
    int pos;
    int32_t id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int pos) {
    int nx = next[size_t(pos)];
    if (nx < 0) return;
    auto v = merges_.find(syms[size_t(pos)], syms[size_t(nx)]);
    if (v.rank >= 0) heap.push({v.rank, pos, v.id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    if (!alive[size_t(c.pos)]) continue;
    int nx = next[size_t(c.pos)];
    if (nx < 0) continue;
    auto v = merges_.find(syms[size_t(c.pos)], syms[size_t(nx)]);
    if (v.rank != c.rank || v.id != c.id) continue;  // stale candidate
    syms[size_t(c.pos)] = c.id;
    alive[size_t(nx)] = 0;
    int nn = next[size_t(nx)];
    next[size_t(c.pos)] = nn;
    if (nn >= 0) prev[size_t(nn)] = c.pos;
    if (prev[size_t(c.pos)] >= 0) push(prev[size_t(c.pos)]);
    push(c.pos);
  }
  size_t k = 0;
  for (int i = 0; i >= 0 && i < n; i = next[size_t(i)]) syms[k++] = syms[size_t(i)];
  syms.resize(k);
}

void BpeModel::encode_word(std::string_view w, std::vector<int32_t>& out) const {
  if (w.empty()) return;
  if (cfg_.byte_level && w.size() == 1 && byte_ids_[static_cast<unsigned char>(w[0])] >= 0 &&
      cfg_.continuing_subword_prefix.empty() && cfg_.end_of_word_suffix.empty()) {
    out.push_back(byte_ids_[static_cast<unsigned char>(w[0])]);
    return;
  }
  if (cfg_.ignore_merges) {
    int32_t id = cfg_.byte_level ? raw_vocab_.find(w) : vocab_.find(w);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = cache_ && w.size() <= WordCache::kMaxWordBytes;
  uint64_t h = 0;
  if (cacheable) {
    h = hash_bytes(w);
    if (cache_->lookup(w, h, out)) return;
  }
  thread_local std::vector<int32_t> syms;
  syms.clear();
  initial_symbols(w, syms);
  merge(syms);
  out.insert(out.end(), syms.begin(), syms.end());
  if (cacheable) cache_->insert(w, h, syms.data(), syms.size());
}

}  // namespace gyre::tokenizer
