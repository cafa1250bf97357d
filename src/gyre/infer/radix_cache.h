// Page-granular radix prefix cache (SGLang RadixCache semantics, keys aligned to whole pages as in
// mini-sglang's page-aligned radix cache): a tree keyed by token ids whose values are KV page ids.
//
// Invariants:
// - every node's key holds a whole number of pages: key.size() == pages.size() * page_size, and
//   the KV in pages[i] is the KV of key[i*P, (i+1)*P) after the node's ancestors' tokens;
// - the tree holds one PagePool reference on each page it stores;
// - lock_ref(node) = number of lock() calls whose handle is this node or a descendant (a lock pins
//   the whole path to the root); only leaves with lock_ref == 0 are evictable, oldest access first;
// - invalidate() (new weights) detaches the whole tree at once: unlocked nodes are freed at once,
//   locked ones become "retired" (never matched again) and are freed by their last unlock().
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "gyre/infer/kv_pool.h"

namespace gyre::infer {

class RadixCache {
 public:
  struct Node;
  struct Match {
    std::vector<int32_t> pages;  // cached pages of the matched prefix, in order
    int64_t num_tokens = 0;      // pages.size() * page_size
    Node* node = nullptr;        // handle for lock()/unlock(); the root when nothing matched
  };
  struct InsertResult {
    Node* node = nullptr;         // end of the inserted key (lock handle)
    int64_t existing_tokens = 0;  // leading tokens that were already cached
  };

  explicit RadixCache(PagePool& pool);
  ~RadixCache();
  RadixCache(const RadixCache&) = delete;
  RadixCache& operator=(const RadixCache&) = delete;

  // Longest cached prefix of `ids` made of whole pages (a partial page never matches). Splits a
  // node when the match ends inside it so the returned handle covers exactly the match. Refreshes
  // LRU.
  Match match_prefix(std::span<const int32_t> ids);
  void lock(Node* node);
  void unlock(Node* node);

  // Caches ids[0, num_pages * P) -> pages[0, num_pages). Where a prefix is already cached the
  // tree's pages win: pages[i] is replaced by the tree's page (the caller's reference moves to it
  // and its own duplicate page is unref'd), so identical prefixes share memory. Stops early
  // (caching less) only on a 64-bit key-hash collision.
  InsertResult insert(std::span<const int32_t> ids, std::vector<int32_t>& pages, int64_t num_pages);

  // Evicts least-recently-used unlocked leaves until `num_pages` pages went back to the free list
  // (or nothing evictable is left). Returns the pages freed.
  int64_t evict(int64_t num_pages);
  // Drops every cached page; refuses (returns false, changes nothing) while any node is locked.
  bool flush();
  // The cached KV is stale (weights changed): detach everything; see the header comment.
  void invalidate();

  int64_t page_size() const { return page_size_; }
  int64_t cached_pages() const { return cached_pages_; }  // held by the tree (live + retired)
  int64_t num_nodes() const { return num_nodes_; }
  bool any_locked() const;
  // Adds one to counts[page] for every page the tree holds (refcount audits in tests).
  void count_page_refs(std::vector<int32_t>& counts) const;
  // Structural audit; throws Error(internal) on the first violation.
  void check_consistency() const;

 private:
  Node* split(Node* node, int64_t at_pages);
  void delete_subtree(Node* node);
  void release_retired(Node* node);
  uint64_t page_hash(const int32_t* tokens) const;

  PagePool& pool_;
  int32_t page_size_;
  std::unique_ptr<Node> root_;
  std::vector<std::unique_ptr<Node>> retired_;  // detached top-level subtrees still locked
  uint64_t tick_ = 0;
  int64_t cached_pages_ = 0;
  int64_t num_nodes_ = 0;
};

struct RadixCache::Node {
  Node* parent = nullptr;
  std::vector<int32_t> key;
  std::vector<int32_t> pages;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> children;  // by hash of the first page
  int64_t lock_ref = 0;
  uint64_t last_access = 0;
  bool retired = false;
};

}  // namespace gyre::infer
