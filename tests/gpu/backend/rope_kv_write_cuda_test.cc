// ops::rope_qk_paged_kv_write_ (backend/fused_rope_ops.h) on the GPU: the fused decode kernel
// (backend/cuda/rope_kv_write.cu) must leave q and the bf16 caches bitwise as rope_(q), rope_(k)
// and paged_kv_write(k, v) leave them, across page sizes, positions, GQA ratios and batches 1..9
// (padding rows with slot -1 included), never modify k, and reject bad slots/positions before
// changing anything. The f32-cache path (the unfused ops on a copy of k) is checked the same way.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/fused_rope_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "kernel_count.h"

namespace gyre {
namespace {

using gputest::gpu;
using gputest::randn;

struct Shape4 {
  int64_t Hq, Hkv, D, page_size;
};

std::vector<uint16_t> bits_of(const Tensor& t) {
  Tensor h = t.to(Device::cpu);
  std::vector<uint16_t> b(size_t(h.numel()));
  std::memcpy(b.data(), h.raw(), b.size() * 2);
  return b;
}

// A cache [pages, page_size, Hkv, D] of `dtype` on the GPU, filled with random values (bf16: the
// bits of rounded normals), identical for equal seeds.
Tensor cache(const Shape4& s, int64_t pages, DType dtype, uint64_t seed) {
  Tensor f = randn({pages, s.page_size, s.Hkv, s.D}, seed);
  if (dtype == DType::f32) return gpu(f);
  Tensor b = Tensor::empty(f.shape(), DType::bf16);
  const std::vector<float> v = f.to_vector();
  auto* p = b.data<uint16_t>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = f32_to_bf16(v[i]);
  return gpu(b);
}

void check(const Shape4& s, int64_t T, DType cache_dtype, uint64_t seed) {
  const int64_t pages = 2 * T + 3, P = 4096;  // P: rows of the RoPE tables
  Tensor q = gpu(randn({T, s.Hq, s.D}, seed)), k = gpu(randn({T, s.Hkv, s.D}, seed + 1));
  Tensor v = gpu(randn({T, s.Hkv, s.D}, seed + 2));
  Tensor cos = gpu(randn({P, s.D / 2}, seed + 3)), sin = gpu(randn({P, s.D / 2}, seed + 4));
  PhiloxStream r(seed, 5);
  std::vector<int32_t> pos(static_cast<size_t>(T)), slots(static_cast<size_t>(T));
  std::vector<int32_t> perm(size_t(pages * s.page_size));
  std::iota(perm.begin(), perm.end(), 0);
  for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[r.next_u32() % i]);
  for (int64_t t = 0; t < T; ++t) {
    pos[size_t(t)] = int32_t(r.next_u32() % uint32_t(P));
    slots[size_t(t)] = t % 4 == 2 ? -1 : perm[size_t(t)];  // every 4th row from 2 is padding
  }
  Tensor gpos = gpu(Tensor::from_vector(pos, {T})), gslots = gpu(Tensor::from_vector(slots, {T}));

  // Reference: the unfused ops.
  Tensor q_ref = q.clone(), k_ref = k.clone();
  Tensor kc_ref = cache(s, pages, cache_dtype, seed + 6),
         vc_ref = cache(s, pages, cache_dtype, seed + 7);
  ops::rope_(q_ref, gpos, cos, sin);
  ops::rope_(k_ref, gpos, cos, sin);
  ops::paged_kv_write(k_ref, v, gslots, kc_ref, vc_ref);

  Tensor q_f = q.clone();
  Tensor kc = cache(s, pages, cache_dtype, seed + 6), vc = cache(s, pages, cache_dtype, seed + 7);
  const std::vector<float> k_before = k.to_vector();
  ops::rope_qk_paged_kv_write_(q_f, k, v, gpos, cos, sin, gslots, kc, vc);

  const std::string what = "Hq " + std::to_string(s.Hq) + " Hkv " + std::to_string(s.Hkv) + " D " +
                           std::to_string(s.D) + " page " + std::to_string(s.page_size) + " T " +
                           std::to_string(T) + " " + dtype_name(cache_dtype);
  EXPECT_EQ(q_f.to_vector(), q_ref.to_vector()) << what;  // bitwise (no NaN in the data)
  EXPECT_EQ(k.to_vector(), k_before) << what;             // k is only read
  if (cache_dtype == DType::bf16) {
    // The first differing element, located as (slot, head, dim), if any.
    const auto first_diff = [&](const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
      for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i])
          return "element " + std::to_string(i) + " (slot " + std::to_string(i / (s.Hkv * s.D)) +
                 ", head " + std::to_string(i / s.D % s.Hkv) + ", dim " + std::to_string(i % s.D) +
                 "): " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
      return std::string("none");
    };
    EXPECT_EQ(first_diff(bits_of(kc), bits_of(kc_ref)), "none") << what;
    EXPECT_EQ(first_diff(bits_of(vc), bits_of(vc_ref)), "none") << what;
  } else {
    EXPECT_EQ(kc.to_vector(), kc_ref.to_vector()) << what;
    EXPECT_EQ(vc.to_vector(), vc_ref.to_vector()) << what;
  }
}

