// Approximate radix tree and worker selection (router_policy.h).
#include "gyre/serve/router_policy.h"

#include <algorithm>
#include <functional>

#include "gyre/core/error.h"

namespace gyre::serve {

struct ApproxRadixTree::Node {
  std::string edge;
  Node* parent = nullptr;
  std::map<unsigned char, std::unique_ptr<Node>> children;
  std::unordered_map<int32_t, uint64_t> tenants;  // worker -> last access
};

ApproxRadixTree::ApproxRadixTree() : root_(std::make_unique<Node>()) {}
ApproxRadixTree::~ApproxRadixTree() = default;

static size_t common_prefix(std::string_view a, std::string_view b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

void ApproxRadixTree::insert(std::string_view text, int32_t tenant) {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t t = ++clock_;
  Node* node = root_.get();
  node->tenants[tenant] = t;
  sizes_.try_emplace(tenant, 0);
  size_t pos = 0;
  while (pos < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[pos]);
    auto it = node->children.find(c);
    if (it == node->children.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->edge = std::string(text.substr(pos));
      leaf->parent = node;
      leaf->tenants[tenant] = t;
      sizes_[tenant] += leaf->edge.size();
      node->children.emplace(c, std::move(leaf));
      return;
    }
    Node* child = it->second.get();
    size_t common = common_prefix(child->edge, text.substr(pos));
    if (common < child->edge.size()) {
      // Split: the matched part becomes a node owned by the same tenants (sizes do not change).
      auto mid = std::make_unique<Node>();
      mid->edge = child->edge.substr(0, common);
      mid->parent = node;
      mid->tenants = child->tenants;
      std::unique_ptr<Node> old = std::move(it->second);
      old->edge.erase(0, common);
      old->parent = mid.get();
      unsigned char oc = static_cast<unsigned char>(old->edge[0]);
      mid->children.emplace(oc, std::move(old));
      it->second = std::move(mid);
      child = it->second.get();
    }
    if (!child->tenants.count(tenant)) sizes_[tenant] += child->edge.size();
    child->tenants[tenant] = t;
    node = child;
    pos += common;
  }
}

ApproxRadixTree::Match ApproxRadixTree::prefix_match(std::string_view text,
                                                     const std::vector<int32_t>& allowed) const {
  std::lock_guard<std::mutex> lk(mu_);
  Match m;
  const Node* node = root_.get();
  size_t pos = 0;
  auto pick = [&](const Node* n) {
    int32_t best = -1;
    uint64_t best_t = 0;
    for (const auto& [ten, t] : n->tenants) {
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), ten) == allowed.end())
        continue;
      if (best < 0 || t > best_t) best = ten, best_t = t;
    }
    return best;
  };
  while (pos < text.size()) {
    auto it = node->children.find(static_cast<unsigned char>(text[pos]));
    if (it == node->children.end()) break;
    const Node* child = it->second.get();
    size_t common = common_prefix(child->edge, text.substr(pos));
    int32_t owner = pick(child);
    if (common == 0 || owner < 0) break;
    m.tenant = owner;
    pos += common;
    m.matched = pos;
    if (common < child->edge.size()) break;
    node = child;
  }
  return m;
}

void ApproxRadixTree::remove_tenant(int32_t tenant) {
  std::lock_guard<std::mutex> lk(mu_);
  std::function<void(Node*)> walk = [&](Node* n) {
    n->tenants.erase(tenant);
    for (auto it = n->children.begin(); it != n->children.end();) {
      walk(it->second.get());
      if (it->second->tenants.empty())
        it = n->children.erase(it);
      else
        ++it;
    }
  };
  walk(root_.get());
  sizes_.erase(tenant);
}

void ApproxRadixTree::evict(size_t max_size) {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& entry : sizes_) {
    const int32_t tenant = entry.first;  // not a structured binding: lambdas capture it below
    size_t& size = entry.second;
    while (size > max_size) {
      // The tenant's leaves: nodes it owns with no child it owns. Drop the least recent first.
      std::vector<Node*> leaves;
      std::function<void(Node*)> collect = [&](Node* n) {
        bool owned_child = false;
        for (auto& [c, ch] : n->children)
          if (ch->tenants.count(tenant)) {
            owned_child = true;
            collect(ch.get());
          }
        if (!owned_child && n != root_.get() && n->tenants.count(tenant)) leaves.push_back(n);
      };
      collect(root_.get());
      if (leaves.empty()) break;
      std::sort(leaves.begin(), leaves.end(),
                [&](Node* a, Node* b) { return a->tenants[tenant] < b->tenants[tenant]; });
      for (Node* leaf : leaves) {
        if (size <= max_size) break;
        leaf->tenants.erase(tenant);
        size -= std::min(size, leaf->edge.size());
      }
    }
  }
  // Prune nodes nobody owns any more.
  std::function<void(Node*)> prune = [&](Node* n) {
    for (auto it = n->children.begin(); it != n->children.end();) {
      prune(it->second.get());
      if (it->second->tenants.empty() && it->second->children.empty())
        it = n->children.erase(it);
      else
        ++it;
    }
  };
  prune(root_.get());
}

