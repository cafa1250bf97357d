// The scoring forward (CausalLM::forward with nothing saved and no KV-cache context: the trainer's
// old/ref log-probs, `gyre bench logprob`) takes the fused linears of model/decode_fusion.h, which
// are bitwise the unfused ops. On a small bf16 Qwen2-shaped model (q/k/v biases, head dim 64, norm
// weights drawn around 1 so the folded norms' weight multiply counts) and packed batches of T > 8
// tokens (the shared-input GEMMs) and T <= 8 (the decode GEMVs with a weight cache, the unfused
// ops without), the final hidden states (hidden_only) and the full logits are bitwise equal
// (memcmp) for the scoring forward with the fusion on, the training forward (save_for_backward:
// the fused ops, which hand it what the backward reads), the training forward with recompute, and
// the scoring and training forwards with the fusion off (the unfused ops) — with and without an
// installed bf16 weight cache. Gradients with the fusion on (bf16 saved GEMM operands xn1/xn2
// past 8 rows) are bitwise those with it off (f32 xn1/xn2 that linear_backward rounds), with and
// without recompute. Under bf16 both compute the MLP's gate/up in bf16 (the fused GEMV rounding in
// registers, the GEMMs and ops::linear through one bf16-output function), and the training forward
// saves them bf16. Past 8 rows the fused scoring forward launches fewer kernels than the unfused
// one (so the comparisons above do not compare the unfused ops with themselves). Skips without a
// GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/ops.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/forward_state.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

// Restores the process-wide default when a test ends (also on failure).
struct FusionScope {
  explicit FusionScope(bool on) { set_decode_fusion(on); }
  ~FusionScope() { set_decode_fusion(true); }
};

std::unique_ptr<CausalLM> bf16_model(const ModelConfig& config = testmodel::small_config()) {
  auto m = CausalLM::random_init(config, 31, 0.08f);
  // RMSNorm weights of 1 (random_init's) would hide the weight multiply of the folded norms.
  uint64_t seed = 700;
  for (auto& [name, t] : m->parameters())
    if (name.ends_with("norm.weight")) {
      std::vector<float> v = gputest::randn(t.shape(), seed++, 0.3f).to_vector();
      for (float& e : v) e += 1.0f;
      t.copy_from(Tensor::from_vector(v, t.shape()));
    }
  m->to(Device::cuda);
  m->set_precision(Precision::bf16);
  return m;
}

std::vector<std::vector<int32_t>> seqs_of(const std::vector<int>& lens) {
  return testmodel::make_seqs(lens, 12345);
}

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu).to_vector(); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

enum class Pass { scoring_fused, training, training_recompute, scoring_unfused, training_unfused };

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::scoring_fused: return "scoring forward, fusion on";
    case Pass::training: return "training forward (save_for_backward)";
    case Pass::training_recompute: return "training forward with recompute";
    case Pass::scoring_unfused: return "scoring forward, fusion off";
    case Pass::training_unfused: return "training forward, fusion off";
  }
  return "?";
}

// The forward's output (hidden states or logits) on the host.
std::vector<float> run(CausalLM& m, const Batch& b, bool hidden_only, Pass p) {
  FusionScope fusion(p != Pass::scoring_unfused && p != Pass::training_unfused);
  ForwardOptions o;
  o.hidden_only = hidden_only;
  if (p == Pass::scoring_fused || p == Pass::scoring_unfused) return host(m.forward(b, o));
  m.set_recompute(p == Pass::training_recompute);
  o.save_for_backward = true;
  ForwardState st;
  std::vector<float> out = host(m.forward(b, o, &st));
  m.set_recompute(false);
  EXPECT_TRUE(st.ready());
  return out;
}

