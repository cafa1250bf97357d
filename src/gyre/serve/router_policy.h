// Load-balancing policies of `gyre router`, after sgl-router / SMG (reference/sglang-api.md §3.3):
//   round_robin        counter over healthy workers;
//   power_of_two       two distinct random healthy workers, the one with fewer requests in flight;
//   consistent_hashing routing key (X-SMG-Routing-Key, else authorization / x-forwarded-for /
//                      cookie) hashed onto a ring of worker hashes (virtual nodes), first healthy
//                      worker clockwise: a key stays on its worker while that worker is healthy;
//   cache_aware        if loads are imbalanced (max-min > abs_threshold AND max > min*rel), the
//                      least-loaded worker; else the worker owning the longest prefix match of the
//                      request text in an approximate radix tree when match_rate > threshold, else
//                      the least-loaded worker (ties: smallest tree). The text is then inserted
//                      under the chosen worker.
// A request that carries a routing key is routed by the hash ring under every policy (session
// affinity: slime sends the sample's session id in X-SMG-Routing-Key).
//
// Invariants: the tree is byte-level and multi-tenant (each node records, per worker, when it was
// last routed through it); a tenant's size is the number of bytes of nodes it owns; evict() trims
// each tenant to max_size by dropping its least recently used leaves; remove_tenant() forgets a
// worker entirely. All methods are thread-safe.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gyre::serve {

class ApproxRadixTree {
 public:
  ApproxRadixTree();
  ~ApproxRadixTree();
  void insert(std::string_view text, int32_t tenant);
  struct Match {
    size_t matched = 0;   // bytes of `text` matched
    int32_t tenant = -1;  // the most recent tenant at the deepest matched point (-1: none)
  };
  // Only tenants in `allowed` (healthy workers) count; empty = all.
  Match prefix_match(std::string_view text, const std::vector<int32_t>& allowed = {}) const;
  void remove_tenant(int32_t tenant);
  void evict(size_t max_size_per_tenant);
  size_t tenant_size(int32_t tenant) const;
  size_t node_count() const;

  struct Node;

 private:
  mutable std::mutex mu_;
  std::unique_ptr<Node> root_;
  std::unordered_map<int32_t, size_t> sizes_;
  uint64_t clock_ = 0;  // logical time: larger = more recent
};

enum class PolicyKind { round_robin, power_of_two, cache_aware, consistent_hashing, random };
// Throws gyre::Error(invalid_argument) naming the accepted values.
PolicyKind parse_policy(const std::string& name);
const char* policy_name(PolicyKind k);

struct PolicyConfig {
  PolicyKind kind = PolicyKind::cache_aware;
  double cache_threshold = 0.3;
  int64_t balance_abs_threshold = 10;  // slime's router defaults
  double balance_rel_threshold = 1.2;
  size_t max_tree_size = size_t(1) << 26;
};

struct Candidate {
  int32_t id;       // stable worker number
  std::string url;  // hashed onto the ring
  int64_t load;     // requests in flight through this router
};

class RoutingPolicy {
 public:
  explicit RoutingPolicy(PolicyConfig cfg);
  // Picks one of `healthy` (non-empty). `text` is the routing text (may be empty), `key` the
  // session routing key (may be empty). `cache_hit` reports whether a cache-aware match decided.
  int32_t select(const std::vector<Candidate>& healthy, std::string_view text, std::string_view key,
                 bool* cache_hit = nullptr);
  void remove_worker(int32_t id) { tree_.remove_tenant(id); }
  void evict() { tree_.evict(cfg_.max_tree_size); }
  const PolicyConfig& config() const { return cfg_; }
  const ApproxRadixTree& tree() const { return tree_; }

 private:
  int32_t by_hash(const std::vector<Candidate>& healthy, std::string_view key) const;
  PolicyConfig cfg_;
  ApproxRadixTree tree_;
  std::atomic<uint64_t> rr_{0};
  std::mutex rng_mu_;
  std::mt19937_64 rng_{0x9e3779b97f4a7c15ull};
};

uint64_t fnv1a64(std::string_view s);

}  // namespace gyre::serve
