// cuda::decode_stack_bf16 (backend/cuda/decode_stack.h): the decoder layers of a batch-1 decode
// step in one persistent kernel must leave the residual stream x and both KV caches byte-equal to
// the per-op fused decode it replaces — per layer linear_gemv_bf16_group_rms (q/k/v behind the
// input norm), rope_paged_attention_bf16_decode (RoPE + KV write + paged attention, split or not),
// linear_gemv_bf16_residual (o_proj), linear_gemv_bf16_silu_mul_rms (gate/up behind the
// post-attention norm) and linear_gemv_bf16_residual (down_proj). Shapes: Qwen2.5-0.5B's heads
// (14/2/64, biased q/k/v) with its 4864-wide MLP (split-K down projection), Qwen2.5-1.5B's
// (12/2/128, hidden 1536) with a shorter MLP, and a small 4/1/64 model; contexts from 1 key (no
// split) through several split chunks under a 4096-key plan bound, and an unsplit plan; several
// consecutive steps, each reading the keys the previous step wrote.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/decode_stack.h"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"

namespace gyre {
namespace {

using gputest::gpu;
using gputest::randn;

struct Shape5 {
  int64_t layers, H, Hq, Hkv, D, I;
  bool qkv_bias;
};

// Random bf16 weights [n, k] scaled by 1/sqrt(k), so activations stay O(1) through the layers.
Tensor bf16_weight(int64_t n, int64_t k, uint64_t seed) {
  const Tensor f = randn({n, k}, seed, float(1.0 / std::sqrt(double(k))));
  const std::vector<float> v = f.to_vector();
  Tensor t = Tensor::empty({n, k}, DType::bf16);
  uint16_t* b = static_cast<uint16_t*>(t.raw());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return gpu(t);
}

Tensor norm_weight(int64_t n, uint64_t seed) {
  std::vector<float> v = randn({n}, seed, 0.1f).to_vector();
  for (float& x : v) x += 1.0f;
  return gpu(Tensor::from_vector(v, {n}));
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu);
  std::vector<uint8_t> b(h.nbytes());
  std::memcpy(b.data(), h.raw(), b.size());
  return b;
}

const uint16_t* bf16p(const Tensor& t) { return static_cast<const uint16_t*>(t.raw()); }
uint16_t* bf16p_mut(const Tensor& t) { return static_cast<uint16_t*>(t.raw()); }

struct Model {
  Shape5 s;
  std::vector<Tensor> keep;  // owns every device tensor below
  std::vector<cuda::DecodeStackLayer> layers;
  Tensor cos, sin;
};

constexpr int64_t kPageSize = 16;

// Weights, and per layer a KV cache of `pages` pages; the caches start as random bf16 values.
Model make_model(const Shape5& s, int64_t pages, int64_t max_pos, uint64_t seed) {
  Model m;
  m.s = s;
  const int64_t qd = s.Hq * s.D, kvd = s.Hkv * s.D;
  auto hold = [&](Tensor t) {
    m.keep.push_back(t);
    return t;
  };
  for (int64_t l = 0; l < s.layers; ++l) {
    const uint64_t b = seed + 100 * uint64_t(l);
    cuda::DecodeStackLayer L;
    L.input_norm = hold(norm_weight(s.H, b + 1)).f32();
    L.wq = bf16p(hold(bf16_weight(qd, s.H, b + 2)));
    L.wk = bf16p(hold(bf16_weight(kvd, s.H, b + 3)));
    L.wv = bf16p(hold(bf16_weight(kvd, s.H, b + 4)));
    if (s.qkv_bias) {
      L.bq = hold(gpu(randn({qd}, b + 5, 0.1f))).f32();
      L.bk = hold(gpu(randn({kvd}, b + 6, 0.1f))).f32();
      L.bv = hold(gpu(randn({kvd}, b + 7, 0.1f))).f32();
    }
    L.wo = bf16p(hold(bf16_weight(s.H, qd, b + 8)));
    L.post_norm = hold(norm_weight(s.H, b + 9)).f32();
    L.wg = bf16p(hold(bf16_weight(s.I, s.H, b + 10)));
    L.wu = bf16p(hold(bf16_weight(s.I, s.H, b + 11)));
    L.wd = bf16p(hold(bf16_weight(s.H, s.I, b + 12)));
    const Tensor kc = randn({pages, kPageSize, s.Hkv, s.D}, b + 13).to(DType::bf16);
    const Tensor vc = randn({pages, kPageSize, s.Hkv, s.D}, b + 14).to(DType::bf16);
    L.k_cache = bf16p_mut(hold(gpu(kc)));
    L.v_cache = bf16p_mut(hold(gpu(vc)));
    m.layers.push_back(L);
  }
  // RoPE tables as the model builds them (theta 1e6): cos/sin(pos * theta^(-2i / D)).
  std::vector<float> c(size_t(max_pos * s.D / 2)), sn(c.size());
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < s.D / 2; ++i) {
      const double a = double(p) * std::pow(1e6, -2.0 * double(i) / double(s.D));
      c[size_t(p * s.D / 2 + i)] = float(std::cos(a));
      sn[size_t(p * s.D / 2 + i)] = float(std::sin(a));
    }
  m.cos = gpu(Tensor::from_vector(c, {max_pos, s.D / 2}));
  m.sin = gpu(Tensor::from_vector(sn, {max_pos, s.D / 2}));
  return m;
}

