// bf16 weight copies that change in place (issue 8): ops::Bf16WeightCache::refresh re-casts every
// copy into its own buffer, bitwise what a fresh conversion makes of the new values (also for
// views that start at odd offsets, so the kernel's scalar path runs next to its vector path);
// ops::f32_to_bf16_many and the bf16 outputs of ops::adamw_step_many and ops::copy_many round
// exactly as cuda::f32_to_bf16 (the cache's conversion) and leave the f32 results unchanged; the
// cache's bookkeeping (sources_within, copy_to_write, the fresh mark, generation); bf16_pair's
// adjacent copies (the SwiGLU backward's stacked gate | up weight). Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/dtype.h"

namespace gyre::ops {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

// The n bf16 values at device address p, as bits.
std::vector<uint16_t> bits_at(const uint16_t* p, int64_t n) {
  if (n == 0) return {};
  Tensor t = Tensor::borrow(const_cast<uint16_t*>(p), {n}, DType::bf16, Device::cuda, nullptr);
  Tensor h = t.to(Device::cpu);
  std::vector<uint16_t> out(static_cast<size_t>(n));
  std::memcpy(out.data(), h.raw(), size_t(n) * 2);
  return out;
}

// Host rounding of the device tensor's values (finite values: the same bits as the device's).
std::vector<uint16_t> host_bits(const Tensor& t) {
  std::vector<uint16_t> out;
  for (float x : cpu(t).to_vector()) out.push_back(f32_to_bf16(x));
  return out;
}

// Weights of odd sizes (several 16384-element chunks, single elements, a 1-element offset view
// whose chunks are misaligned for the vector loads) plus values that test the rounding: ties to
// even, the largest finite value (rounds to inf), denormals, signed zeros, infinities.
std::vector<Tensor> weights(uint64_t seed) {
  std::vector<Tensor> w;
  for (const Shape& s : std::vector<Shape>{{7}, {3, 5}, {16384}, {2 * 16384 + 3}, {1}, {64, 33}})
    w.push_back(gpu(randn(s, seed++)));
  Tensor big = gpu(randn({40001}, seed++));
  w.push_back(big.narrow(1, 40000));  // first byte 4 bytes into the storage
  const float max = std::numeric_limits<float>::max();
  const float den = std::numeric_limits<float>::denorm_min();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {
      1.0f + 1.0f / 256, 1.0f + 3.0f / 256, max, -max, den, -den, 0.0f, -0.0f, inf, -inf, 1e-39f,
      3.14159f};
  w.push_back(gpu(Tensor::from_vector(special, Shape{int64_t(special.size())})));
  return w;
}

TEST(Bf16CopiesCuda, RefreshRecastsInPlaceBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<Tensor> w = weights(1);
  Bf16WeightCache cache;
  std::vector<const uint16_t*> addr;
  for (auto& t : w) addr.push_back(cache.bf16(t));
  EXPECT_EQ(cache.entries(), w.size());
  const uint64_t gen = cache.generation();
  // New values in place, then the refresh.
  for (size_t i = 0; i < w.size(); ++i) {
    std::vector<float> v = cpu(w[i]).to_vector();
    for (float& x : v) x = x * -1.75f + 0.5f;
    w[i].copy_from(Tensor::from_vector(v, w[i].shape()));
  }
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NE(bits_at(addr[i], w[i].numel()), host_bits(w[i])) << "stale before refresh " << i;
  cache.refresh();
  Bf16WeightCache fresh;
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(cache.bf16(w[i]), addr[i]) << "the copy moved " << i;  // a hit: same address
    EXPECT_EQ(bits_at(addr[i], w[i].numel()), host_bits(w[i])) << i;
    EXPECT_EQ(bits_at(addr[i], w[i].numel()), bits_at(fresh.bf16(w[i]), w[i].numel())) << i;
  }
  EXPECT_EQ(cache.entries(), w.size());
  EXPECT_EQ(cache.generation(), gen);
  cache.clear();
  EXPECT_EQ(cache.generation(), gen + 1);
  EXPECT_EQ(cache.entries(), 0u);
}