TEST(ScoringFusionGpu, ScoringForwardIsBitwiseTheTrainingAndTheUnfusedForward) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  // T = 132 and 41 (the GEMMs), 7 and 1 (the GEMVs with a cache).
  const std::vector<std::vector<int>> batches = {{5, 37, 90}, {1, 40}, {3, 4}, {1}};
  for (bool cached : {false, true}) {
    ops::Bf16WeightCache cache;
    std::optional<ops::UseBf16WeightCache> use;
    if (cached) use.emplace(&cache);
    for (const std::vector<int>& lens : batches) {
      const Batch b = Batch::pack(seqs_of(lens));
      for (bool hidden_only : {true, false}) {
        SCOPED_TRACE(std::string(cached ? "weight cache" : "no weight cache") + ", T = " +
                     std::to_string(b.num_tokens()) + (hidden_only ? ", hidden" : ", logits"));
        const std::vector<float> want = run(*m, b, hidden_only, Pass::scoring_unfused);
        ASSERT_EQ(int64_t(want.size()), b.num_tokens() * (hidden_only ? m->config().hidden_size
                                                                      : m->config().vocab_size));
        for (Pass p : {Pass::scoring_fused, Pass::training, Pass::training_recompute,
                       Pass::training_unfused})
          EXPECT_TRUE(bitwise_equal(run(*m, b, hidden_only, p), want)) << pass_name(p);
      }
    }
  }
}

void expect_same_gradients(const LossAndGrad& got, const LossAndGrad& want) {
  EXPECT_EQ(got.loss, want.loss);
  ASSERT_EQ(got.grads.tensors.size(), want.grads.tensors.size());
  for (size_t i = 0; i < got.grads.tensors.size(); ++i)
    EXPECT_TRUE(
        bitwise_equal(host(got.grads.tensors[i].tensor), host(want.grads.tensors[i].tensor)))
        << got.grads.tensors[i].name;
}

// Recompute's first pass saves nothing, its second pass saves: the same activations bit for bit,
// so the gradients are the plain backward's exactly. With the fusion on both passes take the fused
// ops; the reference is the unfused training forward and backward (fusion off): past 8 rows the
// fused forward saves the bf16 GEMM operands of q/k/v and gate/up, the unfused one f32 rows that
// linear_backward rounds to the same bits, so the gradients agree exactly too.
TEST(ScoringFusionGpu, TrainingGradientsAreBitwiseWithAndWithoutFusionAndRecompute) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  for (const std::vector<int>& lens : std::vector<std::vector<int>>{{5, 37, 90}, {3, 4}}) {
    const auto seqs = seqs_of(lens);
    SCOPED_TRACE("T = " + std::to_string(Batch::pack(seqs).num_tokens()));
    const std::vector<int32_t> prompt_lens(lens.size(), 2);
    const std::vector<float> adv =
        lens.size() == 3 ? std::vector<float>{0.5f, -1.0f, 1.0f} : std::vector<float>{0.5f, -1.0f};
    auto grads = [&](bool fusion, bool recompute) {
      FusionScope f(fusion);
      m->set_recompute(recompute);
      LossAndGrad r = policy_gradient_loss_and_grad(*m, seqs, prompt_lens, adv);
      m->set_recompute(false);
      return r;
    };
    const LossAndGrad want = grads(false, false);
    for (bool recompute : {false, true}) {
      SCOPED_TRACE(recompute ? "recompute" : "no recompute");
      expect_same_gradients(grads(true, recompute), want);
    }
  }
}

// The configurations the fused training forward and backward must keep bitwise: Qwen2 (q/k/v
// biases, bias-free o_proj and MLP: every bf16 hand-over), Qwen3-MoE mixed (qk_norm on q/k before
// the fused RoPE + attention, tied embeddings, layer 1 an MoE block between dense layers: the bf16
// gradient hand-over skips it), Llama with o_proj and MLP biases (o_proj / down_proj keep f32 dy,
// the MLP takes its composition because of the down bias).
std::vector<std::pair<std::string, ModelConfig>> gradient_configs() {
  std::vector<std::pair<std::string, ModelConfig>> out;
  out.emplace_back("qwen2", testmodel::small_config());
  ModelConfig moe = testmodel::small_config();
  moe.arch = Arch::qwen3_moe;
  moe.model_type = "qwen3_moe";
  moe.attention_bias = false;
  moe.qk_norm = true;
  moe.tie_word_embeddings = true;
  moe.num_experts = 4;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 128;
  moe.decoder_sparse_step = 2;  // layer 1 MoE, layers 0 and 2 dense
  out.emplace_back("qwen3_moe mixed", moe);
  ModelConfig llama = testmodel::small_config();
  llama.arch = Arch::llama;
  llama.model_type = "llama";
  llama.attention_bias = true;  // q/k/v and o_proj biases
  llama.mlp_bias = true;
  out.emplace_back("llama with o_proj and MLP biases", llama);
  return out;
}

