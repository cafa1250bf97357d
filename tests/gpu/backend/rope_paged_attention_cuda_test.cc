// ops::rope_paged_attention_ (backend/fused_rope_ops.h) on the GPU: a pure decode step's RoPE,
// bf16 KV-cache write and paged attention in one attention launch (plus the split combine) must
// leave out, k_cache and v_cache memcmp-equal to ops::rope_qk_paged_kv_write_ then
// ops::paged_attention — batches 1, 3, 64 and 256; heads 14/2/64, 12/2/128, 8/8 and the other CTA
// row counts (query heads per kv head 2, 4, 16); pages of 1, 16 and 64 slots; contexts of 1, 2, 63,
// 64, 65, 500 and 4097 keys, mixed in one batch; split and unsplit plans, under the batch's own
// bound and under a decode graph's; padding rows as infer/decode_graph.cc makes them (kv_len 1 over
// page 0, slot -1: nothing written); CUDA-graph capture and replay across steps. The fused kernel
// leaves q unrotated (the two ops rotate it), which tells which path ran. Shapes the kernel does
// not take (prefill chunks, an f32 cache, more than 16 query heads per kv head, slots that are not
// the sequences' last positions) run the two ops, bitwise as well.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/graph.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/fused_rope_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/paged_ops.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "kernel_count.h"

namespace gyre {
namespace {

using gputest::gpu;
using gputest::randn;

const std::vector<int32_t> kLens = {1, 2, 63, 64, 65, 500, 4097};

// ---- one decode step: host index arrays -------------------------------------------------------

struct Heads {
  int64_t Hq, Hkv, D;
};

struct Case {
  Heads h;
  int64_t page_size;
  std::vector<int32_t> kv_lens;  // the real sequences
  int64_t padding = 0;           // padding rows appended (infer/decode_graph.cc's)
  int64_t bound = 0;             // max_kv_len the plan is made for (0: the batch's longest)
  uint64_t seed = 1;
  std::vector<int32_t> q_lens = {};  // new tokens per real sequence (empty: one each)
};

std::string describe(const Case& c) {
  std::string s = "Hq " + std::to_string(c.h.Hq) + " Hkv " + std::to_string(c.h.Hkv) + " D " +
                  std::to_string(c.h.D) + " page " + std::to_string(c.page_size) + " B " +
                  std::to_string(c.kv_lens.size()) + "+" + std::to_string(c.padding) + " pad";
  if (c.bound) s += " bound " + std::to_string(c.bound);
  s += " kv:";
  for (size_t b = 0; b < c.kv_lens.size() && b < 8; ++b) s += " " + std::to_string(c.kv_lens[b]);
  if (c.kv_lens.size() > 8) s += " ...";
  return s;
}

// The engine's index arrays for the step (infer/step_batch_impl.h): sequence b's new tokens sit
// at positions kv_len - q_len .. kv_len - 1 and go to the slots of those positions in its pages.
// Real sequences take pages 1.. (shuffled); page 0 is read only by the padding rows, so no row
// reads a slot another row writes.
struct Step {
  std::vector<int32_t> cu{0}, kv, indptr{0}, pages, slots, pos;
  int64_t num_pages = 0, T = 0, B = 0, max_q = 1, max_kv = 1;
};

Step make_step(const Case& c) {
  Step s;
  const int64_t ps = c.page_size, R = int64_t(c.kv_lens.size());
  int64_t need = 0;
  for (int32_t kv : c.kv_lens) need += (kv + ps - 1) / ps;
  s.num_pages = need + 3;  // page 0 and two spares
  std::vector<int32_t> pool(size_t(s.num_pages - 1));
  std::iota(pool.begin(), pool.end(), 1);
  PhiloxStream r(c.seed, 21);
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[r.next_u32() % i]);
  size_t next = 0;
  for (int64_t b = 0; b < R; ++b) {
    const int32_t kv = c.kv_lens[size_t(b)];
    const int32_t nq = c.q_lens.empty() ? 1 : c.q_lens[size_t(b)];
    const int64_t np = (kv + ps - 1) / ps;
    std::vector<int32_t> mine(pool.begin() + int64_t(next), pool.begin() + int64_t(next) + np);
    next += size_t(np);
    for (int32_t p = kv - nq; p < kv; ++p) {
      s.pos.push_back(p);
      s.slots.push_back(int32_t(mine[size_t(p / ps)] * ps + p % ps));
    }
    s.pages.insert(s.pages.end(), mine.begin(), mine.end());
    s.cu.push_back(s.cu.back() + nq);
    s.kv.push_back(kv);
    s.indptr.push_back(int32_t(s.pages.size()));
    s.max_q = std::max<int64_t>(s.max_q, nq);
    s.max_kv = std::max<int64_t>(s.max_kv, kv);
  }
  for (int64_t i = 0; i < c.padding; ++i) {  // decode_graph.cc: token 0 at position 0 over page 0
    s.pos.push_back(0);
    s.slots.push_back(-1);
    s.kv.push_back(1);
    s.pages.push_back(0);
    s.indptr.push_back(int32_t(s.pages.size()));
    s.cu.push_back(s.cu.back() + 1);
  }
  s.T = s.cu.back();
  s.B = int64_t(s.kv.size());
  if (c.bound) s.max_kv = c.bound;
  return s;
}

// ---- data -------------------------------------------------------------------------------------

// bf16 bits of values spread over [-4, 4) (a cheap hash: the caches of the long cases hold tens of
// millions of elements); identical for equal seeds.
std::vector<uint16_t> cache_bits(size_t n, uint64_t seed) {
  std::vector<uint16_t> bits(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    bits[i] = f32_to_bf16(float(int64_t(x >> 40) - (int64_t(1) << 23)) * (4.0f / (1 << 23)));
  }
  return bits;
}

Tensor bf16_tensor(const std::vector<uint16_t>& bits, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::bf16);
  std::memcpy(t.raw(), bits.data(), bits.size() * 2);
  return t;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu);
  std::vector<uint8_t> b(h.nbytes());
  std::memcpy(b.data(), h.raw(), b.size());
  return b;
}

