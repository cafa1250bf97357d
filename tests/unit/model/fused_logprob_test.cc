// The fused (vocabulary-chunked) log-prob path of scoring (scoring.h set_logprob_vocab_chunk):
// CausalLM::forward(hidden_only) + ops::linear_token_logprobs and its backward through
// CausalLM::backward_from_hidden must give the log-probs, entropies, losses and every parameter
// gradient of the unfused [T, V] path, for untied and tied lm_heads, chunk widths that do and do
// not divide V, and temperature != 1.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.arch = Arch::qwen2;
  c.vocab_size = 50;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-6;
  c.attention_bias = true;
  c.tie_word_embeddings = tied;
  return c;
}

// Restores the process-wide chunk setting when a test ends.
struct ChunkScope {
  int64_t saved = logprob_vocab_chunk();
  explicit ChunkScope(int64_t chunk) { set_logprob_vocab_chunk(chunk); }
  ~ChunkScope() { set_logprob_vocab_chunk(saved); }
};

double rel_err(const std::vector<float>& g, const std::vector<float>& w) {
  EXPECT_EQ(g.size(), w.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < w.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += double(g[i] - w[i]) * double(g[i] - w[i]);
    den += double(w[i]) * double(w[i]);
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

const std::vector<std::vector<int32_t>> kSeqs = {
    {3, 17, 5, 40, 22, 9, 1, 49}, {11, 2, 33}, {7}, {0, 48, 12, 12, 30}};

struct Result {
  std::vector<float> logp, entropy;
  Gradients grads;
  bool fused = false;
};

Result train_step(CausalLM& m, int64_t chunk, float tau) {
  ChunkScope scope(chunk);
  Result r;
  ScoredBatch sb = score_for_training(m, kSeqs, tau, /*with_entropy=*/true);
  r.fused = !sb.logits.defined();
  r.logp = sb.logp.to_vector();
  r.entropy = sb.entropy.to_vector();
  const int64_t T = sb.batch.num_tokens();
  PhiloxStream rng(5, 1);
  std::vector<float> a, b;
  for (int64_t t = 0; t < T; ++t) {
    a.push_back(rng.next_normal());
    b.push_back(0.3f * rng.next_normal());
  }
  r.grads = m.zeros_like_parameters();
  backward_from_logprobs(m, sb, Tensor::from_vector(a, {T}), Tensor::from_vector(b, {T}), r.grads);
  return r;
}

void expect_same(const Result& got, const Result& want) {
  EXPECT_LE(rel_err(got.logp, want.logp), 1e-5);
  EXPECT_LE(rel_err(got.entropy, want.entropy), 1e-5);
  ASSERT_EQ(got.grads.tensors.size(), want.grads.tensors.size());
  for (size_t i = 0; i < got.grads.tensors.size(); ++i)
    EXPECT_LE(
        rel_err(got.grads.tensors[i].tensor.to_vector(), want.grads.tensors[i].tensor.to_vector()),
        1e-5)
        << got.grads.tensors[i].name;
}

TEST(FusedLogprobs, TrainingStepMatchesUnfused) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    auto m = CausalLM::random_init(tiny_config(tied), 9, 0.3f);
    for (float tau : {1.0f, 0.8f}) {
      const Result ref = train_step(*m, -1, tau);
      EXPECT_FALSE(ref.fused);
      for (int64_t chunk : {int64_t(7), int64_t(16), int64_t(50), int64_t(0)}) {
        SCOPED_TRACE(testing::Message() << "chunk " << chunk << " tau " << tau);
        const Result got = train_step(*m, chunk, tau);
        EXPECT_TRUE(got.fused);
        expect_same(got, ref);
      }
    }
  }
}

TEST(FusedLogprobs, ScoreAndPolicyGradientLossMatchUnfused) {
  auto m = CausalLM::random_init(tiny_config(false), 4, 0.3f);
  auto run = [&](int64_t chunk) {
    ChunkScope scope(chunk);
    auto scores = score(*m, kSeqs, 0.7f, true, /*max_tokens_per_batch=*/6);
    LossAndGrad lg = policy_gradient_loss_and_grad(*m, kSeqs, {1, 2, 1, 3}, {0.5f, -1.f, 2.f, 1.f});
    return std::make_pair(std::move(scores), std::move(lg));
  };
  auto [s_ref, lg_ref] = run(-1);
  auto [s, lg] = run(7);
  ASSERT_EQ(s.size(), s_ref.size());
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_LE(rel_err(s[i].token_logprobs, s_ref[i].token_logprobs), 1e-5) << "seq " << i;
    EXPECT_LE(rel_err(s[i].entropy, s_ref[i].entropy), 1e-5) << "seq " << i;
  }
  EXPECT_NEAR(lg.loss, lg_ref.loss, 1e-5 * std::fabs(lg_ref.loss));
  for (size_t i = 0; i < lg.grads.tensors.size(); ++i)
    EXPECT_LE(
        rel_err(lg.grads.tensors[i].tensor.to_vector(), lg_ref.grads.tensors[i].tensor.to_vector()),
        1e-5)
        << lg.grads.tensors[i].name;
}

