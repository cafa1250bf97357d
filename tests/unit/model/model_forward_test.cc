// CausalLM forward through an AttentionContext (the rollout engine's seam): a naive single-sequence
// KV cache written here attends over cached + new tokens; decoding token by token with absolute
// positions must reproduce the full-sequence logits. Also: concurrent forwards on one model; the
// scoring forward (nothing saved: the fused linears of decode_fusion.h, on the CPU their unfused
// composition) bitwise the training forward's and the fusion-off forward's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"
#include "test_util.h"

namespace gyre::model {
namespace {

// One sequence; per layer the cached k, v rows [n, Hkv, D]. Straightforward softmax attention in
// double, independent of the ops kernels.
class NaiveCacheContext : public AttentionContext {
 public:
  NaiveCacheContext(int64_t layers, int64_t hkv, int64_t d)
      : k_(layers), v_(layers), hkv_(hkv), d_(d) {}
  void attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v, float scale,
              Tensor& out) override {
    auto& K = k_[size_t(layer)];
    auto& V = v_[size_t(layer)];
    const int64_t T = q.size(0), Hq = q.size(1), D = d_;
    const int64_t start = int64_t(K.size()) / (hkv_ * D);  // tokens already cached
    K.insert(K.end(), k.f32(), k.f32() + k.numel());
    V.insert(V.end(), v.f32(), v.f32() + v.numel());
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = start + t + 1;  // causal: cached prefix + new tokens up to t
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / (Hq / hkv_);
        std::vector<double> s(static_cast<size_t>(n));
        double mx = -1e300;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t x = 0; x < D; ++x)
            dot += double(q.f32()[(t * Hq + h) * D + x]) * K[size_t((j * hkv_ + g) * D + x)];
          s[size_t(j)] = dot * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (int64_t x = 0; x < D; ++x) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j) acc += s[size_t(j)] * V[size_t((j * hkv_ + g) * D + x)];
          out.f32()[(t * Hq + h) * D + x] = float(acc / z);
        }
      }
    }
  }

 private:
  std::vector<std::vector<float>> k_, v_;
  int64_t hkv_, d_;
};

TEST(ModelForward, KvCacheDecodeMatchesFullForward) {
  for (const char* name : {"llama3_tiny", "qwen3moe_tiny"}) {
    auto m = CausalLM::load(test::source_path(std::string("tests/fixtures/models/") + name));
    const ModelConfig& c = m->config();
    const std::vector<int32_t> seq = {5, 9, 200, 17, 3, 88, 41, 7, 300, 12};
    Tensor full = m->forward(Batch::pack({seq}), {});
    NaiveCacheContext ctx(c.num_hidden_layers, c.num_key_value_heads, c.head_dim);
    ForwardOptions o;
    o.attention = &ctx;
    // Prefill 6 tokens (logits of the last one only), then decode one token at a time.
    const int64_t P = 6, V = c.vocab_size;
    std::vector<int32_t> prefix(seq.begin(), seq.begin() + P);
    o.logits_rows = Tensor::from_vector(std::vector<int32_t>{int32_t(P - 1)}, {1});
    Tensor lp = m->forward(Batch::pack({prefix}), o);
    for (int64_t v = 0; v < V; ++v)
      ASSERT_NEAR(lp.f32()[v], full.f32()[(P - 1) * V + v], 2e-5) << name;
    o.logits_rows = Tensor();
    for (int64_t t = P; t < int64_t(seq.size()); ++t) {
      Batch b;
      b.ids = Tensor::from_vector(std::vector<int32_t>{seq[size_t(t)]}, {1});
      b.positions = Tensor::from_vector(std::vector<int32_t>{int32_t(t)}, {1});  // absolute
      b.cu_seqlens = Tensor::from_vector(std::vector<int32_t>{0, 1}, {2});
      Tensor l = m->forward(b, o);
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(l.f32()[v], full.f32()[t * V + v], 2e-5) << name << " position " << t;
    }
    // Training through a context is refused.
    ForwardState st;
    o.save_for_backward = true;
    EXPECT_THROW(m->forward(Batch::pack({seq}), o, &st), Error);
  }
}

TEST(ModelForward, ConcurrentForwardsAgree) {
  auto m = CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"));
  const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11}};
  Tensor ref = m->forward(Batch::pack(seqs), {});
  std::vector<Tensor> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = m->forward(Batch::pack(seqs), {}); });
  for (auto& t : threads) t.join();
  for (const Tensor& g : got)
    for (int64_t k = 0; k < ref.numel(); ++k) ASSERT_NEAR(g.f32()[k], ref.f32()[k], 1e-6);
}

TEST(ModelForward, ScoringForwardIsBitwiseTheTrainingForward) {
  const std::vector<std::vector<int32_t>> seqs = {
      {5, 9, 200, 17, 3}, {88, 41, 7, 300, 12, 6, 1, 2, 3, 4, 5, 6}, {42}};
  for (const char* name : {"qwen2_tiny", "qwen3_tiny", "qwen3moe_tiny"}) {
    auto m = CausalLM::load(test::source_path(std::string("tests/fixtures/models/") + name));
    for (bool hidden_only : {true, false}) {
      SCOPED_TRACE(std::string(name) + (hidden_only ? " hidden" : " logits"));
      ForwardOptions o;
      o.hidden_only = hidden_only;
      auto values = [](const Tensor& t) { return t.to(Device::cpu).to_vector(); };
      std::vector<std::vector<float>> got;
      set_decode_fusion(false);
      got.push_back(values(m->forward(Batch::pack(seqs), o)));
      set_decode_fusion(true);
      got.push_back(values(m->forward(Batch::pack(seqs), o)));
      for (bool recompute : {false, true}) {  // recompute's first pass saves nothing
        m->set_recompute(recompute);
        ForwardOptions so = o;
        so.save_for_backward = true;
        ForwardState st;
        got.push_back(values(m->forward(Batch::pack(seqs), so, &st)));
        m->set_recompute(false);
      }
      for (size_t i = 1; i < got.size(); ++i) {
        ASSERT_EQ(got[i].size(), got[0].size()) << i;
        EXPECT_EQ(std::memcmp(got[i].data(), got[0].data(), got[0].size() * sizeof(float)), 0) << i;
      }
    }
  }
}

}  // namespace
}  // namespace gyre::model