// Gradients of one forward + backward with the fusion switch set separately for each (a switch
// flipped in between must not matter: the backward takes bf16 saved operands whatever its own
// setting) and optionally the trainer's installed bf16 weight cache (the saving forward's GEMVs at
// T <= 8, the backward's cached dX weights): every variant is bitwise the unfused forward and
// backward without a cache, for each configuration, past and below 8 rows.
TEST(ScoringFusionGpu, GradientsAreBitwiseAcrossConfigsFusionFlipsAndTheWeightCache) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const auto& [name, config] : gradient_configs()) {
    auto m = bf16_model(config);
    for (const std::vector<int>& lens : std::vector<std::vector<int>>{{5, 37, 90}, {3, 4}}) {
      const auto seqs = seqs_of(lens);
      const int64_t T = Batch::pack(seqs).num_tokens();
      SCOPED_TRACE(name + ", T = " + std::to_string(T));
      std::vector<float> d(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) d[size_t(t)] = 0.01f * float(t % 7 - 3);
      const Tensor dlogp = Tensor::from_vector(d, {T});
      auto grads = [&](bool fwd_fusion, bool bwd_fusion, bool cached) {
        ops::Bf16WeightCache cache;
        std::optional<ops::UseBf16WeightCache> use;
        if (cached) use.emplace(&cache);
        ScoredBatch sb = [&] {
          FusionScope f(fwd_fusion);
          return score_for_training(*m, seqs);
        }();
        Gradients g = m->zeros_like_parameters();
        FusionScope f(bwd_fusion);
        backward_from_logprobs(*m, sb, dlogp, Tensor(), g);
        return g;
      };
      const Gradients want = grads(false, false, false);
      struct Variant {
        bool fwd, bwd, cached;
        const char* what;
      };
      for (const Variant& v :
           {Variant{true, true, false, "fused"}, Variant{true, true, true, "fused, weight cache"},
            Variant{true, false, false, "fused forward, unfused backward"},
            Variant{false, true, false, "unfused forward, fused backward"},
            Variant{false, false, true, "unfused, weight cache"}}) {
        SCOPED_TRACE(v.what);
        const Gradients got = grads(v.fwd, v.bwd, v.cached);
        ASSERT_EQ(got.tensors.size(), want.tensors.size());
        for (size_t i = 0; i < got.tensors.size(); ++i)
          EXPECT_TRUE(bitwise_equal(host(got.tensors[i].tensor), host(want.tensors[i].tensor)))
              << got.tensors[i].name;
      }
    }
  }
}