// Where two byte images first differ, as an element index of `elem` bytes ("none" if equal).
std::string first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t elem) {
  if (a.size() != b.size())
    return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return "element " + std::to_string(i / elem);
  return "none";
}

// Host inputs of one case: q/k/v of the new tokens, RoPE tables, the caches' initial contents.
struct Inputs {
  Case c;
  Step s;
  Tensor q, k, v, cos, sin;  // f32, CPU
  std::vector<uint16_t> kc0, vc0;
  DType cache_dtype = DType::bf16;
};

Inputs make_inputs(const Case& c, DType cache_dtype = DType::bf16) {
  Inputs in;
  in.c = c;
  in.s = make_step(c);
  in.cache_dtype = cache_dtype;
  const int64_t T = in.s.T, D = c.h.D, P = in.s.max_kv + 1;
  in.q = randn({T, c.h.Hq, D}, c.seed + 1);
  in.k = randn({T, c.h.Hkv, D}, c.seed + 2);
  in.v = randn({T, c.h.Hkv, D}, c.seed + 3);
  in.cos = randn({P, D / 2}, c.seed + 4);
  in.sin = randn({P, D / 2}, c.seed + 5);
  const size_t n = size_t(in.s.num_pages * c.page_size * c.h.Hkv * D);
  in.kc0 = cache_bits(n, c.seed + 6);
  in.vc0 = cache_bits(n, c.seed + 7);
  return in;
}

// Device copies of the step's tensors (static buffers for the graph test).
struct DeviceStep {
  Tensor q, k, v, cos, sin, pos, slots, cu, kv, indptr, pages, kc, vc, out;
};

Tensor cache_tensor(const Inputs& in, const std::vector<uint16_t>& bits) {
  const Shape shape = {in.s.num_pages, in.c.page_size, in.c.h.Hkv, in.c.h.D};
  if (in.cache_dtype == DType::bf16) return gpu(bf16_tensor(bits, shape));
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_f32(bits[i]);
  return gpu(Tensor::from_vector(f, shape));
}

DeviceStep upload(const Inputs& in) {
  DeviceStep d;
  const Step& s = in.s;
  d.q = gpu(in.q);
  d.k = gpu(in.k);
  d.v = gpu(in.v);
  d.cos = gpu(in.cos);
  d.sin = gpu(in.sin);
  d.pos = gpu(Tensor::from_vector(s.pos, {s.T}));
  d.slots = gpu(Tensor::from_vector(s.slots, {s.T}));
  d.cu = gpu(Tensor::from_vector(s.cu, {s.B + 1}));
  d.kv = gpu(Tensor::from_vector(s.kv, {s.B}));
  d.indptr = gpu(Tensor::from_vector(s.indptr, {s.B + 1}));
  d.pages = gpu(Tensor::from_vector(s.pages, {int64_t(s.pages.size())}));
  d.kc = cache_tensor(in, in.kc0);
  d.vc = cache_tensor(in, in.vc0);
  const std::vector<float> nan(size_t(in.q.numel()), std::numeric_limits<float>::quiet_NaN());
  d.out = gpu(Tensor::from_vector(nan, in.q.shape()));
  return d;
}

