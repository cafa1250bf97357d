#include "gyre/rl/trainer/dp_balance.h"

#include <algorithm>
#include <numeric>
#include <queue>

#include "gyre/core/error.h"

namespace gyre::rl {

namespace {

// A partial solution: k parts ordered heaviest first.
struct Partial {
  std::vector<std::vector<int64_t>> parts;
  std::vector<int64_t> sums;
  int64_t order = 0;  // creation order: the tie-break that keeps the merge deterministic
  int64_t spread() const { return sums.front() - sums.back(); }
};

// Orders the parts heaviest first (ties: the part whose smallest index is smaller first).
void sort_parts(Partial& p) {
  const size_t k = p.parts.size();
  std::vector<size_t> idx(k);
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (p.sums[a] != p.sums[b]) return p.sums[a] > p.sums[b];
    return *std::min_element(p.parts[a].begin(), p.parts[a].end()) <
           *std::min_element(p.parts[b].begin(), p.parts[b].end());
  });
  Partial q;
  for (size_t i : idx) q.parts.push_back(std::move(p.parts[i])), q.sums.push_back(p.sums[i]);
  p.parts = std::move(q.parts);
  p.sums = std::move(q.sums);
}

// The heap's order: the largest spread first, then the earliest created.
struct BySpread {
  bool operator()(const Partial& a, const Partial& b) const {
    if (a.spread() != b.spread()) return a.spread() < b.spread();
    return a.order > b.order;
  }
};

}  // namespace

std::vector<std::vector<int64_t>> balanced_partitions(const std::vector<int64_t>& costs, int k) {
  const int64_t n = int64_t(costs.size());
  if (k < 1 || n % k != 0)
    GYRE_THROW(invalid_argument, "balanced_partitions: {} items do not split into {} equal parts",
               n, k);
  for (int64_t c : costs)
    if (c < 0) GYRE_THROW(invalid_argument, "balanced_partitions: negative cost {}", c);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(k));
  if (n == 0) return out;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return costs[size_t(a)] > costs[size_t(b)]; });
  std::priority_queue<Partial, std::vector<Partial>, BySpread> heap;
  int64_t created = 0;
  for (int64_t c = 0; c < n; c += k) {
    Partial p;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = idx[size_t(c + j)];
      p.parts.push_back({i});
      p.sums.push_back(costs[size_t(i)]);
    }
    sort_parts(p);
    p.order = created++;
    heap.push(std::move(p));
  }
  while (heap.size() > 1) {
    Partial a = heap.top();
    heap.pop();
    Partial b = heap.top();
    heap.pop();
    // a's heaviest part takes b's lightest, and so on: the differencing step.
    Partial m;
    for (int j = 0; j < k; ++j) {
      std::vector<int64_t> part = std::move(a.parts[size_t(j)]);
      const auto& other = b.parts[size_t(k - 1 - j)];
      part.insert(part.end(), other.begin(), other.end());
      m.parts.push_back(std::move(part));
      m.sums.push_back(a.sums[size_t(j)] + b.sums[size_t(k - 1 - j)]);
    }
    sort_parts(m);
    m.order = created++;
    heap.push(std::move(m));
  }
  Partial last = heap.top();
  for (int j = 0; j < k; ++j) {
    out[size_t(j)] = std::move(last.parts[size_t(j)]);
    std::sort(out[size_t(j)].begin(), out[size_t(j)].end());
  }
  return out;
}

}  // namespace gyre::rl
