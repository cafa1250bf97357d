// The bf16 paged KV-cache kernels (backend/cuda/paged_bf16.h) against the CPU reference.
//
// Write: paged_kv_write_bf16 must equal core/dtype.h's f32_to_bf16 (round to nearest even) bit for
// bit, leave padding rows (slot -1) and untouched slots alone, on the vectorised and scalar paths.
//
// Attention: the CPU reference cpu::paged_attention_fwd runs on an f32 cache holding exactly the
// bf16 values the GPU kernel reads, with the same f32 q, so the two differ only in f32 rounding
// order. Bound (q, k, v ~ N(0, 1), scale = 1/sqrt(D), u = 2^-24 the f32 unit roundoff): a logit
// x = scale * sum_d q_d k_d summed in another order moves by about u * D / sqrt(2) * scale
// (random-walk partial sums of size sqrt(d)), 4.8e-7 for D = 128; exp2f (2 ulp) and folding log2 e
// into q add ~3e-7 relative to each weight p_j. The output o = sum_j p_j v_j / sum_j p_j then moves
// by sum_j p_j delta_j (v_j - o) <= max |delta| * max |v_j - o|, about 1e-6 * 8 in the worst
// alignment and ~1e-7 typically (the delta_j have random signs); the reference's own f32 GEMM
// sums add ~u * sqrt(L) relative. We require max |gpu - ref| <= 1e-5 elementwise on this O(1)
// data (|o| <= max |v| ~ 5) — an absolute bound, since averaging thousands of random values makes
// o itself small (~1/sqrt(L)) and a norm-relative bound would measure that, not the kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cpu/paged_attention.h"
#include "gyre/backend/cuda/graph.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

using gputest::gpu;

constexpr double kAbsTol = 1e-5;

std::vector<float> normals(size_t n, uint64_t seed) {
  PhiloxStream r(seed, 3);
  std::vector<float> v(n);
  for (float& x : v) x = r.next_normal();
  return v;
}

Tensor bf16_host(const std::vector<uint16_t>& bits) {
  Tensor t = Tensor::empty({int64_t(bits.size())}, DType::bf16);
  std::memcpy(t.raw(), bits.data(), bits.size() * 2);
  return t;
}

std::vector<uint16_t> bf16_bits_of(const Tensor& device_tensor) {
  Tensor h = device_tensor.to(Device::cpu);
  std::vector<uint16_t> bits(size_t(h.numel()));
  std::memcpy(bits.data(), h.raw(), bits.size() * 2);
  return bits;
}

// ---- paged_kv_write_bf16 ------------------------------------------------------------------------

void check_write(int64_t T, int64_t Hkv, int64_t D, int64_t slots_total, uint64_t seed) {
  const int64_t row = Hkv * D;
  std::vector<float> k = normals(size_t(T * row), seed), v = normals(size_t(T * row), seed + 1);
  // Values whose rounding is decided by the tie rule, and the special values.
  const float specials[] = {f32_from_bits(0x3F808000u),  // 1 + 2^-8: tie, rounds down to 1
                            f32_from_bits(0x3F818000u),  // tie with odd kept bit: rounds up
                            f32_from_bits(0x3F808001u),  // just above the tie: up
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            f32_from_bits(0x00000001u),  // smallest subnormal
                            f32_from_bits(0x7F7FFFFFu),  // largest float: rounds to +inf
                            -1.2345678e-20f};
  for (size_t i = 0; i < std::size(specials) && i < k.size(); ++i) {
    k[i] = specials[i];
    v[k.size() - 1 - i] = specials[i];
  }
  // Rows go to a permutation of the slots; every 5th row is padding (-1).
  std::vector<int32_t> slots(static_cast<size_t>(T));
  std::vector<int32_t> perm(static_cast<size_t>(slots_total));
  std::iota(perm.begin(), perm.end(), 0);
  PhiloxStream r(seed, 5);
  for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[r.next_u32() % i]);
  for (int64_t t = 0; t < T; ++t) slots[size_t(t)] = t % 5 == 3 ? -1 : perm[size_t(t)];

  // Cache pre-filled with a marker so untouched slots are visible.
  std::vector<uint16_t> kc(size_t(slots_total * row), 0x1234), vc(kc.size(), 0x4321);
  Tensor gk = gpu(Tensor::from_vector(k, {T, Hkv, D})),
         gv = gpu(Tensor::from_vector(v, {T, Hkv, D}));
  Tensor gs = gpu(Tensor::from_vector(slots, {T}));
  Tensor gkc = gpu(bf16_host(kc)), gvc = gpu(bf16_host(vc));
  cuda::paged_kv_write_bf16(gk.f32(), gv.f32(), gs.i32(), T, Hkv, D, gkc.data<uint16_t>(),
                            gvc.data<uint16_t>());
  for (int64_t t = 0; t < T; ++t) {
    const int32_t s = slots[size_t(t)];
    if (s < 0) continue;
    for (int64_t c = 0; c < row; ++c) {
      kc[size_t(s * row + c)] = f32_to_bf16(k[size_t(t * row + c)]);
      vc[size_t(s * row + c)] = f32_to_bf16(v[size_t(t * row + c)]);
    }
  }
  const std::vector<uint16_t> got_k = bf16_bits_of(gkc), got_v = bf16_bits_of(gvc);
  int64_t bad = 0;
  for (size_t i = 0; i < kc.size(); ++i) bad += (got_k[i] != kc[i]) + (got_v[i] != vc[i]);
  EXPECT_EQ(bad, 0) << "T " << T << " Hkv " << Hkv << " D " << D;
}

