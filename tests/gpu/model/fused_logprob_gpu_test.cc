// The fused (vocabulary-chunked) scoring path on the GPU (model/scoring.h set_logprob_vocab_chunk)
// against the unfused [T, V] one, in f32 (exact but for GEMM order: <= 1e-5) and in bf16 mixed
// precision (both paths round the same operands to bf16; the chunked GEMMs may accumulate in
// another order, and a dz value that rounds to another bf16 moves a gradient by ~2^-8 of one
// term). Prints the measured differences. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/model/small_model.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

using gputest::rel_err;
using testmodel::make_seqs;
using testmodel::small_config;

struct ChunkScope {
  int64_t saved = logprob_vocab_chunk();
  explicit ChunkScope(int64_t chunk) { set_logprob_vocab_chunk(chunk); }
  ~ChunkScope() { set_logprob_vocab_chunk(saved); }
};

struct Outcome {
  Tensor logp, entropy;
  Gradients grads;
  bool fused = false;
};

Outcome run(CausalLM& m, int64_t chunk) {
  ChunkScope scope(chunk);
  const auto seqs = make_seqs();
  Outcome r;
  ScoredBatch sb = score_for_training(m, seqs, 0.9f, true);
  r.fused = !sb.logits.defined();
  r.logp = sb.logp.to(Device::cpu);
  r.entropy = sb.entropy.to(Device::cpu);
  const int64_t T = sb.batch.num_tokens();
  std::vector<float> a(static_cast<size_t>(T)), b(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    a[size_t(t)] = float((t % 5) - 2) / float(T);
    b[size_t(t)] = 0.01f * float(t % 3);
  }
  r.grads = m.zeros_like_parameters();
  backward_from_logprobs(m, sb, Tensor::from_vector(a, {T}), Tensor::from_vector(b, {T}), r.grads);
  return r;
}

void compare(const char* what, const Outcome& got, const Outcome& want, double tol_lp,
             double tol_grad) {
  EXPECT_TRUE(got.fused);
  EXPECT_FALSE(want.fused);
  const double e_lp = rel_err(got.logp, want.logp), e_ent = rel_err(got.entropy, want.entropy);
  double e_g = 0;
  for (size_t i = 0; i < got.grads.tensors.size(); ++i) {
    const double e = rel_err(got.grads.tensors[i].tensor.to(Device::cpu),
                             want.grads.tensors[i].tensor.to(Device::cpu));
    EXPECT_LE(e, tol_grad) << what << ": " << got.grads.tensors[i].name;
    e_g = std::max(e_g, e);
  }
  std::printf("%s fused vs unfused: logp %.2e entropy %.2e worst gradient %.2e\n", what, e_lp,
              e_ent, e_g);
  EXPECT_LE(e_lp, tol_lp) << what;
  EXPECT_LE(e_ent, tol_lp) << what;
}

TEST(FusedLogprobGpu, F32MatchesUnfused) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = CausalLM::random_init(small_config(), 3, 0.05f);
  m->to(Device::cuda);
  const Outcome ref = run(*m, -1);
  // Gradients: 5e-5 (the chunked GEMMs sum in another order than the [T, V] ones, and the
  // differences pass through three layers' backward).
  compare("f32 chunk 128", run(*m, 128), ref, 1e-5, 5e-5);
  compare("f32 chunk 300", run(*m, 300), ref, 1e-5, 5e-5);  // 1000 = 3 x 300 + 100
}

TEST(FusedLogprobGpu, Bf16MatchesUnfusedBf16) {
  GYRE_SKIP_WITHOUT_GPU();
  for (bool tied : {false, true}) {
    ModelConfig c = small_config();
    c.tie_word_embeddings = tied;
    auto m = CausalLM::random_init(c, 3, 0.05f);
    m->to(Device::cuda);
    m->set_precision(Precision::bf16);
    const Outcome ref = run(*m, -1);
    compare(tied ? "bf16 tied chunk 0" : "bf16 chunk 0", run(*m, 0), ref, 1e-4, 2e-2);
    compare(tied ? "bf16 tied chunk 300" : "bf16 chunk 300", run(*m, 300), ref, 1e-4, 2e-2);
  }
}

TEST(FusedLogprobGpu, ScoreMatchesUnfused) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = CausalLM::random_init(small_config(), 4, 0.05f);
  m->to(Device::cuda);
  const auto seqs = make_seqs();
  auto lp = [&](int64_t chunk) {
    ChunkScope scope(chunk);
    std::vector<float> all;
    for (const auto& s : score(*m, seqs, 0.9f, true, 200)) {
      all.insert(all.end(), s.token_logprobs.begin(), s.token_logprobs.end());
      all.insert(all.end(), s.entropy.begin(), s.entropy.end());
    }
    return Tensor::from_vector(all, {int64_t(all.size())});
  };
  EXPECT_LE(rel_err(lp(0), lp(-1)), 1e-5);
}

}  // namespace
}  // namespace gyre::model