TEST(Bf16CopiesCuda, NanRoundsAsTheCacheDoes) {
  GYRE_SKIP_WITHOUT_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor w = gpu(Tensor::from_vector(std::vector<float>{nan, -nan, 1.0f}, Shape{3}));
  Bf16WeightCache a, b;
  const uint16_t* pa = a.bf16(w);
  std::vector<uint16_t> out(3);
  const Tensor* src[] = {&w};
  uint16_t* dst_dev = b.copy_to_write(w);
  EXPECT_EQ(dst_dev, nullptr);  // nothing cached in b yet
  uint16_t* pb = const_cast<uint16_t*>(b.bf16(w));
  uint16_t* dst[] = {pb};
  f32_to_bf16_many(src, dst);
  EXPECT_EQ(bits_at(pa, 3), bits_at(pb, 3));
}

TEST(Bf16CopiesCuda, F32ToBf16ManyEqualsTheCacheConversion) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<Tensor> w = weights(20);
  w.push_back(Tensor::zeros({0}, DType::f32, Device::cuda));
  Bf16WeightCache cache;
  std::vector<Tensor> out;
  std::vector<const Tensor*> src;
  std::vector<uint16_t*> dst;
  for (auto& t : w) {
    out.push_back(Tensor::zeros({std::max<int64_t>(t.numel(), 1)}, DType::bf16, Device::cuda));
    src.push_back(&t);
    dst.push_back(t.numel() ? out.back().data<uint16_t>() : nullptr);
  }
  f32_to_bf16_many(src, dst);
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i].numel() == 0) continue;
    EXPECT_EQ(bits_at(dst[i], w[i].numel()), bits_at(cache.bf16(w[i]), w[i].numel())) << i;
  }
}

TEST(Bf16CopiesCuda, AdamWWritesTheCastOfItsResultBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<Tensor> p = weights(40), p_plain, g, m, v, m_plain, v_plain;
  for (auto& t : p) {
    p_plain.push_back(t.clone());
    g.push_back(gpu(randn(t.shape(), 99, 0.01f)));
    for (auto* l : {&m, &v, &m_plain, &v_plain})
      l->push_back(Tensor::zeros(t.shape(), DType::f32, Device::cuda));
  }
  // The special values' infinities would make NaNs through AdamW; keep them finite here.
  p.back() = gpu(randn(p.back().shape(), 5));
  p_plain.back() = p.back().clone();
  std::vector<Tensor> out;
  std::vector<uint16_t*> dst;
  for (size_t i = 0; i < p.size(); ++i) {
    out.push_back(Tensor::zeros({p[i].numel()}, DType::bf16, Device::cuda));
    dst.push_back(i == 2 ? nullptr : out.back().data<uint16_t>());  // one parameter without
  }
  auto ptrs = [](std::vector<Tensor>& ts) {
    std::vector<Tensor*> r;
    for (auto& t : ts) r.push_back(&t);
    return r;
  };
  auto cptrs = [](std::vector<Tensor>& ts) {
    std::vector<const Tensor*> r;
    for (auto& t : ts) r.push_back(&t);
    return r;
  };
  AdamWParams hp;
  hp.lr = 1e-2f, hp.beta2 = 0.95f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 2; ++step) {
    hp.step = step;
    adamw_step_many(ptrs(p), cptrs(g), ptrs(m), ptrs(v), hp, dst);
    adamw_step_many(ptrs(p_plain), cptrs(g), ptrs(m_plain), ptrs(v_plain), hp);
    Bf16WeightCache cache;
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_EQ(cpu(p[i]).to_vector(), cpu(p_plain[i]).to_vector()) << step << " p " << i;
      EXPECT_EQ(cpu(m[i]).to_vector(), cpu(m_plain[i]).to_vector()) << step << " m " << i;
      EXPECT_EQ(cpu(v[i]).to_vector(), cpu(v_plain[i]).to_vector()) << step << " v " << i;
      const std::vector<uint16_t> got = bits_at(out[i].data<uint16_t>(), p[i].numel());
      if (i == 2) {
        EXPECT_EQ(got, std::vector<uint16_t>(size_t(p[i].numel()), 0)) << "written without a dst";
        continue;
      }
      EXPECT_EQ(got, bits_at(cache.bf16(p[i]), p[i].numel())) << step << " bf16 " << i;
      EXPECT_EQ(got, host_bits(p[i])) << step << " bf16 vs host " << i;
    }
  }
}