TEST(PagedBf16, KvWriteBitExact) {
  GYRE_SKIP_WITHOUT_GPU();
  check_write(37, 2, 64, 50, 11);   // vectorised path (row % 4 == 0)
  check_write(29, 2, 128, 40, 12);  // vectorised, D = 128
  check_write(23, 1, 6, 31, 13);    // scalar path (row 6)
  check_write(9, 3, 5, 9, 14);      // scalar, every slot written (but padding rows)
}

TEST(PagedBf16, KvWriteEmpty) {
  GYRE_SKIP_WITHOUT_GPU();
  cuda::paged_kv_write_bf16(nullptr, nullptr, nullptr, 0, 2, 64, nullptr, nullptr);
  cuda::sync();
}

// ---- paged_attention_bf16_fwd -------------------------------------------------------------------

struct Case {
  int64_t Hq, Hkv, D, page_size;
  std::vector<int32_t> q_lens, kv_lens;
  uint64_t seed;
  int64_t kv_bound = 0;  // max_kv_len passed to the kernel (0: the batch's longest kv_len)
};

std::string describe(const Case& c) {
  std::string s = "Hq " + std::to_string(c.Hq) + " Hkv " + std::to_string(c.Hkv) + " D " +
                  std::to_string(c.D) + " page " + std::to_string(c.page_size) + " (q, kv):";
  for (size_t b = 0; b < c.q_lens.size(); ++b)
    s += " (" + std::to_string(c.q_lens[b]) + ", " + std::to_string(c.kv_lens[b]) + ")";
  return s;
}

// One batch on both devices: the GPU output (NaN-initialised, so unwritten rows stay NaN) and the
// CPU reference.
struct Outputs {
  std::vector<float> got, want;
};

