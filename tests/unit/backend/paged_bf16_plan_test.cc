// The bf16 paged attention's split plan (backend/cuda/paged_bf16_plan.h), host arithmetic only:
// no split once the work items fill the GPU or the bound is a single tile, ~2 CTAs per SM at the
// bound otherwise, never more splits than tiles or kMaxSplits, and per-sequence chunks that are
// tile multiples covering the sequence — one tile each for short sequences under a long bound.
#include "gyre/backend/cuda/paged_bf16_plan.h"

#include <gtest/gtest.h>

namespace gyre::cuda::paged_bf16_detail {
namespace {

constexpr int64_t kSms = 132;  // an H200

TEST(PagedBf16Plan, RowTiles) {
  const SplitPlan d = make_split_plan(1, 14, 2, 1, 100, kSms);  // decode, GQA 7: 8-row tiles
  EXPECT_EQ(d.rows, 8);
  EXPECT_EQ(d.row_tiles, 1);
  EXPECT_EQ(d.items, 2);
  const SplitPlan p = make_split_plan(3, 12, 2, 40, 3000, kSms);  // prefill: 240 rows, 16 a tile
  EXPECT_EQ(p.rows, 16);
  EXPECT_EQ(p.row_tiles, 15);
  EXPECT_EQ(p.items, 3 * 2 * 15);
}

TEST(PagedBf16Plan, SplitsOnlyWhenTheGpuIsNotFull) {
  EXPECT_EQ(make_split_plan(256, 14, 2, 1, 384, kSms).splits, 1);    // 512 items
  EXPECT_EQ(make_split_plan(66, 14, 2, 1, 8192, kSms).splits, 1);    // 132 items = SMs
  EXPECT_EQ(make_split_plan(1, 14, 2, 1, 64, kSms).splits, 1);       // one tile
  EXPECT_EQ(make_split_plan(1, 14, 2, 1, 65, kSms).splits, 2);       // two tiles, two chunks
  EXPECT_EQ(make_split_plan(1, 14, 2, 1, 150, kSms).splits, 3);      // one chunk per tile
  EXPECT_EQ(make_split_plan(1, 14, 2, 1, 8192, kSms).splits, 128);   // tiles < 2 * SMs / items
  EXPECT_EQ(make_split_plan(1, 14, 2, 1, 32768, kSms).splits, 132);  // 2 CTAs per SM
  EXPECT_EQ(make_split_plan(8, 12, 2, 1, 8192, kSms).splits, 17);    // ceil(264 / 16)
  EXPECT_EQ(make_split_plan(1, 1, 1, 1, 1 << 30, 4096).splits, kPlanMaxSplits);  // capped
}

TEST(PagedBf16Plan, ChunksCoverEachSequence) {
  for (int splits : {1, 2, 3, 17, 128, 132, 512})
    for (int64_t kv : {1, 7, 63, 64, 65, 150, 1000, 5000, 32768, 1 << 30}) {
      const int64_t chunk = split_chunk_host(kv, splits);
      EXPECT_EQ(chunk % kPlanTileKeys, 0);
      EXPECT_GE(chunk * splits, kv) << kv << " keys, " << splits << " splits";
      EXPECT_LT((chunk - kPlanTileKeys) * splits, kv) << "chunk not minimal";
    }
  // A decode graph sized for 32k keys replayed at 150: three one-tile chunks, not one CTA looping.
  const SplitPlan pl = make_split_plan(1, 14, 2, 1, 32768, kSms);
  EXPECT_EQ(split_chunk_host(150, pl.splits), 64);
  EXPECT_EQ(split_chunk_host(32768, pl.splits), 256);
}

// SplitPlan::min_chunk: chunks never shorter, so short contexts run unsplit and a bound that fits
// in one chunk does not split at all; long contexts still spread over the SMs.
TEST(PagedBf16Plan, MinimumChunk) {
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 100, kSms, 1).min_chunk, kPlanTileKeys);  // rounded up
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 100, kSms, 200).min_chunk, 256);
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 256, kSms, 256).splits, 1);  // one chunk: no split
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 257, kSms, 256).splits, 2);
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 32768, kSms, 256).splits, 128);  // 32768 / 256 chunks
  EXPECT_EQ(make_split_plan(1, 12, 2, 1, 1 << 20, kSms, 256).splits, 132);
  const SplitPlan pl = make_split_plan(1, 12, 2, 1, 32768, kSms, 256);
  for (int64_t kv : {1, 64, 200, 256})
    EXPECT_EQ(split_chunk_host(kv, pl.splits, pl.min_chunk), 256);
  EXPECT_EQ(split_chunk_host(257, pl.splits, pl.min_chunk), 256);  // two chunks
  EXPECT_EQ(split_chunk_host(32768, pl.splits, pl.min_chunk), 256);
  for (int splits : {1, 2, 3, 17, 128, 132, 512})
    for (int64_t kv : {1, 63, 64, 65, 150, 1000, 5000, 32768, 1 << 30}) {
      const int64_t chunk = split_chunk_host(kv, splits, 256);
      EXPECT_EQ(chunk % kPlanTileKeys, 0);
      EXPECT_GE(chunk, 256);
      EXPECT_GE(chunk * splits, kv) << kv << " keys, " << splits << " splits";
    }
}

}  // namespace
}  // namespace gyre::cuda::paged_bf16_detail