// What the caller of the engine's context proves once per step (PagedAttentionContext): index
// ranges and the paged layout with the plan's bound. Needed under graph capture (no host copies)
// and to plan for a bound above the batch's longest context.
void record(ops::KnownIndices& known, const Inputs& in, const DeviceStep& d) {
  const Step& s = in.s;
  known.add_range(d.pos, 0, s.max_kv);
  known.add_range(d.slots, -1, s.num_pages * in.c.page_size);
  known.add_paged_layout(d.cu, d.kv, d.indptr, d.pages, s.num_pages, in.c.page_size, s.max_q,
                         s.max_kv);
}

struct Result {
  std::vector<uint8_t> out, kc, vc, q, k, v;
};

enum class Path { two_ops, fused_op };

// What the engine's context checks on the host once per step before it vouches for the slots
// (ops::rope_paged_attention_'s slots_verified).
bool slots_verified(const Inputs& in) {
  const Step& s = in.s;
  return s.T == s.B &&
         ops::decode_slots_match_pages(s.cu.data(), s.kv.data(), s.indptr.data(), s.pages.data(),
                                       s.slots.data(), s.B, in.c.page_size);
}

// Runs one path on fresh device copies of the inputs. `known`: inside a KnownIndices scope (always
// when the case has a bound).
Result run(const Inputs& in, Path path, bool known = false) {
  DeviceStep d = upload(in);
  ops::KnownIndices scope;
  const bool recorded = known || in.c.bound;
  if (recorded) record(scope, in, d);
  const float scale = 1.0f / std::sqrt(float(in.c.h.D));
  if (path == Path::fused_op) {
    // Under a recorded layout the caller vouches for the slots, as the engine's context does.
    ops::rope_paged_attention_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc, d.cu, d.kv,
                               d.indptr, d.pages, scale, d.out, recorded && slots_verified(in));
  } else {
    ops::rope_qk_paged_kv_write_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc);
    ops::paged_attention(d.q, d.kc, d.vc, d.cu, d.kv, d.indptr, d.pages, scale, d.out);
  }
  return {bytes_of(d.out), bytes_of(d.kc), bytes_of(d.vc),
          bytes_of(d.q),   bytes_of(d.k),  bytes_of(d.v)};
}

bool fuses(const Inputs& in) {
  return ops::rope_paged_attention_fuses(Device::cuda, in.cache_dtype, in.c.h.Hq, in.c.h.Hkv,
                                         in.c.h.D, in.s.B, in.s.T, in.s.max_q);
}

bool splits(const Inputs& in) {
  return cuda::paged_attention_bf16_workspace_bytes(in.s.B, in.s.T, in.c.h.Hq, in.c.h.Hkv, in.c.h.D,
                                                    in.s.max_q, in.s.max_kv) > 0;
}

// The fused op against the two ops: out, k_cache, v_cache bitwise; k, v untouched; q untouched
// when the fused kernel ran (expect_fused), rotated like the two ops' otherwise. Returns whether
// the plan split the keys.
bool check(const Case& c, bool expect_fused = true, DType cache_dtype = DType::bf16,
           bool known = false) {
  const Inputs in = make_inputs(c, cache_dtype);
  EXPECT_EQ(fuses(in) && cache_dtype == DType::bf16, expect_fused && cache_dtype == DType::bf16)
      << describe(c);
  const Result want = run(in, Path::two_ops, known);
  const Result got = run(in, Path::fused_op, known);
  const std::string what = describe(c);
  const size_t cache_elem = cache_dtype == DType::bf16 ? 2 : 4;
  EXPECT_EQ(first_diff(got.out, want.out, 4), "none") << "out, " << what;
  EXPECT_EQ(first_diff(got.kc, want.kc, cache_elem), "none") << "k_cache, " << what;
  EXPECT_EQ(first_diff(got.vc, want.vc, cache_elem), "none") << "v_cache, " << what;
  EXPECT_EQ(got.k, want.k) << "k is only read, " << what;
  EXPECT_EQ(got.v, want.v) << "v is only read, " << what;
  std::vector<uint8_t> q0(in.q.nbytes());
  std::memcpy(q0.data(), in.q.raw(), q0.size());
  if (expect_fused)
    EXPECT_EQ(got.q, q0) << "the fused kernel leaves q unrotated, " << what;
  else
    EXPECT_EQ(got.q, want.q) << "the two ops rotate q, " << what;
  // No output row left unwritten (NaN-initialised), so the memcmp above compared real values.
  std::vector<float> out(got.out.size() / 4);
  std::memcpy(out.data(), got.out.data(), got.out.size());
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i])) {
      ADD_FAILURE() << "out element " << i << " not finite, " << what;
      break;
    }
  return splits(in);
}

