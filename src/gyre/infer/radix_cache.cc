// Page-granular radix prefix cache; see radix_cache.h for the invariants.
#include "gyre/infer/radix_cache.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "gyre/core/error.h"

namespace gyre::infer {

RadixCache::RadixCache(PagePool& pool)
    : pool_(pool), page_size_(pool.page_size()), root_(std::make_unique<Node>()) {}

RadixCache::~RadixCache() {
  for (auto& [h, child] : root_->children) delete_subtree(child.get());
  for (auto& r : retired_) delete_subtree(r.get());
}

// splitmix64-style mixing over the page's token ids: cheap and well spread; equality of the full
// page is still checked on every hit, so a collision can only cost a miss, never a wrong hit.
uint64_t RadixCache::page_hash(const int32_t* tokens) const {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int32_t i = 0; i < page_size_; ++i) {
    h ^= uint64_t(uint32_t(tokens[i])) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  return h;
}

// Number of leading whole pages of `node->key` equal to ids[pos, ...).
static int64_t common_pages(const RadixCache::Node* node, std::span<const int32_t> ids, int64_t pos,
                            int64_t page_size) {
  int64_t n_pages = int64_t(node->pages.size());
  int64_t avail = (int64_t(ids.size()) - pos) / page_size;
  int64_t n = std::min(n_pages, avail), i = 0;
  for (; i < n; ++i)
    if (std::memcmp(node->key.data() + i * page_size, ids.data() + pos + i * page_size,
                    size_t(page_size) * sizeof(int32_t)) != 0)
      break;
  return i;
}

// Splits `node` after `at_pages` pages: a new parent takes the first part; returns the new parent.
RadixCache::Node* RadixCache::split(Node* node, int64_t at_pages) {
  Node* parent = node->parent;
  uint64_t h = page_hash(node->key.data());
  auto it = parent->children.find(h);
  GYRE_CHECK(it != parent->children.end() && it->second.get() == node, "radix split: bad link");
  std::unique_ptr<Node> owned = std::move(it->second);
  auto mid = std::make_unique<Node>();
  mid->parent = parent;
  mid->key.assign(node->key.begin(), node->key.begin() + at_pages * page_size_);
  mid->pages.assign(node->pages.begin(), node->pages.begin() + at_pages);
  mid->lock_ref = node->lock_ref;  // every lock through `node` also passes through `mid`
  mid->last_access = node->last_access;
  mid->retired = node->retired;
  node->key.erase(node->key.begin(), node->key.begin() + at_pages * page_size_);
  node->pages.erase(node->pages.begin(), node->pages.begin() + at_pages);
  node->parent = mid.get();
  Node* mid_raw = mid.get();
  mid->children.emplace(page_hash(node->key.data()), std::move(owned));
  it->second = std::move(mid);
  ++num_nodes_;
  return mid_raw;
}

RadixCache::Match RadixCache::match_prefix(std::span<const int32_t> ids) {
  Match m;
  Node* node = root_.get();
  int64_t pos = 0;
  ++tick_;
  node->last_access = tick_;
  while (int64_t(ids.size()) - pos >= page_size_) {
    auto it = node->children.find(page_hash(ids.data() + pos));
    if (it == node->children.end()) break;
    Node* child = it->second.get();
    int64_t k = common_pages(child, ids, pos, page_size_);
    if (k == 0) break;  // hash collision
    if (k < int64_t(child->pages.size())) child = split(child, k);
    child->last_access = tick_;
    m.pages.insert(m.pages.end(), child->pages.begin(), child->pages.end());
    pos += k * page_size_;
    node = child;
  }
  m.num_tokens = pos;
  m.node = node;
  return m;
}

void RadixCache::lock(Node* node) {
  for (Node* n = node; n != nullptr; n = n->parent) ++n->lock_ref;
}

void RadixCache::unlock(Node* node) {
  for (Node* n = node; n != nullptr; n = n->parent) {
    GYRE_CHECK(n->lock_ref > 0, "radix unlock without a matching lock");
    --n->lock_ref;
  }
  if (node && node->retired) release_retired(node);
}

// Frees retired nodes from `node` upwards while they are unlocked leaves.
void RadixCache::release_retired(Node* node) {
  while (node && node->retired && node->lock_ref == 0 && node->children.empty()) {
    Node* parent = node->parent;
    for (int32_t p : node->pages) pool_.unref(p);
    cached_pages_ -= int64_t(node->pages.size());
    --num_nodes_;
    if (parent->retired) {
      parent->children.erase(page_hash(node->key.data()));
    } else {  // a detached top-level node
      auto it = std::find_if(retired_.begin(), retired_.end(),
                             [&](const std::unique_ptr<Node>& r) { return r.get() == node; });
      GYRE_CHECK(it != retired_.end(), "retired radix node not found");
      retired_.erase(it);
      return;
    }
    node = parent;
  }
}

RadixCache::InsertResult RadixCache::insert(std::span<const int32_t> ids,
                                            std::vector<int32_t>& pages, int64_t num_pages) {
  GYRE_CHECK(num_pages >= 0 && num_pages <= int64_t(pages.size()) &&
                 num_pages * page_size_ <= int64_t(ids.size()),
             "radix insert: {} pages for {} ids / {} pages", num_pages, ids.size(), pages.size());
  InsertResult r;
  Node* node = root_.get();
  ++tick_;
  int64_t pos = 0, page_idx = 0;
  std::span<const int32_t> key = ids.subspan(0, size_t(num_pages * page_size_));
  while (page_idx < num_pages) {
    uint64_t h = page_hash(key.data() + pos);
    auto it = node->children.find(h);
    if (it == node->children.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->parent = node;
      leaf->key.assign(key.begin() + pos, key.end());
      leaf->pages.assign(pages.begin() + page_idx, pages.begin() + num_pages);
      leaf->last_access = tick_;
      for (int32_t p : leaf->pages) pool_.ref(p);
      cached_pages_ += int64_t(leaf->pages.size());
      ++num_nodes_;
      node = leaf.get();
      node->parent->children.emplace(h, std::move(leaf));
      page_idx = num_pages;
      break;
    }
    Node* child = it->second.get();
    int64_t k = common_pages(child, key, pos, page_size_);
    if (k == 0) break;  // hash collision: cache only what we have
    if (k < int64_t(child->pages.size())) child = split(child, k);
    for (int64_t i = 0; i < k; ++i) {
      int32_t& mine = pages[size_t(page_idx + i)];
      int32_t tree = child->pages[size_t(i)];
      if (mine != tree) {
        pool_.ref(tree);
        pool_.unref(mine);
        mine = tree;
      }
    }
    child->last_access = tick_;
    r.existing_tokens += k * page_size_;
    pos += k * page_size_;
    page_idx += k;
    node = child;
  }
  r.node = node;
  return r;
}

int64_t RadixCache::evict(int64_t num_pages) {
  if (num_pages <= 0) return 0;
  using Item = std::pair<uint64_t, Node*>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n != root_.get() && n->children.empty() && n->lock_ref == 0)
      heap.emplace(n->last_access, n);
    for (auto& [h, c] : n->children) stack.push_back(c.get());
  }
  int64_t freed = 0;
  while (freed < num_pages && !heap.empty()) {
    Node* n = heap.top().second;
    heap.pop();
    Node* parent = n->parent;
    for (int32_t p : n->pages) {
      if (pool_.refcount(p) == 1) ++freed;
      pool_.unref(p);
    }
    cached_pages_ -= int64_t(n->pages.size());
    --num_nodes_;
    parent->children.erase(page_hash(n->key.data()));
    if (parent != root_.get() && parent->children.empty() && parent->lock_ref == 0)
      heap.emplace(parent->last_access, parent);
  }
  return freed;
}