TEST(Bf16CopiesCuda, CopyManyWritesF32AndTheCastOfTheSameValues) {
  GYRE_SKIP_WITHOUT_GPU();
  // The destinations (odd sizes, a misaligned view, the special values) are filled from views of
  // one flat vector at running offsets, as the data-parallel unflatten does: the sources start at
  // every alignment, so the vector and the scalar paths both run.
  std::vector<Tensor> w = weights(60);
  w.push_back(Tensor::zeros({0}, DType::f32, Device::cuda));
  int64_t total = 0;
  for (auto& t : w) total += t.numel();
  Tensor flat = gpu(randn({total + 1}, 77));
  {  // the special values (infinities, ties, denormals) in the flat vector too
    std::vector<float> v = cpu(flat).to_vector();
    const std::vector<float> sp = cpu(w[w.size() - 2]).to_vector();
    std::copy(sp.begin(), sp.end(), v.end() - int64_t(sp.size()));
    flat = gpu(Tensor::from_vector(v, flat.shape()));
  }
  std::vector<Tensor> src, dst_views, out;
  std::vector<uint16_t*> bf16;
  int64_t off = 1;  // every source 4 bytes past a 16-byte boundary at first
  for (size_t i = 0; i < w.size(); ++i) {
    const int64_t n = w[i].numel();
    src.push_back(flat.narrow(off, n));
    off += n;
    dst_views.push_back(w[i].reshape({n}));
    out.push_back(Tensor::zeros({std::max<int64_t>(n, 1)}, DType::bf16, Device::cuda));
    bf16.push_back(i == 1 || n == 0 ? nullptr : out.back().data<uint16_t>());  // one without
  }
  std::vector<const Tensor*> sp;
  std::vector<Tensor*> dp;
  for (size_t i = 0; i < w.size(); ++i) sp.push_back(&src[i]), dp.push_back(&dst_views[i]);
  copy_many(sp, dp, bf16);
  Bf16WeightCache cache;
  for (size_t i = 0; i < w.size(); ++i) {
    const int64_t n = w[i].numel();
    EXPECT_EQ(cpu(w[i]).to_vector(), cpu(src[i]).to_vector()) << "f32 " << i;
    if (n == 0) continue;
    const std::vector<uint16_t> got = bits_at(out[i].data<uint16_t>(), n);
    if (i == 1) {
      EXPECT_EQ(got, std::vector<uint16_t>(size_t(n), 0)) << "written without a dst";
      continue;
    }
    EXPECT_EQ(got, bits_at(cache.bf16(w[i]), n)) << "bf16 vs the cache's cast " << i;
  }
  // Without bf16 outputs: a plain multi-tensor copy.
  std::vector<Tensor> w2;
  for (auto& t : w) w2.push_back(Tensor::zeros(t.shape(), DType::f32, Device::cuda));
  std::vector<Tensor*> dp2;
  std::vector<Tensor> views2;
  for (size_t i = 0; i < w2.size(); ++i) views2.push_back(w2[i].reshape({w2[i].numel()}));
  for (auto& t : views2) dp2.push_back(&t);
  copy_many(sp, dp2);
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_EQ(cpu(w2[i]).to_vector(), cpu(w[i]).to_vector()) << "plain " << i;
}