const Heads k05b{14, 2, 64}, k15b{12, 2, 128}, kMha{8, 8, 64};

// ---- bitwise: batches 1 and 3, every context length, page size and head shape ----------------

TEST(RopePagedAttentionCuda, Batch1And3EveryLength) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 1000;
  int split = 0, unsplit = 0;
  for (const Heads& h : {k05b, k15b, kMha})
    for (int64_t ps : {1, 16, 64})
      for (int32_t kv : kLens) {
        (check({h, ps, {kv}, 0, 0, seed++}) ? split : unsplit)++;
        // Batch 3 with mixed lengths: the sequences get different per-sequence chunks.
        (check({h, ps, {kv, std::max(1, kv / 2), kv + 33}, 0, 0, seed++}) ? split : unsplit)++;
      }
  EXPECT_GT(split, 0);
  EXPECT_GT(unsplit, 0);
}

// The other CTA row counts (R = 2, 4, 16: query heads per kv head 2, 4, 16) and 8/8 at D = 128.
TEST(RopePagedAttentionCuda, OtherGroupSizes) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 2000;
  for (const Heads& h :
       {Heads{4, 2, 128}, Heads{16, 4, 64}, Heads{32, 2, 64}, Heads{16, 1, 128}, Heads{8, 8, 128}})
    for (int32_t kv : {1, 64, 65, 500, 4097}) {
      check({h, 16, {kv}, 0, 0, seed++});
      check({h, 16, {kv, 2, 777}, 0, 0, seed++});
    }
}

// Batches 64 and 256 of mixed lengths (every length of kLens in each), with padding rows in the
// batch-64 ones. 0.5B heads: batch 64 splits (128 CTAs < the SM count), batch 256 does not.
TEST(RopePagedAttentionCuda, Batch64And256Mixed) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 3000;
  const auto lens = [](int64_t n, uint64_t salt) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int64_t b = 0; b < n; ++b)
      v[size_t(b)] =
          kLens[size_t((b * 5 + int64_t(salt)) % int64_t(kLens.size()))] + int32_t(b % 3);
    return v;
  };
  for (const Heads& h : {k05b, k15b, kMha})
    for (int64_t ps : {1, 16, 64}) check({h, ps, lens(60, seed), 4, 0, seed++});
  for (const Heads& h : {k05b, k15b, kMha}) check({h, 16, lens(256, seed), 0, 0, seed++});
  check({k05b, 1, lens(256, seed), 0, 0, seed++});
  check({k15b, 64, lens(250, seed), 6, 0, seed++});
  // Which plans ran: batch 1 at 4097 keys splits, batch 256 of the 0.5B heads does not.
  EXPECT_GT(cuda::paged_attention_bf16_workspace_bytes(1, 1, 14, 2, 64, 1, 4097), 0u);
  EXPECT_EQ(cuda::paged_attention_bf16_workspace_bytes(256, 256, 14, 2, 64, 1, 4097), 0u);
}

// A decode graph's plan: the split sized for the engine's context (a bound far above the step's
// contexts), with padding rows.
TEST(RopePagedAttentionCuda, UnderALargeBound) {
  GYRE_SKIP_WITHOUT_GPU();
  uint64_t seed = 4000;
  for (const Heads& h : {k05b, k15b})
    for (int32_t kv : kLens) {
      EXPECT_TRUE(check({h, 16, {kv}, 0, 32768, seed++}));
      check({h, 16, {kv, 3, 1000}, 1, 8192, seed++});
      check({h, 64, std::vector<int32_t>(8, kv), 8, 8192, seed++});
    }
}

// ---- CUDA graph ---------------------------------------------------------------------------------