// The training forward saves the dense MLP's gate/up in the autocast policy's dtype: bf16 [T, I]
// under bf16 on the GPU, f32 with f32 precision and on the CPU (which ignores autocast); past 8
// rows under bf16 the q/k/v and gate/up inputs xn1/xn2 [T, H] are the GEMMs' bf16 operands too,
// and so are the attention's operands q/k/v and its output; the fused MLP also keeps down_proj's
// bf16 operand act [T, I] (the backward need not recompute it; nothing with f32). saved_bytes
// drops by 2·T·I·2 - T·I·2 + 2·T·H·2 + T·(2·Hq + 2·Hkv)·D·2 per layer against f32.
TEST(ScoringFusionGpu, TrainingForwardSavesBf16GateUpUnderAutocast) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const Batch b = Batch::pack(seqs_of({5, 37, 90}));
  const int64_t T = b.num_tokens(), I = m->config().intermediate_size;
  const int64_t H = m->config().hidden_size, L = m->config().num_hidden_layers;
  const int64_t Hq = m->config().num_attention_heads, Hkv = m->config().num_key_value_heads;
  const int64_t D = m->config().head_dim;
  auto saved = [&](CausalLM& model, DType want) {
    ForwardOptions o;
    o.save_for_backward = true;
    o.hidden_only = true;
    ForwardState st;
    model.forward(b, o, &st);
    EXPECT_EQ(int64_t(st.impl().layers.size()), L);
    for (const LayerSaved& l : st.impl().layers) {
      for (const Tensor* t : {&l.gate, &l.up, &l.xn1, &l.xn2}) {
        EXPECT_EQ(t->dtype(), want) << dtype_name(t->dtype());
        EXPECT_EQ(t->numel(), T * (t == &l.xn1 || t == &l.xn2 ? H : I));
      }
      for (const Tensor* t : {&l.q, &l.k, &l.v, &l.attn}) {
        EXPECT_EQ(t->dtype(), want) << dtype_name(t->dtype());
        EXPECT_EQ(t->numel(), T * (t == &l.q || t == &l.attn ? Hq : Hkv) * D);
      }
      EXPECT_EQ(l.act.defined(), want == DType::bf16);
      if (l.act.defined()) {
        EXPECT_EQ(l.act.dtype(), DType::bf16);
        EXPECT_EQ(l.act.numel(), T * I);
      }
    }
    return st.saved_bytes();
  };
  const size_t bytes16 = saved(*m, DType::bf16);
  m->set_precision(Precision::f32);
  const size_t bytes32 = saved(*m, DType::f32);
  EXPECT_EQ(bytes32 - bytes16,
            size_t(L * (T * I * 2 + 2 * T * H * 2 + T * (2 * Hq + 2 * Hkv) * D * 2)));
  m->to(Device::cpu);
  m->set_precision(Precision::bf16);  // ignored by the CPU backend
  saved(*m, DType::f32);
}

using gputest::EnvScope;

// Past 8 rows the fused scoring forward saves per layer at least: q/k/v's three input casts and
// rms_norm (one norm kernel writing the bf16 input instead), gate/up's two casts and rms_norm, and
// silu_mul + down_proj's input cast (one kernel) — 6 launches; the residual adds folded into the
// o/down GEMMs save up to 2 more where cuBLASLt's algorithm allows.
TEST(ScoringFusionGpu, ScoringForwardPastEightRowsLaunchesFewerKernels) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  // Nothing may move between host and device while the forward is captured: a device batch with
  // its host copy, the RoPE tables made beforehand; attention on the FlashAttention kernels.
  const Batch hb = Batch::pack(seqs_of({5, 37, 90}));
  Batch db;
  db.ids = gputest::gpu(hb.ids);
  db.positions = gputest::gpu(hb.positions);
  db.cu_seqlens = gputest::gpu(hb.cu_seqlens);
  m->prepare_rope(128);
  EnvScope flash("GYRE_ATTENTION_BACKEND", "flash");
  ForwardOptions o;
  o.hidden_only = true;
  o.host_batch = &hb;
  const int64_t L = m->config().num_hidden_layers;
  for (bool cached : {false, true}) {
    SCOPED_TRACE(cached ? "weight cache" : "no weight cache");
    ops::Bf16WeightCache cache;
    std::optional<ops::UseBf16WeightCache> use;
    if (cached) use.emplace(&cache);
    auto count = [&](bool fusion) {
      FusionScope f(fusion);
      m->forward(db, o);  // warm-up: GEMM plans, weight copies, pool blocks
      return gputest::kernels_launched([&] { m->forward(db, o); });
    };
    const size_t fused = count(true), unfused = count(false);
    std::printf("scoring forward, T = 132, %s: %zu kernels fused, %zu unfused\n",
                cached ? "weight cache" : "no weight cache", fused, unfused);
    EXPECT_GE(unfused, fused + size_t(6 * L));
  }
}

}  // namespace
}  // namespace gyre::model