TEST(Bf16CopiesCuda, BookkeepingOfSourcesAndTheFreshMark) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor a = gpu(randn({64}, 1)), b = gpu(randn({32}, 2)), c = gpu(randn({16}, 3));
  Bf16WeightCache cache;
  const uint16_t* pa = cache.bf16(a);
  cache.bf16(b);
  EXPECT_TRUE(cache.sources_within({a, b, c}));
  EXPECT_FALSE(cache.sources_within({a, c}));
  // A tensor with the same values in other storage is another weight.
  EXPECT_FALSE(cache.sources_within({a, b.clone()}));
  EXPECT_EQ(cache.copy_to_write(a), pa);
  EXPECT_EQ(cache.copy_to_write(c), nullptr);
  EXPECT_EQ(cache.copy_to_write(a.clone()), nullptr);
  EXPECT_EQ(cache.copy_to_write(cpu(a)), nullptr);
  // Fresh only when the writer covered every copy; consumed by take_fresh.
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&a});
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&a, &b, &c});
  EXPECT_TRUE(cache.take_fresh());
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&b, &a});
  cache.mark_stale();
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&b, &a});
  cache.refresh();
  EXPECT_FALSE(cache.take_fresh());
  cache.copies_written({&b, &a});
  cache.clear();
  EXPECT_FALSE(cache.take_fresh());
  // An empty cache: nothing can be stale.
  cache.copies_written({});
  EXPECT_TRUE(cache.take_fresh());
  EXPECT_TRUE(cache.sources_within({}));
}

TEST(Bf16CopiesCuda, PairedCopiesSitSideBySideWithTheSameBits) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor a = gpu(randn({96, 40}, 11)), b = gpu(randn({96, 40}, 12));
  Bf16WeightCache cache;
  const uint16_t* base = cache.bf16_pair(a, b);
  ASSERT_NE(base, nullptr);
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_EQ(cache.bytes(), size_t(a.numel() + b.numel()) * 2);
  // Each half is the weight's own copy: what bf16() hands out (a hit, no conversion), with the
  // bits of a lone conversion.
  const uint64_t hits = cache.hits();
  EXPECT_EQ(cache.bf16(a), base);
  EXPECT_EQ(cache.bf16(b), base + a.numel());
  EXPECT_EQ(cache.hits(), hits + 2);
  EXPECT_EQ(bits_at(base, a.numel()), host_bits(a));
  EXPECT_EQ(bits_at(base + a.numel(), b.numel()), host_bits(b));
  EXPECT_EQ(cache.bf16_pair(a, b), base);  // asked again: the same pair
  EXPECT_EQ(cache.copy_to_write(b), base + a.numel());
  // refresh() re-casts both halves in place.
  a.fill(0.5f);
  b.fill(-2.0f);
  cache.refresh();
  EXPECT_EQ(bits_at(base, a.numel()), host_bits(a));
  EXPECT_EQ(bits_at(base + a.numel(), b.numel()), host_bits(b));
  // Copies made one by one stay where they are: no pair (null), the lookups unchanged.
  Bf16WeightCache lone;
  const uint16_t* pb = lone.bf16(b);
  EXPECT_EQ(lone.bf16_pair(a, b), nullptr);
  EXPECT_EQ(lone.bf16(b), pb);
  EXPECT_EQ(lone.bf16_pair(b, a), nullptr);  // a was copied alone by the call above
  // Reversed order of an existing pair is not adjacent in that order.
  EXPECT_EQ(cache.bf16_pair(b, a), nullptr);
  // Errors: the same weight twice, a host weight.
  EXPECT_THROW(cache.bf16_pair(a, a), Error);
  EXPECT_THROW(cache.bf16_pair(a, cpu(b)), Error);
  // clear() drops both entries (one buffer).
  cache.clear();
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

}  // namespace
}  // namespace gyre::ops
