// The split-KV combine kernel the attention launches (warp 0 alone replaying the CTA's order for
// rows of up to 32 valid splits: combine_row_warp_small) against its CTA-only reference
// (combine_row_cta for every row): bit for bit, for valid-split counts from 2 to kMaxSplits (the
// warp path up to 32 — 5, 17, 24 and 31 leave some of a lane's groups or a round partly empty —
// the CTA path past it), both head dims, decode and multi-token rows, and rows that split 0
// finished alone (left untouched by both).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/paged_bf16_combine.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

using gputest::gpu;

struct CombineCase {
  int D, splits;
  std::vector<int32_t> cu_q, kv_lens;
  int Hq;
};

// Runs both over the same random partials into outputs pre-filled with a sentinel;
// returns the rows the CTA reference changed (a combine that wrote nothing would pass vacuously).
int64_t check(const CombineCase& c, uint64_t seed) {
  const int B = int(c.kv_lens.size()), T = c.cu_q.back();
  const int64_t rows = int64_t(T) * c.Hq, D = c.D;
  PhiloxStream r(seed, 1);
  std::vector<float> o(size_t(c.splits * rows * D)), ml(size_t(2 * c.splits * rows));
  for (float& x : o) x = r.next_normal() * 3.0f;
  for (size_t i = 0; i < ml.size(); i += 2) {
    ml[i] = r.next_normal() * 12.0f;               // m: the chunk's max score, log2 units
    ml[i + 1] = 0.05f + 40.0f * r.next_uniform();  // l: its sum of 2^(x - m), > 0
  }
  const std::vector<float> sentinel(size_t(rows * D), -7.25f);
  Tensor g_o = gpu(Tensor::from_vector(o, {int64_t(o.size())}));
  Tensor g_ml = gpu(Tensor::from_vector(ml, {int64_t(ml.size())}));
  Tensor g_cu = gpu(Tensor::from_vector(c.cu_q, {int64_t(c.cu_q.size())}));
  Tensor g_kv = gpu(Tensor::from_vector(c.kv_lens, {int64_t(B)}));
  Tensor out_cta = gpu(Tensor::from_vector(sentinel, {rows, D}));
  Tensor out_used = gpu(Tensor::from_vector(sentinel, {rows, D}));
  const auto* pml = reinterpret_cast<const float2*>(g_ml.f32());
  namespace pb = cuda::paged_bf16_detail;
  pb::launch_split_combine_cta(g_o.f32(), pml, g_cu.i32(), g_kv.i32(), B, T, c.Hq, c.D, c.splits,
                               64, out_cta.f32());
  // The kernel the attention launches (warp 0 alone for rows of <= 32 splits).
  pb::launch_split_combine(g_o.f32(), pml, g_cu.i32(), g_kv.i32(), B, T, c.Hq, c.D, c.splits, 64,
                           out_used.f32());
  const Tensor a = out_cta.to(Device::cpu), u = out_used.to(Device::cpu);
  const std::string what = "D " + std::to_string(c.D) + ", splits " + std::to_string(c.splits) +
                           ", T " + std::to_string(T) + ", seed " + std::to_string(seed);
  int64_t changed = 0;
  for (int64_t row = 0; row < rows; ++row) {
    const float* pa = a.f32() + row * D;
    EXPECT_EQ(std::memcmp(pa, u.f32() + row * D, size_t(D) * 4), 0)
        << "row " << row << ", " << what;
    changed += std::memcmp(pa, sentinel.data(), size_t(D) * 4) != 0;
  }
  return changed;
}

TEST(SplitCombineWarpCuda, WarpPathBitwiseTheCtaPathForEverySplitCount) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (const int D : {64, 128})
    for (const int splits :
         {2, 3, 4, 5, 7, 8, 9, 16, 17, 24, 31, 32, 33, 64, 255, 256, 257, 300, 512}) {
      // A decode step at kv_len = 64 x splits: every row holds all `splits` chunks.
      const int64_t changed = check({D, splits, {0, 1}, {64 * splits}, 12}, seed++);
      EXPECT_EQ(changed, 12) << "D " << D << ", splits " << splits;
    }
}

TEST(SplitCombineWarpCuda, MixedRowsAndRowsSplitZeroFinished) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 200;
  for (const int D : {64, 128}) {
    // Two sequences of 3 and 2 new tokens (64-key chunks): their rows hold 11 and 5 splits.
    EXPECT_GT(check({D, 16, {0, 3, 5}, {700, 300}, 14}, seed++), 0);
    // Short contexts: split 0 finished every row, both combines leave them as they were.
    EXPECT_EQ(check({D, 8, {0, 1, 2}, {50, 64}, 12}, seed++), 0);
  }
}

}  // namespace
}  // namespace gyre
