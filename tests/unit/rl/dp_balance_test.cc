// balanced_partitions (--balance-data): equal part sizes, every item exactly once, parts with
// nearly equal cost where contiguous slices are far apart, the same answer every call, and bad
// input refused.
#include "gyre/rl/trainer/dp_balance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "test_util.h"

namespace gyre::rl {
namespace {

std::vector<int64_t> sums(const std::vector<std::vector<int64_t>>& parts,
                          const std::vector<int64_t>& costs) {
  std::vector<int64_t> out;
  for (const auto& p : parts) {
    int64_t s = 0;
    for (int64_t i : p) s += costs[size_t(i)];
    out.push_back(s);
  }
  return out;
}

void expect_a_partition(const std::vector<std::vector<int64_t>>& parts, int64_t n, int k) {
  ASSERT_EQ(parts.size(), size_t(k));
  std::vector<int64_t> seen;
  for (const auto& p : parts) {
    EXPECT_EQ(int64_t(p.size()), n / k);
    EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
    seen.insert(seen.end(), p.begin(), p.end());
  }
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), int64_t(0));
  EXPECT_EQ(seen, all);
}

TEST(DpBalance, SmallCasesReachTheOptimum) {
  const std::vector<int64_t> c = {10, 9, 8, 7, 6, 5, 4, 3};
  auto two = balanced_partitions(c, 2);
  expect_a_partition(two, 8, 2);
  EXPECT_EQ(sums(two, c), (std::vector<int64_t>{26, 26}));
  auto four = balanced_partitions(c, 4);
  expect_a_partition(four, 8, 4);
  EXPECT_EQ(sums(four, c), (std::vector<int64_t>{13, 13, 13, 13}));
  // The dp trainer test's lengths (tests/dist/rl/dp_trainer_test.cc): 54 / 54.
  const std::vector<int64_t> d = {6, 8, 10, 12, 15, 17, 19, 21};
  EXPECT_EQ(sums(balanced_partitions(d, 2), d), (std::vector<int64_t>{54, 54}));
  // Equal counts even when one item outweighs the rest.
  const std::vector<int64_t> e = {100, 1, 1, 1, 1, 1, 1, 1};
  auto skew = balanced_partitions(e, 2);
  expect_a_partition(skew, 8, 2);
  EXPECT_EQ(sums(skew, e), (std::vector<int64_t>{103, 4}));
}

TEST(DpBalance, RandomLengthsSpreadFarLessThanContiguousSlices) {
  PhiloxStream rng(7);
  for (int k : {2, 4, 8}) {
    std::vector<int64_t> c(size_t(k) * 32);
    for (auto& x : c) x = 50 + int64_t(rng.next_u32() % 4000);
    const auto parts = balanced_partitions(c, k);
    expect_a_partition(parts, int64_t(c.size()), k);
    const auto s = sums(parts, c);
    const int64_t spread =
        *std::max_element(s.begin(), s.end()) - *std::min_element(s.begin(), s.end());
    std::vector<int64_t> contiguous(size_t(k), 0);
    for (size_t i = 0; i < c.size(); ++i) contiguous[i / 32] += c[i];
    const int64_t cspread = *std::max_element(contiguous.begin(), contiguous.end()) -
                            *std::min_element(contiguous.begin(), contiguous.end());
    // Differencing leaves a spread of the order of the smallest items, not of the data's.
    EXPECT_LT(spread, 200) << k;
    EXPECT_GT(cspread, 10 * spread) << k;
    EXPECT_EQ(balanced_partitions(c, k), parts);  // deterministic: every rank agrees
  }
}

TEST(DpBalance, BadInputIsRefused) {
  EXPECT_NE(test::error_of([] {
              balanced_partitions({1, 2, 3}, 2);
            }).find("3 items do not split into 2 equal parts"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              balanced_partitions({1, -2}, 2);
            }).find("negative cost -2"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              balanced_partitions({1, 2}, 0);
            }).find("2 items do not split"),
            std::string::npos);
  EXPECT_EQ(balanced_partitions({}, 3), (std::vector<std::vector<int64_t>>(3)));
}

}  // namespace
}  // namespace gyre::rl
