// Page pool and radix prefix cache: allocation/refcount rules, page-granular matching, splitting,
// shared-prefix dedup, LRU eviction, locking, flush and invalidation.
#include <gtest/gtest.h>

#include <numeric>

#include "gyre/core/error.h"
#include "gyre/infer/kv_pool.h"
#include "gyre/infer/radix_cache.h"

using namespace gyre;
using namespace gyre::infer;

static std::vector<int32_t> iota_ids(int n, int start = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(PagePool, AllocateRefUnrefFree) {
  PagePool pool(8, 4);
  EXPECT_EQ(pool.pages_for(0), 0);
  EXPECT_EQ(pool.pages_for(4), 1);
  EXPECT_EQ(pool.pages_for(5), 2);
  std::vector<int32_t> pages;
  ASSERT_TRUE(pool.allocate(5, pages));
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_FALSE(pool.allocate(4, pages));  // all or nothing
  EXPECT_EQ(pages.size(), 5u);
  pool.ref(pages[0]);
  pool.unref(pages[0]);
  EXPECT_EQ(pool.refcount(pages[0]), 1);
  for (int32_t p : pages) pool.unref(p);
  EXPECT_EQ(pool.num_free(), 8);
  pool.check_consistency();
  EXPECT_THROW(pool.unref(pages[0]), Error);  // double free is caught
}

TEST(PagePool, ParseRejectsBadGeometry) {
  EXPECT_THROW(PagePool(0, 16), Error);
  EXPECT_THROW(PagePool(4, 0), Error);
  EXPECT_THROW(KvStorage(0, 4, 16, 2, 8), Error);
}

TEST(KvStorage, ShapesPerLayer) {
  KvStorage kv(3, 5, 16, 2, 8);
  EXPECT_EQ(kv.num_layers(), 3);
  EXPECT_EQ(kv.k(2).shape(), (Shape{5, 16, 2, 8}));
  EXPECT_EQ(kv.v(0).shape(), (Shape{5, 16, 2, 8}));
  EXPECT_EQ(KvStorage::bytes_per_page(3, 16, 2, 8), 2 * 3 * 16 * 2 * 8 * 4);
}

TEST(RadixCache, MatchesWholePagesOnly) {
  PagePool pool(16, 4);
  RadixCache cache(pool);
  auto ids = iota_ids(10);
  std::vector<int32_t> pages;
  ASSERT_TRUE(pool.allocate(3, pages));
  cache.insert(ids, pages, 2);  // 8 tokens cached
  EXPECT_EQ(cache.cached_pages(), 2);
  auto m = cache.match_prefix(ids);
  EXPECT_EQ(m.num_tokens, 8);
  EXPECT_EQ(m.pages, (std::vector<int32_t>{pages[0], pages[1]}));
  // A prefix of 7 tokens only gets the first whole page.
  auto m7 = cache.match_prefix(std::span<const int32_t>(ids.data(), 7));
  EXPECT_EQ(m7.num_tokens, 4);
  EXPECT_EQ(cache.num_nodes(), 2);  // matching inside a node split it
  // A divergence inside the second page matches only the first.
  auto other = ids;
  other[6] = 99;
  EXPECT_EQ(cache.match_prefix(other).num_tokens, 4);
  cache.check_consistency();
  for (int32_t p : pages) pool.unref(p);
  EXPECT_TRUE(cache.flush());
  EXPECT_EQ(pool.num_free(), 16);
}

TEST(RadixCache, InsertSharesExistingPages) {
  PagePool pool(16, 2);
  RadixCache cache(pool);
  auto a = iota_ids(6);
  std::vector<int32_t> pa, pb;
  ASSERT_TRUE(pool.allocate(3, pa));
  cache.insert(a, pa, 3);
  auto b = a;
  b[5] = 42;  // same first two pages, different third
  ASSERT_TRUE(pool.allocate(3, pb));
  auto old_b = pb;
  auto r = cache.insert(b, pb, 3);
  EXPECT_EQ(r.existing_tokens, 4);
  EXPECT_EQ(pb[0], pa[0]);  // the caller now uses the tree's pages
  EXPECT_EQ(pb[1], pa[1]);
  EXPECT_EQ(pool.refcount(old_b[0]), 0);  // its duplicates went back to the pool
  EXPECT_EQ(pool.refcount(pa[0]), 3);     // pa holder + pb holder + tree
  EXPECT_EQ(cache.cached_pages(), 4);
  cache.check_consistency();
  for (int32_t p : pa) pool.unref(p);
  for (int32_t p : pb) pool.unref(p);
  EXPECT_EQ(pool.num_allocated(), 4);
  EXPECT_EQ(cache.evict(100), 4);
  EXPECT_EQ(pool.num_free(), 16);
}

TEST(RadixCache, EvictsLruLeavesAndRespectsLocks) {
  PagePool pool(8, 2);
  RadixCache cache(pool);
  std::vector<std::vector<int32_t>> seqs = {{1, 1, 2, 2}, {3, 3, 4, 4}, {5, 5, 6, 6}};
  for (auto& s : seqs) {
    std::vector<int32_t> pages;
    ASSERT_TRUE(pool.allocate(2, pages));
    cache.insert(s, pages, 2);
    for (int32_t p : pages) pool.unref(p);  // only the tree holds them now
  }
  EXPECT_EQ(pool.num_free(), 2);
  auto m0 = cache.match_prefix(seqs[0]);  // seqs[0] becomes most recent
  cache.lock(m0.node);
  auto m2 = cache.match_prefix(seqs[2]);
  (void)m2;
  EXPECT_EQ(cache.evict(2), 2);  // seqs[1] is the LRU leaf
  EXPECT_EQ(cache.match_prefix(seqs[1]).num_tokens, 0);
  EXPECT_EQ(cache.match_prefix(seqs[2]).num_tokens, 4);
  EXPECT_FALSE(cache.flush());     // seqs[0] is locked
  EXPECT_EQ(cache.evict(100), 2);  // only seqs[2] can go
  EXPECT_EQ(cache.match_prefix(seqs[0]).num_tokens, 4);
  cache.unlock(m0.node);
  EXPECT_TRUE(cache.flush());
  EXPECT_EQ(pool.num_free(), 8);
  cache.check_consistency();
}

TEST(RadixCache, InvalidateRetiresLockedNodes) {
  PagePool pool(8, 2);
  RadixCache cache(pool);
  auto a = iota_ids(4), b = iota_ids(4, 100);
  for (auto* s : {&a, &b}) {
    std::vector<int32_t> pages;
    ASSERT_TRUE(pool.allocate(2, pages));
    cache.insert(*s, pages, 2);
    for (int32_t p : pages) pool.unref(p);
  }
  auto m = cache.match_prefix(a);
  cache.lock(m.node);
  cache.invalidate();
  EXPECT_EQ(pool.num_free(), 6);                   // b went at once
  EXPECT_EQ(cache.match_prefix(a).num_tokens, 0);  // stale KV is never matched again
  cache.check_consistency();
  EXPECT_FALSE(cache.flush());
  cache.unlock(m.node);  // the last user frees the retired pages
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(cache.num_nodes(), 0);
  EXPECT_TRUE(cache.flush());
  cache.check_consistency();
}