TEST(RopeKvWriteCuda, BitwiseTheUnfusedOps) {
  GYRE_SKIP_WITHOUT_GPU();
  const Shape4 shapes[] = {{14, 2, 64, 16},
                           {12, 2, 128, 7},
                           {8, 8, 64, 1},
                           {4, 1, 128, 32},
                           {6, 2, 16, 3}};  // the last: a head dim the attention kernel lacks
  uint64_t seed = 1;
  for (const Shape4& s : shapes)
    for (int64_t T = 1; T <= 9; ++T) {
      // A bf16 cache needs the attention kernel's head dims (64, 128): D = 16 runs f32 only.
      if (s.D == 64 || s.D == 128) check(s, T, DType::bf16, seed);
      check(s, T, DType::f32, seed + 50);
      seed += 100;
    }
}

TEST(RopeKvWriteCuda, BadIndicesChangeNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  const Shape4 s{14, 2, 64, 16};
  const int64_t T = 3, pages = 4;
  Tensor q = gpu(randn({T, s.Hq, s.D}, 1)), k = gpu(randn({T, s.Hkv, s.D}, 2));
  Tensor v = gpu(randn({T, s.Hkv, s.D}, 3));
  Tensor cos = gpu(randn({8, s.D / 2}, 4)), sin = gpu(randn({8, s.D / 2}, 5));
  Tensor kc = cache(s, pages, DType::bf16, 6), vc = cache(s, pages, DType::bf16, 7);
  const std::vector<float> q0 = q.to_vector();
  const std::vector<uint16_t> kc0 = bits_of(kc);
  Tensor good_pos = gpu(Tensor::from_vector(std::vector<int32_t>{0, 1, 7}, {T}));
  Tensor bad_pos = gpu(Tensor::from_vector(std::vector<int32_t>{0, 8, 1}, {T}));
  Tensor good_slots = gpu(Tensor::from_vector(std::vector<int32_t>{0, 5, -1}, {T}));
  Tensor bad_slots = gpu(Tensor::from_vector(std::vector<int32_t>{0, 64, 1}, {T}));
  try {
    ops::rope_qk_paged_kv_write_(q, k, v, bad_pos, cos, sin, good_slots, kc, vc);
    ADD_FAILURE() << "a position outside the table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("position 8"), std::string::npos) << e.what();
  }
  try {
    ops::rope_qk_paged_kv_write_(q, k, v, good_pos, cos, sin, bad_slots, kc, vc);
    ADD_FAILURE() << "a slot outside the cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("slot_mapping[1] = 64"), std::string::npos) << e.what();
  }
  EXPECT_EQ(q.to_vector(), q0);
  EXPECT_EQ(bits_of(kc), kc0);
}

// The decode step's case (batch 1, index ranges proven by the caller as the engine's
// PagedAttentionContext does): one kernel launch for RoPE on q and k plus the cache write.
TEST(RopeKvWriteCuda, OneLaunchPerDecodeStep) {
  GYRE_SKIP_WITHOUT_GPU();
  const Shape4 s{14, 2, 64, 16};
  const int64_t T = 1, pages = 4;
  Tensor q = gpu(randn({T, s.Hq, s.D}, 1)), k = gpu(randn({T, s.Hkv, s.D}, 2));
  Tensor v = gpu(randn({T, s.Hkv, s.D}, 3));
  Tensor cos = gpu(randn({64, s.D / 2}, 4)), sin = gpu(randn({64, s.D / 2}, 5));
  Tensor kc = cache(s, pages, DType::bf16, 6), vc = cache(s, pages, DType::bf16, 7);
  Tensor pos = gpu(Tensor::from_vector(std::vector<int32_t>{37}, {T}));
  Tensor slots = gpu(Tensor::from_vector(std::vector<int32_t>{21}, {T}));
  ops::KnownIndices known;  // no device-to-host check copies (they would break the capture)
  known.add_range(pos, 37, 38);
  known.add_range(slots, 21, 22);
  EXPECT_EQ(gputest::kernels_launched(
                [&] { ops::rope_qk_paged_kv_write_(q, k, v, pos, cos, sin, slots, kc, vc); }),
            1u);
}

}  // namespace
}  // namespace gyre