Outputs run_both(const Case& c) {
  const int64_t B = int64_t(c.q_lens.size()), Hq = c.Hq, Hkv = c.Hkv, D = c.D, ps = c.page_size;
  std::vector<int32_t> cu(size_t(B + 1), 0), indptr(size_t(B + 1), 0);
  int64_t max_q = 1, max_kv = 1;
  for (int64_t b = 0; b < B; ++b) {
    cu[size_t(b + 1)] = cu[size_t(b)] + c.q_lens[size_t(b)];
    indptr[size_t(b + 1)] = indptr[size_t(b)] + int32_t((c.kv_lens[size_t(b)] + ps - 1) / ps);
    max_q = std::max<int64_t>(max_q, c.q_lens[size_t(b)]);
    max_kv = std::max<int64_t>(max_kv, c.kv_lens[size_t(b)]);
  }
  if (c.kv_bound > 0) max_kv = c.kv_bound;
  const int64_t T = cu.back();
  // Pages: a shuffled pool with spares, so sequences' pages are scattered and not in order.
  const int64_t P = indptr.back() + 3;
  std::vector<int32_t> pool(static_cast<size_t>(P));
  std::iota(pool.begin(), pool.end(), 0);
  PhiloxStream r(c.seed, 9);
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[r.next_u32() % i]);
  std::vector<int32_t> pages(pool.begin(), pool.begin() + indptr.back());

  const size_t cache_n = size_t(P * ps * Hkv * D);
  std::vector<uint16_t> kb(cache_n), vb(cache_n);
  std::vector<float> kf = normals(cache_n, c.seed + 1), vf = normals(cache_n, c.seed + 2);
  for (size_t i = 0; i < cache_n; ++i) {
    kb[i] = f32_to_bf16(kf[i]), kf[i] = bf16_to_f32(kb[i]);
    vb[i] = f32_to_bf16(vf[i]), vf[i] = bf16_to_f32(vb[i]);
  }
  const std::vector<float> q = normals(size_t(T * Hq * D), c.seed + 3);
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<float> want(size_t(T * Hq * D), 0.0f);
  cpu::paged_attention_fwd(q.data(), kf.data(), vf.data(), cu.data(), c.kv_lens.data(),
                           indptr.data(), pages.data(), B, Hq, Hkv, D, ps, scale, want.data());

  if (T == 0) {  // nothing to compute: the call must return without touching anything
    cuda::paged_attention_bf16_fwd(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, B,
                                   0, Hq, Hkv, D, ps, scale, max_q, max_kv, nullptr);
    cuda::sync();
    return {want, want};
  }
  Tensor gq = gpu(Tensor::from_vector(q, {T * Hq * D}));
  Tensor gkc = gpu(bf16_host(kb)), gvc = gpu(bf16_host(vb));
  Tensor gcu = gpu(Tensor::from_vector(cu, {B + 1}));
  Tensor glen = gpu(Tensor::from_vector(c.kv_lens, {B}));
  Tensor gip = gpu(Tensor::from_vector(indptr, {B + 1}));
  Tensor gpg = gpu(Tensor::from_vector(pages, {int64_t(pages.size())}));
  std::vector<float> nan(want.size(), std::numeric_limits<float>::quiet_NaN());
  Tensor gout = gpu(Tensor::from_vector(nan, {int64_t(nan.size())}));
  cuda::paged_attention_bf16_fwd(gq.f32(), gkc.data<uint16_t>(), gvc.data<uint16_t>(), gcu.i32(),
                                 glen.i32(), gip.i32(), gpg.i32(), B, T, Hq, Hkv, D, ps, scale,
                                 max_q, max_kv, gout.f32());
  return {gout.to(Device::cpu).to_vector(), want};
}

// max |gpu - cpu| for one batch (infinite if any output is not finite, e.g. a row the kernel
// never wrote).
double run_case(const Case& c) {
  const Outputs o = run_both(c);
  const std::vector<float>&got = o.got, &want = o.want;
  double max_abs = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    max_abs = std::max(max_abs, std::fabs(double(got[i]) - double(want[i])));
  }
  return max_abs;
}

void expect_close(const Case& c) {
  const double err = run_case(c);
  EXPECT_LE(err, kAbsTol) << describe(c);
}

// Decode batch of 5 (one key, a page boundary, many pages), Qwen2.5-0.5B and 1.5B heads, pages of
// 16 and 7. B * Hkv = 10 work items: this also runs split-KV.
TEST(PagedBf16, DecodeBatch) {
  GYRE_SKIP_WITHOUT_GPU();
  const std::vector<int32_t> ones(5, 1), lens = {1, 17, 100, 1000, 333};
  for (int64_t ps : {16, 7}) {
    expect_close({14, 2, 64, ps, ones, lens, 21});
    expect_close({12, 2, 128, ps, ones, lens, 22});
  }
}

// Batch 1 at 8000 keys: the keys are split across many CTAs and combined.
TEST(PagedBf16, Batch1LongContextSplitKv) {
  GYRE_SKIP_WITHOUT_GPU();
  expect_close({14, 2, 64, 16, {1}, {8000}, 31});
  expect_close({12, 2, 128, 7, {1}, {8000}, 32});
  expect_close({4, 4, 128, 16, {1}, {8000}, 33});  // GQA ratio 1
}

