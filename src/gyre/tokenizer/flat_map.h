// Open-addressing hash maps for the tokenizer's hot lookups: token text -> id (StringIdMap) and
// merge pair (left id, right id) -> (rank, merged id) (PairMap). Both are built once at load time
// and then only read, so concurrent lookups from many threads are safe. Linear probing,
// power-of-two capacity, load factor <= 1/2.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer {

inline uint64_t mix64(uint64_t x) {  // MurmurHash3's fmix64 finalizer
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0x87c37b91114253d5ULL);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ mix64(w)) * 0x9E3779B97F4A7C15ULL;
    p += 8;
    n -= 8;
  }
  uint64_t t = 0;
  std::memcpy(&t, p, n);
  return mix64(h ^ t ^ (uint64_t(n) << 59));
}

inline size_t pow2_capacity(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  return cap;
}

class StringIdMap {
 public:
  void reserve(size_t n) {
    slots_.assign(pow2_capacity(n), Slot{});
    mask_ = slots_.size() - 1;
    arena_.reserve(n * 8);  // typical BPE token length; avoids re-copying the arena as it grows
  }
  // Inserts or overwrites.
  void insert(std::string_view key, int32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{h, uint32_t(arena_.size()), uint32_t(key.size()), id};
        arena_.append(key);
        ++size_;
        return;
      }
      if (s.hash == h && key_of(s) == key) {
        s.id = id;
        return;
      }
    }
  }
  // Id of key, or -1.
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.hash == h && s.len == key.size() &&
          std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0)
        return s.id;
    }
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t off = 0, len = 0;
    int32_t id = -1;
  };
  std::string_view key_of(const Slot& s) const { return {arena_.data() + s.off, s.len}; }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.id < 0) continue;
      size_t i = s.hash & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0, size_ = 0;
};

class PairMap {
 public:
  struct Value {
    int32_t rank = -1, id = -1;
  };
  void reserve(size_t n) {
    slots_.assign(pow2_capacity(n), Slot{});
    mask_ = slots_.size() - 1;
  }
  // Inserts or overwrites (a later merge of the same pair wins, as in HF's HashMap collect).
  void insert(int32_t a, int32_t b, Value v) {
    if ((size_ + 1) * 2 > slots_.size()) {
      std::vector<Slot> old = std::move(slots_);
      reserve(old.empty() ? 8 : old.size());
      size_ = 0;
      for (const Slot& s : old)
        if (s.key != kEmpty) insert(int32_t(s.key >> 32), int32_t(uint32_t(s.key)), s.v);
    }
    uint64_t k = key(a, b);
    for (size_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.key == kEmpty) {
        s = Slot{k, v};
        ++size_;
        return;
      }
      if (s.key == k) {
        s.v = v;
        return;
      }
    }
  }
  Value find(int32_t a, int32_t b) const {
    if (slots_.empty()) return Value{};
    uint64_t k = key(a, b);
    for (size_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == k) return s.v;
      if (s.key == kEmpty) return Value{};
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  struct Slot {
    uint64_t key = kEmpty;
    Value v;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace gyre::tokenizer