// The fused op captured once (KnownIndices as the engine's context records them, a bound as
// decode_graph.cc passes) and replayed after the step's buffers changed — contexts, slots,
// positions, q/k/v and the caches' contents: each replay's out and caches equal the two ops run
// eagerly with the same bound, bitwise.
void graph_case(const Heads& h, uint64_t seed) {
  const int64_t ps = 16, bound = 5000, per_seq = (bound + ps - 1) / ps;
  // Two real sequences with pages for the whole bound, two padding rows (a bucket of 4).
  Case c{h, ps, {int32_t(bound), int32_t(bound)}, 2, bound, seed};
  Inputs in = make_inputs(c);
  DeviceStep d = upload(in);
  ops::KnownIndices scope;
  record(scope, in, d);
  const float scale = 1.0f / std::sqrt(float(h.D));
  const bool verified = slots_verified(in);
  ASSERT_TRUE(verified);
  const auto fused = [&] {
    ops::rope_paged_attention_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc, d.cu, d.kv,
                               d.indptr, d.pages, scale, d.out, verified);
  };
  cuda::CudaGraph graph;
  graph.capture(fused);
  const std::vector<std::vector<int32_t>> steps = {{5000, 4999}, {7, 1},      {64, 65},
                                                   {150, 2000},  {1000, 300}, {4097, 2}};
  uint64_t s = seed;
  for (const std::vector<int32_t>& lens : steps) {
    // The step: kv_lens, positions and slots of the real rows (their pages stay), new data.
    Inputs step = in;
    for (size_t b = 0; b < 2; ++b) {
      const int32_t kv = lens[b], p = kv - 1;
      step.s.kv[b] = kv;
      step.s.pos[b] = p;
      step.s.slots[b] = int32_t(step.s.pages[size_t(int64_t(b) * per_seq + p / ps)] * ps + p % ps);
    }
    step.q = randn(in.q.shape(), ++s);
    step.k = randn(in.k.shape(), ++s);
    step.v = randn(in.v.shape(), ++s);
    step.kc0 = cache_bits(in.kc0.size(), ++s);
    step.vc0 = cache_bits(in.vc0.size(), ++s);
    d.q.copy_from(step.q);
    d.k.copy_from(step.k);
    d.v.copy_from(step.v);
    d.kv.copy_from(Tensor::from_vector(step.s.kv, {step.s.B}));
    d.pos.copy_from(Tensor::from_vector(step.s.pos, {step.s.T}));
    d.slots.copy_from(Tensor::from_vector(step.s.slots, {step.s.T}));
    d.kc.copy_from(bf16_tensor(step.kc0, d.kc.shape()));
    d.vc.copy_from(bf16_tensor(step.vc0, d.vc.shape()));
    graph.replay();
    const Result want = run(step, Path::two_ops, true);
    const std::string what =
        describe(c) + " kv_lens " + std::to_string(lens[0]) + ", " + std::to_string(lens[1]);
    EXPECT_EQ(first_diff(bytes_of(d.out), want.out, 4), "none") << "out, " << what;
    EXPECT_EQ(first_diff(bytes_of(d.kc), want.kc, 2), "none") << "k_cache, " << what;
    EXPECT_EQ(first_diff(bytes_of(d.vc), want.vc, 2), "none") << "v_cache, " << what;
  }
}

TEST(RopePagedAttentionCuda, GraphReplayEqualsEager) {
  GYRE_SKIP_WITHOUT_GPU();
  graph_case(k05b, 5001);
  graph_case(k15b, 5002);
}

// ---- launches
// -------------------------------------------------------------------------------------

// One kernel where the two ops launch two (RoPE + KV write, attention), plus the combine when the
// keys are split.
TEST(RopePagedAttentionCuda, OneLaunchFewer) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const Case& c : {Case{k05b, 16, {500}, 0, 0, 6001},  // splits: attention + combine
                        Case{k05b, 16, std::vector<int32_t>(256, 300), 0, 0, 6002}}) {
    const Inputs in = make_inputs(c);
    DeviceStep d = upload(in);
    ops::KnownIndices scope;  // no device-to-host check copies (they would break the capture)
    record(scope, in, d);
    const float scale = 1.0f / std::sqrt(float(c.h.D));
    const bool verified = slots_verified(in);
    EXPECT_TRUE(verified) << describe(c);
    const auto fused = [&] {
      ops::rope_paged_attention_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc, d.cu,
                                 d.kv, d.indptr, d.pages, scale, d.out, verified);
    };
    const auto two = [&] {
      ops::rope_qk_paged_kv_write_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc);
      ops::paged_attention(d.q, d.kc, d.vc, d.cu, d.kv, d.indptr, d.pages, scale, d.out);
    };
    fused();  // warm: pool scratch of the split and kernel attributes exist before the captures
    two();
    const size_t combine = splits(in) ? 1 : 0;
    EXPECT_EQ(gputest::kernels_launched(fused), 1 + combine) << describe(c);
    EXPECT_EQ(gputest::kernels_launched(two), 2 + combine) << describe(c);
  }
}