// A decode batch big enough (B * Hkv >= the SM count) to run without splitting.
TEST(PagedBf16, LargeDecodeBatchNoSplit) {
  GYRE_SKIP_WITHOUT_GPU();
  std::vector<int32_t> ones(80, 1), lens(80);
  PhiloxStream r(41, 1);
  for (int32_t& x : lens) x = 1 + int32_t(r.next_u32() % 400);
  expect_close({14, 2, 64, 16, ones, lens, 42});
  expect_close({12, 2, 128, 16, ones, lens, 43});
}

// Prefill and decode in one call: a decode token, a 13-token chunk after a prefix, a 128-token
// prompt from scratch; GQA ratios 7, 6 and 1.
TEST(PagedBf16, MixedPrefillDecode) {
  GYRE_SKIP_WITHOUT_GPU();
  const std::vector<int32_t> ql = {1, 13, 128}, kl = {777, 63, 128};
  expect_close({14, 2, 64, 16, ql, kl, 51});
  expect_close({12, 2, 128, 7, ql, kl, 52});
  expect_close({4, 4, 128, 16, ql, kl, 53});
  expect_close({4, 4, 64, 7, ql, kl, 54});
}

// A chunk of a long prompt with a small batch: several row tiles, each split over the keys, with
// rows whose positions end in different chunks.
TEST(PagedBf16, ChunkedPrefillSplitKv) {
  GYRE_SKIP_WITHOUT_GPU();
  expect_close({14, 2, 64, 16, {13}, {5000}, 61});
  expect_close({12, 2, 128, 16, {40}, {3000}, 62});
  expect_close({14, 2, 64, 7, {1, 13}, {4000, 2500}, 63});
}

// Wide groups (G = 20 > 16 rows per CTA: a token's heads span two CTAs), page size 1, and
// sequences with no queries in the batch.
TEST(PagedBf16, OddShapes) {
  GYRE_SKIP_WITHOUT_GPU();
  expect_close({40, 2, 64, 16, {1, 1, 3}, {50, 700, 9}, 71});
  expect_close({40, 2, 128, 5, {2, 1}, {2, 3000}, 72});
  expect_close({14, 2, 64, 1, {1, 5, 1}, {1, 40, 200}, 73});
  expect_close({12, 2, 128, 16, {0, 1, 0, 5, 0}, {10, 20, 0, 5, 7}, 74});
}

// An empty batch writes nothing and launches nothing.
TEST(PagedBf16, EmptyBatch) {
  GYRE_SKIP_WITHOUT_GPU();
  EXPECT_EQ(run_case({12, 2, 128, 16, {0, 0}, {5, 9}, 81}), 0.0);
  cuda::paged_attention_bf16_fwd(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                 0, 12, 2, 128, 16, 0.1f, 0, 0, nullptr);
  cuda::sync();
}

TEST(PagedBf16, RejectsUnsupportedShapes) {
  GYRE_SKIP_WITHOUT_GPU();
  EXPECT_TRUE(cuda::paged_attention_bf16_supported(64));
  EXPECT_TRUE(cuda::paged_attention_bf16_supported(128));
  EXPECT_FALSE(cuda::paged_attention_bf16_supported(96));
  Tensor buf = Tensor::empty({1 << 16}, DType::f32, Device::cuda);
  const float* f = buf.f32();
  const auto* h = buf.data<uint16_t>();
  const auto* i = buf.data<int32_t>();
  EXPECT_THROW(cuda::paged_attention_bf16_fwd(f, h, h, i, i, i, i, 1, 1, 12, 2, 96, 16, 0.1f, 1, 1,
                                              buf.f32()),
               Error);
  EXPECT_THROW(cuda::paged_attention_bf16_fwd(f, h, h, i, i, i, i, 1, 1, 12, 5, 64, 16, 0.1f, 1, 1,
                                              buf.f32()),
               Error);
  EXPECT_THROW(cuda::paged_attention_bf16_fwd(f, h, h, i, i, i, i, 1, 1, 12, 2, 64, 0, 0.1f, 1, 1,
                                              buf.f32()),
               Error);
}