// One decode step's index arrays for a single sequence of kv_len keys (its new token at position
// kv_len - 1) over pages 1.. in a shuffled order (page 0 unused).
struct StepIdx {
  Tensor pos, slots, cu, kv, indptr, pages;
};

StepIdx make_step(int32_t kv_len, const std::vector<int32_t>& page_order) {
  StepIdx s;
  const int32_t np = (kv_len + int32_t(kPageSize) - 1) / int32_t(kPageSize);
  std::vector<int32_t> pages(page_order.begin(), page_order.begin() + np);
  const int32_t p = kv_len - 1;
  const int32_t slot = pages[size_t(p / kPageSize)] * int32_t(kPageSize) + p % int32_t(kPageSize);
  s.pos = gpu(Tensor::from_vector(std::vector<int32_t>{p}, {1}));
  s.slots = gpu(Tensor::from_vector(std::vector<int32_t>{slot}, {1}));
  s.cu = gpu(Tensor::from_vector(std::vector<int32_t>{0, 1}, {2}));
  s.kv = gpu(Tensor::from_vector(std::vector<int32_t>{kv_len}, {1}));
  s.indptr = gpu(Tensor::from_vector(std::vector<int32_t>{0, np}, {2}));
  s.pages = gpu(Tensor::from_vector(pages, {np}));
  return s;
}

// The per-op fused decode of every layer (the reference), on x in place.
void reference_layers(const Model& m, const std::vector<cuda::DecodeStackLayer>& layers, float* x,
                      const StepIdx& st, int64_t max_kv, double eps, float scale) {
  const Shape5& s = m.s;
  const int64_t qd = s.Hq * s.D, kvd = s.Hkv * s.D;
  Tensor q = Tensor::empty({qd}, DType::f32, Device::cuda);
  Tensor k = Tensor::empty({kvd}, DType::f32, Device::cuda);
  Tensor v = Tensor::empty({kvd}, DType::f32, Device::cuda);
  Tensor attn = Tensor::empty({qd}, DType::f32, Device::cuda);
  Tensor act = Tensor::empty({s.I}, DType::f32, Device::cuda);
  for (const cuda::DecodeStackLayer& L : layers) {
    cuda::RmsPrologue n1;
    n1.w = L.input_norm, n1.eps = eps;
    cuda::GemvGroup g;
    g.count = 3;
    g.w[0] = L.wq, g.w[1] = L.wk, g.w[2] = L.wv;
    g.b[0] = L.bq, g.b[1] = L.bk, g.b[2] = L.bv;
    g.y[0] = q.f32(), g.y[1] = k.f32(), g.y[2] = v.f32();
    g.n[0] = qd, g.n[1] = kvd, g.n[2] = kvd;
    cuda::linear_gemv_bf16_group_rms(x, n1, g, 1, s.H);
    cuda::rope_paged_attention_bf16_decode(
        q.f32(), k.f32(), v.f32(), st.pos.i32(), m.cos.f32(), m.sin.f32(), st.slots.i32(),
        L.k_cache, L.v_cache, st.cu.i32(), st.kv.i32(), st.indptr.i32(), st.pages.i32(), 1, s.Hq,
        s.Hkv, s.D, kPageSize, scale, max_kv, attn.f32());
    cuda::linear_gemv_bf16_residual(attn.f32(), L.wo, L.bo, x, 1, s.H, qd, x);
    cuda::RmsPrologue n2;
    n2.w = L.post_norm, n2.eps = eps;
    cuda::linear_gemv_bf16_silu_mul_rms(x, n2, L.wg, L.bg, L.wu, L.bu, 1, s.I, s.H, act.f32());
    cuda::linear_gemv_bf16_residual(act.f32(), L.wd, L.bd, x, 1, s.H, s.I, x);
  }
}