// ---- what does not fuse runs the two ops ------------------------------------------------------

TEST(RopePagedAttentionCuda, OtherShapesRunTheTwoOps) {
  GYRE_SKIP_WITHOUT_GPU();
  // Prefill chunks (several new tokens per sequence) and a decode row in one step.
  Case prefill{k05b, 16, {20, 500, 7}, 0, 0, 7001};
  prefill.q_lens = {5, 1, 7};
  check(prefill, false);
  // An f32 cache.
  check({k05b, 16, {65, 3}, 0, 0, 7002}, false, DType::f32);
  check({k15b, 16, {4097}, 0, 0, 7003}, false, DType::f32);
  // 20 query heads per kv head: two CTAs per (sequence, kv head) would read the new key.
  check({Heads{40, 2, 64}, 16, {500, 9}, 0, 0, 7004}, false);
  // Within a KnownIndices scope too (the engine's case).
  check(prefill, false, DType::bf16, true);
  check({k05b, 16, {65, 3}, 0, 0, 7005}, true, DType::bf16, true);
}

// Slots that are not where the attention reads the new keys: checked on host copies when the
// indices are not recorded, and then the two ops run.
TEST(RopePagedAttentionCuda, MismatchedSlotsRunTheTwoOps) {
  GYRE_SKIP_WITHOUT_GPU();
  Inputs in = make_inputs({k05b, 16, {40, 100}, 0, 0, 7101});
  in.s.slots[1] = int32_t(in.s.num_pages * 16 - 1);  // the last spare page's last slot
  const Result want = run(in, Path::two_ops);
  const Result got = run(in, Path::fused_op);
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(got.kc, want.kc);
  EXPECT_EQ(got.vc, want.vc);
  EXPECT_EQ(got.q, want.q);  // rotated: the two ops ran
  // Under a recorded layout without the caller's word on the slots: the two ops as well (the
  // recorded layout says nothing about slot_mapping).
  const Result got_known = run(in, Path::fused_op, /*known=*/true);
  EXPECT_EQ(got_known.out, want.out);
  EXPECT_EQ(got_known.kc, want.kc);
  EXPECT_EQ(got_known.q, want.q);
}

TEST(RopePagedAttentionCuda, BadArgumentsChangeNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  const Inputs in = make_inputs({k05b, 16, {40, 100}, 0, 0, 7201});
  DeviceStep d = upload(in);
  const std::vector<uint8_t> q0 = bytes_of(d.q), kc0 = bytes_of(d.kc), out0 = bytes_of(d.out);
  Tensor bad_slots = gpu(
      Tensor::from_vector(std::vector<int32_t>{in.s.slots[0], int32_t(in.s.num_pages * 16)}, {2}));
  try {
    ops::rope_paged_attention_(d.q, d.k, d.v, d.pos, d.cos, d.sin, bad_slots, d.kc, d.vc, d.cu,
                               d.kv, d.indptr, d.pages, 0.125f, d.out);
    ADD_FAILURE() << "a slot outside the cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_paged_attention_: slot_mapping[1]"),
              std::string::npos)
        << e.what();
  }
  Tensor short_out = Tensor::zeros({2, 13, 64}, DType::f32, Device::cuda);
  try {
    ops::rope_paged_attention_(d.q, d.k, d.v, d.pos, d.cos, d.sin, d.slots, d.kc, d.vc, d.cu, d.kv,
                               d.indptr, d.pages, 0.125f, short_out);
    ADD_FAILURE() << "an out of the wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_paged_attention_: out must have q's shape"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(bytes_of(d.q), q0);
  EXPECT_EQ(bytes_of(d.kc), kc0);
  EXPECT_EQ(bytes_of(d.out), out0);
}

}  // namespace
}  // namespace gyre