// The caller-owned workspace variant: the size query says how much, too little is refused.
TEST(PagedBf16, WorkspaceSize) {
  GYRE_SKIP_WITHOUT_GPU();
  // Batch 256 decode fills the GPU: no split, no scratch.
  EXPECT_EQ(cuda::paged_attention_bf16_workspace_bytes(256, 256, 14, 2, 64, 1, 384), 0u);
  // Batch 1 at 32k keys splits: partials of (D + 2) floats per (split, row).
  const size_t ws = cuda::paged_attention_bf16_workspace_bytes(1, 1, 12, 2, 128, 1, 32768);
  EXPECT_GT(ws, 0u);
  EXPECT_EQ(ws % (12 * 130 * sizeof(float)), 0u);
  EXPECT_LE(ws, size_t(1) << 22);
  Tensor buf = Tensor::empty({1 << 16}, DType::f32, Device::cuda);
  const auto* h = buf.data<uint16_t>();
  const auto* i = buf.data<int32_t>();
  EXPECT_THROW(cuda::paged_attention_bf16_fwd(buf.f32(), h, h, i, i, i, i, 1, 1, 12, 2, 128, 16,
                                              0.1f, 1, 32768, buf.f32(), buf.raw(), ws - 16),
               Error);
}

// ---- short contexts, bounds above the context, determinism, graph replay (issue 7) --------------

// Decode (one new token per sequence) at contexts around the 64-key tile and chunk boundaries, at
// batch 1 and 8 (the second half of the batch at other lengths, so sequences get different
// per-sequence chunks), Qwen2.5-0.5B (14/2/64, GQA 7:1) and 1.5B (12/2/128, 6:1) heads.
std::vector<Case> decode_cases(int64_t kv_bound_b1, int64_t kv_bound_b8) {
  std::vector<Case> cases;
  uint64_t seed = 100;
  for (int32_t ctx : {1, 7, 63, 64, 65, 150, 1000, 5000})
    for (int64_t B : {1, 8}) {
      std::vector<int32_t> ones(size_t(B), 1), lens(size_t(B), ctx);
      for (int64_t b = B / 2; b < B; ++b) lens[size_t(b)] = std::max<int32_t>(1, ctx / 3 + 5 * b);
      const int64_t bound = B == 1 ? kv_bound_b1 : kv_bound_b8;
      cases.push_back({14, 2, 64, 16, ones, lens, seed++, bound});
      cases.push_back({12, 2, 128, 16, ones, lens, seed++, bound});
    }
  return cases;
}

TEST(PagedBf16, DecodeShortAndLongContexts) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& c : decode_cases(0, 0)) expect_close(c);
}

// A decode graph sizes the split for the engine's context length, not the step's: the same
// contexts under bounds far above them (per-sequence chunks keep short contexts on one-tile CTAs).
TEST(PagedBf16, DecodeUnderLargeBound) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& c : decode_cases(32768, 8192)) expect_close(c);
  expect_close({14, 2, 64, 7, {1, 13}, {4000, 2500}, 90, 16384});  // prefill rows too
}

// Run to run, the output is bitwise identical (no atomics; the combine's order is fixed).
TEST(PagedBf16, Deterministic) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case cases[] = {
      {14, 2, 64, 16, {1}, {150}, 201},
      {12, 2, 128, 16, {1}, {5000}, 202, 32768},
      {14, 2, 64, 16, std::vector<int32_t>(8, 1), std::vector<int32_t>(8, 1000), 203},
      {12, 2, 128, 7, {1, 13}, {4000, 2500}, 204}};
  for (const Case& c : cases) {
    const std::vector<float> a = run_both(c).got, b = run_both(c).got;
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << describe(c);
  }
}