void RadixCache::delete_subtree(Node* node) {
  for (auto& [h, c] : node->children) delete_subtree(c.get());
  node->children.clear();
  for (int32_t p : node->pages) pool_.unref(p);
  cached_pages_ -= int64_t(node->pages.size());
  --num_nodes_;
}

bool RadixCache::any_locked() const {
  if (!retired_.empty()) return true;
  for (auto& [h, c] : root_->children)
    if (c->lock_ref > 0) return true;
  return false;
}

bool RadixCache::flush() {
  if (any_locked()) return false;
  for (auto& [h, c] : root_->children) delete_subtree(c.get());
  root_->children.clear();
  return true;
}

void RadixCache::invalidate() {
  // Unlocked subtrees go now (a node with lock_ref 0 has no locked descendant); locked nodes are
  // marked retired and detached from the root so that no new request can match stale KV.
  std::vector<Node*> stack;
  for (auto& [h, c] : root_->children) {
    if (c->lock_ref == 0) {
      delete_subtree(c.get());
    } else {
      stack.push_back(c.get());
      retired_.push_back(std::move(c));
    }
  }
  root_->children.clear();
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    n->retired = true;
    for (auto it = n->children.begin(); it != n->children.end();) {
      if (it->second->lock_ref == 0) {
        delete_subtree(it->second.get());
        it = n->children.erase(it);
      } else {
        stack.push_back(it->second.get());
        ++it;
      }
    }
  }
}

void RadixCache::count_page_refs(std::vector<int32_t>& counts) const {
  std::vector<const Node*> stack{root_.get()};
  for (auto& r : retired_) stack.push_back(r.get());
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    for (int32_t p : n->pages) ++counts[size_t(p)];
    for (auto& [h, c] : n->children) stack.push_back(c.get());
  }
}

void RadixCache::check_consistency() const {
  int64_t nodes = 0, pages = 0;
  std::vector<const Node*> stack{root_.get()};
  for (auto& r : retired_) {
    GYRE_CHECK(r->retired && r->lock_ref > 0, "detached radix node neither retired nor locked");
    stack.push_back(r.get());
  }
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (n != root_.get()) {
      ++nodes;
      pages += int64_t(n->pages.size());
      GYRE_CHECK(!n->pages.empty(), "empty radix node");
      GYRE_CHECK(n->key.size() == n->pages.size() * size_t(page_size_),
                 "radix node key {} tokens vs {} pages", n->key.size(), n->pages.size());
      for (int32_t p : n->pages)
        GYRE_CHECK(pool_.refcount(p) >= 1, "radix node holds free page {}", p);
      if (n->retired) GYRE_CHECK(n->lock_ref > 0, "retired radix node left unlocked");
    }
    int64_t child_locks = 0;
    for (auto& [h, c] : n->children) {
      GYRE_CHECK(c->parent == n, "radix child with a wrong parent link");
      GYRE_CHECK(h == page_hash(c->key.data()), "radix child under a wrong hash");
      child_locks += c->lock_ref;
      stack.push_back(c.get());
    }
    if (n != root_.get())
      GYRE_CHECK(n->lock_ref >= child_locks, "radix lock_ref {} below children's {}", n->lock_ref,
                 child_locks);
  }
  GYRE_CHECK(nodes == num_nodes_, "radix node count {} vs tracked {}", nodes, num_nodes_);
  GYRE_CHECK(pages == cached_pages_, "radix page count {} vs tracked {}", pages, cached_pages_);
}

}  // namespace gyre::infer