// Runs `steps` consecutive decode steps from kv_len first_kv through both paths (each with its
// own copy of the caches and of x) and compares x and the caches after every step.
void check(const Shape5& s, int32_t first_kv, int steps, int64_t max_kv, uint64_t seed) {
  const int64_t pages = (max_kv + kPageSize - 1) / kPageSize + 2;
  Model a = make_model(s, pages, max_kv + 1, seed);
  // Path B's caches: copies of path A's.
  std::vector<cuda::DecodeStackLayer> b_layers = a.layers;
  std::vector<Tensor> b_caches;
  const int64_t cache_elems = pages * kPageSize * s.Hkv * s.D;
  for (cuda::DecodeStackLayer& L : b_layers) {
    for (uint16_t** c : {&L.k_cache, &L.v_cache}) {
      Tensor t = Tensor::empty({cache_elems}, DType::bf16, Device::cuda);
      ASSERT_EQ(cudaMemcpy(t.raw(), *c, size_t(cache_elems) * 2, cudaMemcpyDeviceToDevice),
                cudaSuccess);
      *c = bf16p_mut(t);
      b_caches.push_back(t);
    }
  }
  std::vector<int32_t> order(size_t(pages - 1));
  std::iota(order.begin(), order.end(), 1);
  PhiloxStream r(seed, 5);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[r.next_u32() % i]);
  const double eps = double(1e-6f);
  const float scale = float(1.0 / std::sqrt(double(s.D)));
  Tensor xa = gpu(randn({s.H}, seed + 7));
  Tensor xb = xa.clone();
  for (int step = 0; step < steps; ++step) {
    const int32_t kv_len = first_kv + step;
    const StepIdx st = make_step(kv_len, order);
    reference_layers(a, a.layers, xa.f32(), st, max_kv, eps, scale);
    cuda::DecodeStackArgs args;
    args.layers = s.layers, args.H = s.H, args.Hq = s.Hq, args.Hkv = s.Hkv, args.D = s.D;
    args.I = s.I, args.eps = eps, args.scale = scale;
    args.layer = b_layers.data();
    args.x = xb.f32();
    args.positions = st.pos.i32(), args.slot_mapping = st.slots.i32();
    args.cu_seqlens_q = st.cu.i32(), args.kv_lens = st.kv.i32();
    args.page_indptr = st.indptr.i32(), args.page_indices = st.pages.i32();
    args.cos = a.cos.f32(), args.sin = a.sin.f32();
    args.page_size = kPageSize, args.max_kv_len = max_kv;
    cuda::decode_stack_bf16(args);
    cuda::sync();
    const std::string at = "step " + std::to_string(step) + " (kv_len " + std::to_string(kv_len) +
                           ", bound " + std::to_string(max_kv) + ")";
    const std::vector<uint8_t> ga = bytes_of(xa), gb = bytes_of(xb);
    ASSERT_EQ(ga, gb) << "x differs at " << at;
    const std::vector<float> xv = xa.to(Device::cpu).to_vector();
    for (float v : xv) ASSERT_TRUE(std::isfinite(v)) << at;
    for (size_t l = 0; l < a.layers.size(); ++l) {
      for (int kvi = 0; kvi < 2; ++kvi) {
        const uint16_t* pa = kvi ? a.layers[l].v_cache : a.layers[l].k_cache;
        const uint16_t* pb = kvi ? b_layers[l].v_cache : b_layers[l].k_cache;
        std::vector<uint16_t> ha(static_cast<size_t>(cache_elems)), hb(ha.size());
        ASSERT_EQ(cudaMemcpy(ha.data(), pa, ha.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(hb.data(), pb, hb.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_TRUE(ha == hb) << (kvi ? "v" : "k") << " cache of layer " << l << " at " << at;
      }
    }
  }
}

TEST(DecodeStackCuda, Qwen05bHeadsSplitDownMatchesTheFusedOpsBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  const Shape5 s{2, 896, 14, 2, 64, 4864, true};
  ASSERT_TRUE(cuda::decode_stack_supported(s.layers, s.H, s.Hq, s.Hkv, s.D, s.I));
  check(s, 1, 2, 4096, 11);    // one key, then two: split 0 finishes the row (no combine read)
  check(s, 64, 3, 4096, 12);   // across the 64-key chunk boundary: the combine runs
  check(s, 500, 2, 4096, 13);  // several chunks
  check(s, 300, 2, 384, 14);   // a short bound: fewer splits
}

TEST(DecodeStackCuda, Qwen15bHeadsMatchTheFusedOpsBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  const Shape5 s{2, 1536, 12, 2, 128, 4352, true};
  ASSERT_TRUE(cuda::decode_stack_supported(s.layers, s.H, s.Hq, s.Hkv, s.D, s.I));
  check(s, 130, 2, 4096, 21);
  check(s, 7, 2, 64, 22);  // a one-tile bound: no split at all
}

TEST(DecodeStackCuda, SmallModelsUnsplitMlpMatchTheFusedOpsBitwise) {
  GYRE_SKIP_WITHOUT_GPU();
  // Query heads per kv head 4, 2 and 1 (attention CTAs of 4, 2 and 1 rows).
  for (const Shape5 s : {Shape5{3, 256, 4, 1, 64, 768, false}, Shape5{2, 256, 4, 2, 64, 512, true},
                         Shape5{2, 512, 4, 4, 128, 1024, false}}) {
    SCOPED_TRACE("heads " + std::to_string(s.Hq) + "/" + std::to_string(s.Hkv));
    ASSERT_TRUE(cuda::decode_stack_supported(s.layers, s.H, s.Hq, s.Hkv, s.D, s.I));
    check(s, 1, 3, 2048, 31);
    check(s, 1000, 2, 2048, 32);
  }
}

TEST(DecodeStackCuda, UnsupportedShapesAreRefusedWithAClearError) {
  GYRE_SKIP_WITHOUT_GPU();
  EXPECT_FALSE(cuda::decode_stack_supported(0, 896, 14, 2, 64, 4864));     // no layers
  EXPECT_FALSE(cuda::decode_stack_supported(65, 896, 14, 2, 64, 4864));    // too many
  EXPECT_FALSE(cuda::decode_stack_supported(2, 896, 14, 2, 96, 4864));     // head dim 96
  EXPECT_FALSE(cuda::decode_stack_supported(2, 896, 34, 2, 64, 4864));     // 17 heads per CTA
  EXPECT_FALSE(cuda::decode_stack_supported(2, 3584, 28, 4, 128, 18944));  // rows past a slot
  cuda::DecodeStackArgs args;
  args.layers = 2, args.H = 3584, args.Hq = 28, args.Hkv = 4, args.D = 128, args.I = 18944;
  try {
    cuda::decode_stack_bf16(args);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported sizes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gyre