// The split plan under CUDA-graph capture: captured at one context with a bound (as
// infer/decode_graph.cc does), replayed after the kv_lens buffer changed to longer and shorter
// contexts; each replay must equal an eager call with the same bound bitwise, and the CPU
// reference within kAbsTol.
void graph_replay_case(int64_t Hq, int64_t Hkv, int64_t D, uint64_t seed) {
  const int64_t ps = 16, bound = 5000, B = 2;
  const int64_t pages_per_seq = (bound + ps - 1) / ps, P = B * pages_per_seq;
  std::vector<int32_t> pages(static_cast<size_t>(P)),
      indptr = {0, int32_t(pages_per_seq), int32_t(P)};
  std::iota(pages.begin(), pages.end(), 0);
  PhiloxStream r(seed, 9);
  for (size_t i = pages.size(); i > 1; --i) std::swap(pages[i - 1], pages[r.next_u32() % i]);
  const size_t cache_n = size_t(P * ps * Hkv * D);
  std::vector<uint16_t> kb(cache_n), vb(cache_n);
  std::vector<float> kf = normals(cache_n, seed + 1), vf = normals(cache_n, seed + 2);
  for (size_t i = 0; i < cache_n; ++i) {
    kb[i] = f32_to_bf16(kf[i]), kf[i] = bf16_to_f32(kb[i]);
    vb[i] = f32_to_bf16(vf[i]), vf[i] = bf16_to_f32(vb[i]);
  }
  const std::vector<int32_t> cu = {0, 1, 2};
  const std::vector<float> q = normals(size_t(B * Hq * D), seed + 3);
  const float scale = 1.0f / std::sqrt(float(D));
  Tensor gq = gpu(Tensor::from_vector(q, {B * Hq * D}));
  Tensor gkc = gpu(bf16_host(kb)), gvc = gpu(bf16_host(vb));
  Tensor gcu = gpu(Tensor::from_vector(cu, {B + 1}));
  Tensor gip = gpu(Tensor::from_vector(indptr, {B + 1}));
  Tensor gpg = gpu(Tensor::from_vector(pages, {P}));
  Tensor glen = gpu(Tensor::from_vector(std::vector<int32_t>{1000, 300}, {B}));
  Tensor gout = Tensor::zeros({B * Hq * D}, DType::f32, Device::cuda);
  Tensor eager = Tensor::zeros({B * Hq * D}, DType::f32, Device::cuda);
  const auto attend = [&](Tensor& out) {
    cuda::paged_attention_bf16_fwd(gq.f32(), gkc.data<uint16_t>(), gvc.data<uint16_t>(), gcu.i32(),
                                   glen.i32(), gip.i32(), gpg.i32(), B, B, Hq, Hkv, D, ps, scale, 1,
                                   bound, out.f32());
  };
  cuda::CudaGraph graph;
  graph.capture([&] { attend(gout); });
  const std::vector<std::vector<int32_t>> steps = {
      {5000, 4999}, {7, 1}, {64, 65}, {150, 2000}, {1000, 300}};
  for (const std::vector<int32_t>& lens : steps) {
    glen.copy_from(Tensor::from_vector(lens, {B}));
    graph.replay();
    attend(eager);
    const std::vector<float> got = gout.to(Device::cpu).to_vector();
    const std::vector<float> ref = eager.to(Device::cpu).to_vector();
    EXPECT_EQ(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)), 0)
        << "kv_lens " << lens[0] << ", " << lens[1];
    std::vector<float> want(got.size(), 0.0f);
    cpu::paged_attention_fwd(q.data(), kf.data(), vf.data(), cu.data(), lens.data(), indptr.data(),
                             pages.data(), B, Hq, Hkv, D, ps, scale, want.data());
    double max_abs = 0;
    for (size_t i = 0; i < got.size(); ++i)
      max_abs = std::isfinite(got[i])
                    ? std::max(max_abs, std::fabs(double(got[i]) - double(want[i])))
                    : std::numeric_limits<double>::infinity();
    EXPECT_LE(max_abs, kAbsTol) << "kv_lens " << lens[0] << ", " << lens[1];
  }
}

TEST(PagedBf16, GraphReplayAcrossContexts) {
  GYRE_SKIP_WITHOUT_GPU();
  graph_replay_case(14, 2, 64, 301);
  graph_replay_case(12, 2, 128, 302);
}

}  // namespace
}  // namespace gyre
