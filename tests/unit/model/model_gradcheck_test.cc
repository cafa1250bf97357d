// Finite-difference checks of CausalLM's hand-written backward on small random models covering what
// the HF fixtures do not: o_proj/MLP biases, YaRN and linear RoPE, mixed dense/MoE layers without
// top-k renormalisation, tied embeddings, an entropy term in the loss, and logits for a subset of
// rows. For each parameter tensor θ_i and a random direction u:
//   (L(θ + εu) − L(θ − εu)) / 2ε  ≈  <∂L/∂θ_i, u>.
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/backend/ops.h"
#include "gyre/core/philox.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

ModelConfig tiny_config(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 48;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-6;
  return c;
}

struct Loss {
  // L = Σ_t a_t logp_t + Σ_t b_t entropy_t over all rows of the packed batch.
  std::vector<float> a, b;
};

double eval_loss(CausalLM& m, const std::vector<std::vector<int32_t>>& seqs, const Loss& w,
                 Gradients* grads) {
  ScoredBatch sb = score_for_training(m, seqs, 0.9f, /*with_entropy=*/true);
  const int64_t T = sb.batch.num_tokens();
  double L = 0;
  for (int64_t t = 0; t < T; ++t)
    L += double(w.a[size_t(t)]) * sb.logp.f32()[t] + double(w.b[size_t(t)]) * sb.entropy.f32()[t];
  if (grads)
    backward_from_logprobs(m, sb, Tensor::from_vector(w.a, {T}), Tensor::from_vector(w.b, {T}),
                           *grads);
  return L;
}

void gradcheck(const ModelConfig& c, uint64_t seed) {
  // Larger init than HF's 0.02 so every path carries signal worth checking.
  auto m = CausalLM::random_init(c, seed, 0.3f);
  const std::vector<std::vector<int32_t>> seqs = {{3, 17, 5, 40, 22, 9, 1}, {11, 2, 33}, {7}};
  PhiloxStream rng(seed, 99);
  Loss w;
  for (int i = 0; i < 11; ++i) {
    w.a.push_back(rng.next_normal());
    w.b.push_back(0.3f * rng.next_normal());
  }
  Gradients g = m->zeros_like_parameters();
  eval_loss(*m, seqs, w, &g);
  auto params = m->parameters();
  const float eps = 2e-3f;  // small enough for the O(ε²) truncation, large for f32 roundoff
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i].tensor;
    std::vector<float> orig = p.to_vector(), u(orig.size());
    double analytic = 0;
    for (size_t k = 0; k < u.size(); ++k) {
      u[k] = rng.next_normal();
      analytic += double(u[k]) * g.tensors[i].tensor.f32()[k];
    }
    for (size_t k = 0; k < u.size(); ++k) p.f32()[k] = orig[k] + eps * u[k];
    const double lp = eval_loss(*m, seqs, w, nullptr);
    for (size_t k = 0; k < u.size(); ++k) p.f32()[k] = orig[k] - eps * u[k];
    const double lm = eval_loss(*m, seqs, w, nullptr);
    for (size_t k = 0; k < u.size(); ++k) p.f32()[k] = orig[k];
    const double numeric = (lp - lm) / (2.0 * eps);
    EXPECT_NEAR(numeric, analytic, 2e-2 * std::fabs(analytic) + 2e-3)
        << params[i].name << " (" << arch_name(c.arch) << ")";
  }
}

TEST(ModelGradcheck, LlamaWithBiasesAndYarn) {
  ModelConfig c = tiny_config(Arch::llama);
  c.model_type = "llama";
  c.attention_bias = true;  // q/k/v AND o_proj biases in LlamaAttention
  c.mlp_bias = true;
  c.rope.type = "yarn";
  c.rope.theta = 10000;
  c.rope.factor = 4.0;
  c.rope.original_max_position_embeddings = 16;
  gradcheck(c, 1);
}

TEST(ModelGradcheck, Qwen3MixedDenseAndMoeTiedLinearRope) {
  ModelConfig c = tiny_config(Arch::qwen3_moe);
  c.model_type = "qwen3_moe";
  c.qk_norm = true;
  c.tie_word_embeddings = true;
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 12;
  c.norm_topk_prob = false;
  c.decoder_sparse_step = 2;  // layer 0 dense, layer 1 MoE
  c.rope.type = "linear";
  c.rope.factor = 2.0;
  ASSERT_FALSE(c.is_moe_layer(0));
  ASSERT_TRUE(c.is_moe_layer(1));
  gradcheck(c, 2);
}

TEST(ModelGradcheck, LogitsRowsBackwardMatchesFullRows) {
  // Backward from logits of selected rows equals backward from full logits whose other rows have
  // zero gradient.
  ModelConfig c = tiny_config(Arch::qwen2);
  c.model_type = "qwen2";
  c.attention_bias = true;
  auto m = CausalLM::random_init(c, 5, 0.3f);
  Batch b = Batch::pack({{1, 2, 3, 4}, {5, 6, 7}});
  const std::vector<int32_t> rows = {3, 6, 1};
  PhiloxStream rng(5, 1);
  Tensor dsel = Tensor::empty({3, c.vocab_size}, DType::f32);
  for (int64_t k = 0; k < dsel.numel(); ++k) dsel.f32()[k] = rng.next_normal();
  Tensor dfull = Tensor::zeros({7, c.vocab_size});
  for (int r = 0; r < 3; ++r)
    for (int64_t v = 0; v < c.vocab_size; ++v)
      dfull.f32()[rows[size_t(r)] * c.vocab_size + v] += dsel.f32()[r * c.vocab_size + v];

  ForwardOptions o;
  o.save_for_backward = true;
  ForwardState st;
  Gradients g_full = m->zeros_like_parameters(), g_sel = m->zeros_like_parameters();
  m->forward(b, o, &st);
  m->backward(dfull, st, g_full);
  EXPECT_FALSE(st.ready());
  o.logits_rows = Tensor::from_vector(rows, {3});
  m->forward(b, o, &st);
  EXPECT_GT(st.saved_bytes(), 0u);
  m->backward(dsel, st, g_sel);
  for (size_t i = 0; i < g_full.tensors.size(); ++i) {
    const Tensor& x = g_full.tensors[i].tensor;
    const Tensor& y = g_sel.tensors[i].tensor;
    for (int64_t k = 0; k < x.numel(); ++k)
      ASSERT_NEAR(x.f32()[k], y.f32()[k], 1e-5f * (1.0f + std::fabs(x.f32()[k])))
          << g_full.tensors[i].name;
  }
}

}  // namespace
}  // namespace gyre::model