// The micro-batch token budget changes only how the sequences are split (and so the order of the
// gradient sums): one micro-batch per sequence and one for all of them give the same loss and
// gradients as the default budget, to f32 summation order (1e-5, as the neighbouring tests).
TEST(FusedLogprobs, PolicyGradientMicroBatchBudgetChangesOnlySummationOrder) {
  auto m = CausalLM::random_init(tiny_config(false), 5, 0.3f);
  const std::vector<int32_t> prompts = {1, 2, 1, 3};
  const std::vector<float> adv = {0.5f, -1.f, 2.f, 1.f};
  LossAndGrad ref = policy_gradient_loss_and_grad(*m, kSeqs, prompts, adv);
  for (int64_t budget : {int64_t(1), int64_t(6), int64_t(1) << 20}) {
    SCOPED_TRACE(testing::Message() << "budget " << budget);
    Gradients g = m->zeros_like_parameters();
    const double loss = policy_gradient_loss_and_grad(*m, kSeqs, prompts, adv, g, budget);
    EXPECT_NEAR(loss, ref.loss, 1e-6 * std::fabs(ref.loss));
    for (size_t i = 0; i < g.tensors.size(); ++i)
      EXPECT_LE(rel_err(g.tensors[i].tensor.to_vector(), ref.grads.tensors[i].tensor.to_vector()),
                1e-5)  // k_proj's bias gradient cancels to ~1e-6 relative differences
          << g.tensors[i].name;
  }
}

TEST(FusedLogprobs, HiddenOnlyForwardAndBackwardFromHidden) {
  auto m = CausalLM::random_init(tiny_config(false), 2, 0.3f);
  const Batch b = Batch::pack(kSeqs);
  const int64_t T = b.num_tokens(), H = m->config().hidden_size, V = m->config().vocab_size;
  ForwardOptions o;
  o.save_for_backward = true;
  o.hidden_only = true;
  ForwardState st;
  const Tensor h = m->forward(b, o, &st);
  EXPECT_EQ(h.shape(), (Shape{T, H}));
  // lm_head applied by hand gives the logits of the full forward.
  Tensor logits, none;
  ops::linear(h, m->lm_head_weight(), none, logits);
  ForwardOptions full;
  const Tensor ref = m->forward(b, full);
  EXPECT_LE(rel_err(logits.to_vector(), ref.to_vector()), 1e-6);
  Gradients g = m->zeros_like_parameters();
  EXPECT_EQ(m->lm_head_grad(g).shape(), (Shape{V, H}));
  EXPECT_THROW(m->backward_from_hidden(Tensor::zeros({T, H + 1}), st, g), Error);
  m->backward_from_hidden(Tensor::zeros({T, H}), st, g);
  EXPECT_FALSE(st.ready());  // consumed
  EXPECT_THROW(m->backward_from_hidden(Tensor::zeros({T, H}), st, g), Error);
}

TEST(FusedLogprobs, ConsumedScoredBatchIsRejected) {
  auto m = CausalLM::random_init(tiny_config(true), 1, 0.3f);
  ChunkScope scope(0);
  ScoredBatch sb = score_for_training(*m, kSeqs, 1.0f, false);
  EXPECT_FALSE(sb.logits.defined());
  EXPECT_FALSE(sb.entropy.defined());
  const int64_t T = sb.batch.num_tokens();
  Gradients g = m->zeros_like_parameters();
  // A dentropy without with_entropy still works on the fused path (the entropy is kept).
  backward_from_logprobs(*m, sb, Tensor::zeros({T}), Tensor::zeros({T}), g);
  EXPECT_THROW(backward_from_logprobs(*m, sb, Tensor::zeros({T}), Tensor(), g), Error);
}

}  // namespace
}  // namespace gyre::model
