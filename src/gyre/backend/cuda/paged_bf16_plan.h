// How one bf16 paged attention call (paged_bf16.h) is cut into CTAs — host-only arithmetic, kept
// apart from the kernels so the CPU unit tests can check it (tests/unit/backend/
// paged_bf16_plan_test.cc). The plan depends only on host-known sizes (B, heads, the max_q_len and
// max_kv_len bounds) and the SM count, never on device data, so a CUDA graph captured with a
// bound serves every later step whose lengths stay within it.
//
// Work items: one CTA per (sequence, kv head, tile of `rows` query rows). When the items cannot
// fill the GPU (fewer than one per SM) and the bound has at least two 64-key tiles, the keys are
// split (flash-decoding): grid.y = `splits` CTAs per item, each taking one chunk of the sequence's
// keys. The chunk length is chosen per sequence on the device from its actual kv_len
// (split_chunk in paged_bf16_common.cuh): the smallest multiple of 64 keys with splits * chunk >=
// kv_len. So a short context under a long bound (a decode graph sized for the engine's context
// length) still spreads over ceil(kv_len / 64) one-tile CTAs instead of one CTA looping over all
// its tiles, and a context at the bound gets the same chunks as a plan made for it.
//
// A chunk never holds fewer than `min_chunk` keys (a multiple of the tile): a split costs the
// partials' write, the combine's read and, at batch 1, a dependent kernel on the step's critical
// path, while one CTA loops over its tiles serially. With min_chunk above the tile, short contexts
// run unsplit (split 0 alone holds every key and writes the output; the combine skips the row) and
// a plan whose bound fits in one chunk does not split. Measured (session 32): min_chunk 256 / 512
// made the batch-1 decode ~7.5% slower (each serial tile ~3.5 us, more than a split costs), so the
// default is the tile.
#pragma once
#include <algorithm>
#include <cstdint>

namespace gyre::cuda::paged_bf16_detail {

constexpr int kPlanTileKeys = 64;  // keys per shared-memory tile of the kernel (kTileKeys)
constexpr int kPlanMaxRows = 16;   // most query rows per CTA (prefill tiles)
constexpr int kPlanMaxSplits =
    512;  // most key chunks of one call (the combine keeps their weights)

struct SplitPlan {
  int rows = 1;       // R: query rows per CTA (1, 2, 4, 8 or 16)
  int row_tiles = 1;  // R-row tiles per (sequence, kv head)
  int splits = 1;     // key chunks per item (grid.y); 1 = no split, no partials, no combine
  int min_chunk = kPlanTileKeys;  // fewest keys per chunk (a multiple of kPlanTileKeys)
  int64_t items = 0;              // grid.x = B * Hkv * row_tiles
};

// B sequences, Hq / Hkv heads (Hq % Hkv == 0, Hkv >= 1), bounds max_q_len / max_kv_len of the
// sequences' new tokens and keys, `sms` streaming multiprocessors; min_chunk keys at least per
// chunk (rounded up to a multiple of the tile).
inline SplitPlan make_split_plan(int64_t B, int64_t Hq, int64_t Hkv, int64_t max_q_len,
                                 int64_t max_kv_len, int64_t sms,
                                 int64_t min_chunk = kPlanTileKeys) {
  SplitPlan pl;
  min_chunk = std::max<int64_t>(min_chunk, kPlanTileKeys);
  pl.min_chunk = int((std::min<int64_t>(min_chunk, int64_t(1) << 30) + kPlanTileKeys - 1) /
                     kPlanTileKeys * kPlanTileKeys);
  const int64_t rows = std::max<int64_t>(max_q_len, 1) * (Hq / Hkv);
  while (pl.rows < rows && pl.rows < kPlanMaxRows) pl.rows *= 2;
  pl.row_tiles = int((rows + pl.rows - 1) / pl.rows);
  pl.items = B * Hkv * pl.row_tiles;
  const int64_t kv = std::max<int64_t>(max_kv_len, 1);
  const int64_t tiles = (kv + kPlanTileKeys - 1) / kPlanTileKeys;
  // Split when the items cannot fill the SMs: aim at ~2 CTAs per SM at the bound, never more
  // chunks than 64-key tiles (a chunk below one tile would only idle warps) or than chunks of
  // min_chunk keys.
  const int64_t chunks = (kv + pl.min_chunk - 1) / pl.min_chunk;
  if (pl.items > 0 && pl.items < sms && tiles >= 2 && chunks >= 2) {
    const int64_t want =
        std::min({(2 * sms + pl.items - 1) / pl.items, chunks, int64_t(kPlanMaxSplits)});
    pl.splits = int(std::max<int64_t>(want, 1));
  }
  return pl;
}

// Keys per chunk for a sequence of kv_len keys under `splits` chunks: the smallest multiple of
// the tile with splits * chunk >= kv_len, at least min_chunk (a plan's; the device computes the
// same in split_chunk).
inline int64_t split_chunk_host(int64_t kv_len, int splits, int min_chunk = kPlanTileKeys) {
  const int64_t per = (std::max<int64_t>(kv_len, 1) + splits - 1) / splits;
  return std::max<int64_t>((per + kPlanTileKeys - 1) / kPlanTileKeys * kPlanTileKeys, min_chunk);
}

}  // namespace gyre::cuda::paged_bf16_detail