size_t ApproxRadixTree::tenant_size(int32_t tenant) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = sizes_.find(tenant);
  return it == sizes_.end() ? 0 : it->second;
}

size_t ApproxRadixTree::node_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::function<size_t(const Node*)> count = [&](const Node* n) {
    size_t c = 1;
    for (const auto& [k, ch] : n->children) c += count(ch.get());
    return c;
  };
  return count(root_.get());
}

PolicyKind parse_policy(const std::string& name) {
  if (name == "round_robin") return PolicyKind::round_robin;
  if (name == "power_of_two") return PolicyKind::power_of_two;
  if (name == "cache_aware") return PolicyKind::cache_aware;
  if (name == "consistent_hashing") return PolicyKind::consistent_hashing;
  if (name == "random") return PolicyKind::random;
  GYRE_THROW(invalid_argument,
             "--policy '{}' is not one of cache_aware, round_robin, power_of_two, "
             "consistent_hashing, random",
             name);
}

const char* policy_name(PolicyKind k) {
  switch (k) {
    case PolicyKind::round_robin: return "round_robin";
    case PolicyKind::power_of_two: return "power_of_two";
    case PolicyKind::cache_aware: return "cache_aware";
    case PolicyKind::consistent_hashing: return "consistent_hashing";
    case PolicyKind::random: return "random";
  }
  return "?";
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  // Final avalanche (splitmix64): FNV alone clusters short, similar keys on the ring.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

RoutingPolicy::RoutingPolicy(PolicyConfig cfg) : cfg_(cfg) {}

int32_t RoutingPolicy::by_hash(const std::vector<Candidate>& healthy, std::string_view key) const {
  // Ring of 64 virtual nodes per worker URL; the key goes to the first point clockwise. Only
  // healthy workers are on the ring, so a key moves only when its own worker leaves.
  constexpr int kVirtual = 64;
  uint64_t h = fnv1a64(key);
  int32_t best = healthy[0].id;
  uint64_t best_d = UINT64_MAX;
  for (const auto& c : healthy)
    for (int v = 0; v < kVirtual; ++v) {
      uint64_t p = fnv1a64(c.url + "#" + std::to_string(v));
      uint64_t d = p - h;  // clockwise distance (mod 2^64)
      if (d < best_d) best_d = d, best = c.id;
    }
  return best;
}

int32_t RoutingPolicy::select(const std::vector<Candidate>& healthy, std::string_view text,
                              std::string_view key, bool* cache_hit) {
  GYRE_CHECK(!healthy.empty(), "RoutingPolicy::select needs at least one healthy worker");
  if (cache_hit) *cache_hit = false;
  if (!key.empty() || cfg_.kind == PolicyKind::consistent_hashing) {
    if (!key.empty()) return by_hash(healthy, key);
  }
  auto least_loaded = [&] {
    const Candidate* best = &healthy[0];
    for (const auto& c : healthy) {
      if (c.load < best->load || (c.load == best->load && cfg_.kind == PolicyKind::cache_aware &&
                                  tree_.tenant_size(c.id) < tree_.tenant_size(best->id)))
        best = &c;
    }
    return best->id;
  };
  switch (cfg_.kind) {
    case PolicyKind::round_robin: return healthy[rr_++ % healthy.size()].id;
    case PolicyKind::random:
    case PolicyKind::consistent_hashing: {  // no key: random (SMG's last fallback)
      std::lock_guard<std::mutex> lk(rng_mu_);
      return healthy[rng_() % healthy.size()].id;
    }
    case PolicyKind::power_of_two: {
      if (healthy.size() == 1) return healthy[0].id;
      size_t a, b;
      {
        std::lock_guard<std::mutex> lk(rng_mu_);
        a = rng_() % healthy.size();
        b = rng_() % (healthy.size() - 1);
      }
      if (b >= a) ++b;
      return healthy[a].load <= healthy[b].load ? healthy[a].id : healthy[b].id;
    }
    case PolicyKind::cache_aware: {
      int64_t mx = healthy[0].load, mn = healthy[0].load;
      for (const auto& c : healthy) mx = std::max(mx, c.load), mn = std::min(mn, c.load);
      int32_t chosen;
      bool imbalanced = mx - mn > cfg_.balance_abs_threshold &&
                        double(mx) > double(mn) * cfg_.balance_rel_threshold;
      if (imbalanced || text.empty()) {
        chosen = least_loaded();
      } else {
        std::vector<int32_t> ids;
        for (const auto& c : healthy) ids.push_back(c.id);
        ApproxRadixTree::Match m = tree_.prefix_match(text, ids);
        double rate = double(m.matched) / double(text.size());
        if (rate > cfg_.cache_threshold && m.tenant >= 0) {
          chosen = m.tenant;
          if (cache_hit) *cache_hit = true;
        } else {
          chosen = least_loaded();
        }
      }
      if (!text.empty()) tree_.insert(text, chosen);
      return chosen;
    }
  }
  return healthy[0].id;
}

}  // namespace gyre::serve
