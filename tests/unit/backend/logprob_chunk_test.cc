// The vocabulary-chunked log-prob ops (ops.h logprob_chunk_*, linear_token_logprobs{,_backward})
// against the unchunked path they replace: logits = linear(h, w), token_logprobs,
// token_logprobs_backward, linear_backward. f32 on the CPU; chunk widths that divide V, that do
// not, of one column, wider than V and the default; temperature != 1; negative targets; T = 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "grad_check.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

using namespace gyre;
using gyre::test::random_tensor;

namespace {

// ‖got − want‖ / ‖want‖ over all elements.
double rel_err(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  if (g.size() != w.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += double(g[i] - w[i]) * double(g[i] - w[i]);
    den += double(w[i]) * double(w[i]);
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

struct Case {
  Tensor h, w, targets, dlogp, dent;
};

Case make_case(int64_t T, int64_t H, int64_t V, uint64_t seed) {
  Case c;
  c.h = random_tensor({T, H}, seed, DType::f32);
  c.w = random_tensor({V, H}, seed + 1, DType::f32, 0.5);
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = t % 5 == 3 ? -1 : int32_t((t * 37 + 11) % V);
  if (T > 0) tg[0] = int32_t(V - 1);  // the last column (in the narrow tail chunk)
  c.targets = Tensor::from_vector(tg, {T});
  c.dlogp = random_tensor({T}, seed + 2, DType::f32);
  c.dent = random_tensor({T}, seed + 3, DType::f32, 0.3);
  return c;
}

constexpr double kTol = 1e-5;

void expect_matches_unchunked(const Case& c, float tau, int64_t chunk, bool with_dent) {
  SCOPED_TRACE(testing::Message() << "chunk " << chunk << " tau " << tau << " dent " << with_dent);
  const int64_t T = c.h.size(0), V = c.w.size(0);
  Tensor none;
  // Reference: the full [T, V] logits.
  Tensor logits, lp_ref, ent_ref = Tensor::empty({T}, DType::f32), dlogits, dh_ref;
  ops::linear(c.h, c.w, none, logits);
  ops::token_logprobs(logits, c.targets, tau, lp_ref, ent_ref);
  ops::token_logprobs_backward(logits, c.targets, tau, c.dlogp, with_dent ? c.dent : none, dlogits);
  Tensor dw_base = random_tensor({V, c.w.size(1)}, 77, DType::f32);
  Tensor dw_ref = dw_base.clone();
  dh_ref = Tensor::empty({T, c.h.size(1)}, DType::f32);
  ops::linear_backward(dlogits, c.h, c.w, dh_ref, dw_ref, none);

  Tensor lp, ent = Tensor::empty({T}, DType::f32), lse;
  ops::linear_token_logprobs(c.h, c.w, c.targets, tau, chunk, lp, ent, lse);
  EXPECT_LE(rel_err(lp, lp_ref), kTol);
  EXPECT_LE(rel_err(ent, ent_ref), kTol);
  for (int64_t t = 0; t < T; ++t)
    if (c.targets.i32()[t] < 0) {
      EXPECT_EQ(lp.f32()[t], 0.0f) << "row " << t;
    }
  // lse = log Σ exp(logits / τ), checked in double.
  for (int64_t t = 0; t < T; ++t) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, double(logits.f32()[t * V + j]) / tau);
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(logits.f32()[t * V + j]) / tau - m);
    EXPECT_NEAR(lse.f32()[t], m + std::log(s), 1e-5 * std::max(1.0, std::fabs(m))) << "row " << t;
  }

  Tensor dh, dw = dw_base.clone();
  ops::linear_token_logprobs_backward(c.h, c.w, c.targets, tau, chunk, lse, ent, c.dlogp,
                                      with_dent ? c.dent : none, dh, dw);
  EXPECT_LE(rel_err(dh, dh_ref), kTol);
  // Compare the accumulated parts (dw - base) so the base does not hide an error.
  Tensor ddw = dw.clone(), ddw_ref = dw_ref.clone();
  for (int64_t i = 0; i < dw.numel(); ++i) {
    ddw.f32()[i] -= dw_base.f32()[i];
    ddw_ref.f32()[i] -= dw_base.f32()[i];
  }
  EXPECT_LE(rel_err(ddw, ddw_ref), kTol);
}

TEST(LogprobChunk, MatchesUnchunkedForEveryChunkWidth) {
  const Case c = make_case(23, 16, 101, 5);
  for (int64_t chunk :
       {int64_t(1), int64_t(7), int64_t(101), int64_t(33), int64_t(500), int64_t(0)})
    for (float tau : {1.0f, 0.7f, 1.3f}) expect_matches_unchunked(c, tau, chunk, true);
  expect_matches_unchunked(c, 0.7f, 10, /*with_dent=*/false);
}

TEST(LogprobChunk, LargeLogitsAndShiftingMaxima) {
  // Logits spread over tens of nats with the row max in different chunks: exercises the rescaling
  // when a later chunk raises the running max (and when it does not).
  Case c = make_case(9, 8, 300, 11);
  for (int64_t i = 0; i < c.w.numel(); ++i) c.w.f32()[i] *= 6.0f;
  for (int64_t chunk : {int64_t(17), int64_t(128), int64_t(299)})
    expect_matches_unchunked(c, 0.6f, chunk, true);
}

TEST(LogprobChunk, AllTargetsNegativeAndEmptyBatch) {
  Case c = make_case(6, 4, 20, 3);
  for (int64_t t = 0; t < 6; ++t) c.targets.i32()[t] = -1;
  expect_matches_unchunked(c, 0.9f, 6, true);

  const Case e = make_case(0, 4, 20, 3);
  Tensor lp, ent = Tensor::empty({0}, DType::f32), lse, dh, dw = Tensor::zeros({20, 4}), none;
  ops::linear_token_logprobs(e.h, e.w, e.targets, 1.0f, 6, lp, ent, lse);
  EXPECT_EQ(lp.numel(), 0);
  EXPECT_EQ(lse.numel(), 0);
  ops::linear_token_logprobs_backward(e.h, e.w, e.targets, 1.0f, 6, lse, ent, e.dlogp, e.dent, dh,
                                      dw);
  EXPECT_EQ(dh.shape(), (Shape{0, 4}));
  EXPECT_EQ(ops::sum_squares(dw), 0.0);
}

TEST(LogprobChunk, StatsFoldInAnyChunkOrderAgree) {
  // Folding the chunks back to front gives the same statistics as front to back (the merge is
  // symmetric up to rounding).
  const Case c = make_case(5, 6, 40, 21);
  Tensor logits, none;
  ops::linear(c.h, c.w, none, logits);
  auto cols = [&](int64_t v0, int64_t n) {
    Tensor out = Tensor::empty({5, n}, DType::f32);
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t j = 0; j < n; ++j) out.f32()[t * n + j] = logits.f32()[t * 40 + v0 + j];
    return out;
  };
  Tensor fwd, bwd;
  for (int64_t v0 = 0; v0 < 40; v0 += 16)
    ops::logprob_chunk_stats(cols(v0, std::min<int64_t>(16, 40 - v0)), c.targets, v0, 0.8f, v0 > 0,
                             fwd);
  bool first = true;
  for (int64_t v0 = 32; v0 >= 0; v0 -= 16) {
    ops::logprob_chunk_stats(cols(v0, std::min<int64_t>(16, 40 - v0)), c.targets, v0, 0.8f, !first,
                             bwd);
    first = false;
  }
  EXPECT_LE(rel_err(fwd, bwd), 1e-6);
  Tensor lp1, lp2, e1 = Tensor::empty({5}, DType::f32), e2 = Tensor::empty({5}, DType::f32), l1, l2;
  ops::logprob_chunk_finish(fwd, c.targets, lp1, e1, l1);
  ops::logprob_chunk_finish(bwd, c.targets, lp2, e2, l2);
  EXPECT_LE(rel_err(lp1, lp2), 1e-6);
  EXPECT_LE(rel_err(e1, e2), 1e-6);
}

TEST(LogprobChunk, DefaultChunkIsAtMostASixteenthOfTheVocabulary) {
  EXPECT_EQ(ops::default_logprob_chunk(151936), 9472);  // Qwen2.5: 74·128 <= 151936 / 16
  EXPECT_LE(ops::default_logprob_chunk(151936) * 16, 151936);
  EXPECT_EQ(ops::default_logprob_chunk(1000), 128);  // small vocabularies: one GEMM-sized chunk
  EXPECT_EQ(ops::default_logprob_chunk(48), 48);
}

TEST(LogprobChunk, ErrorsNameTheProblem) {
  const Case c = make_case(4, 3, 10, 1);
  Tensor lp, ent, lse, dh, dw;
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{1, 10, 2, 3}, {4});
  try {
    ops::linear_token_logprobs(c.h, c.w, bad, 1.0f, 4, lp, ent, lse);
    FAIL() << "target 10 >= V accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target id 10 at position 1"), std::string::npos)
        << e.what();
  }
  try {
    ops::linear_token_logprobs(c.h, c.w, c.targets, 0.0f, 4, lp, ent, lse);
    FAIL() << "temperature 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos) << e.what();
  }
  ops::linear_token_logprobs(c.h, c.w, c.targets, 1.0f, 4, lp, ent, lse);
  Tensor none;
  // A dentropy needs the forward's entropy.
  EXPECT_THROW(ops::linear_token_logprobs_backward(c.h, c.w, c.targets, 1.0f, 4, lse, none, c.dlogp,
                                                   c.dent, dh, dw),
               Error);
  // Shape mismatch between h and w.
  Tensor w2 = Tensor::zeros({10, 5});
  EXPECT_THROW(ops::linear_token_logprobs(c.h, w2, c.targets, 1.0f, 4, lp, ent, lse), Error);
  // accumulate without previous stats.
  Tensor logits, stats;
  ops::linear(c.h, c.w, none, logits);
  EXPECT_THROW(ops::logprob_chunk_stats(logits, c.targets, 0, 1.0f, true, stats), Error);
}

}  // namespace

// Masked (-inf) logits hold no probability: the entropy is that of the unmasked ids (p log p -> 0,
// not 0 · -inf = NaN) and the gradients are finite, through token_logprobs and through the chunk
// ops, also when a whole chunk is masked.
TEST(LogprobChunk, MaskedLogitsAddNothing) {
  const int64_t T = 3, V = 40, C = 8;
  Tensor logits = random_tensor({T, V}, 91, DType::f32, 2.0);
  Tensor kept = Tensor::empty({T, V - 16}, DType::f32);  // the same rows without ids 8..23
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0, k = 0; j < V; ++j) {
      if (j >= 8 && j < 24) {
        logits.f32()[t * V + j] = -INFINITY;  // ids 8..23: chunks 1 and 2 of width 8 entirely
        continue;
      }
      kept.f32()[t * (V - 16) + k++] = logits.f32()[t * V + j];
    }
  // Targets: id 30 (kept index 14), id 2 (kept index 2), skipped.
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{30, 2, -1}, {T});
  Tensor kept_targets = Tensor::from_vector(std::vector<int32_t>{14, 2, -1}, {T});
  Tensor lp, ent = Tensor::empty({T}, DType::f32), lp_k, ent_k = Tensor::empty({T}, DType::f32);
  ops::token_logprobs(logits, targets, 0.9f, lp, ent);
  ops::token_logprobs(kept, kept_targets, 0.9f, lp_k, ent_k);
  EXPECT_LE(rel_err(lp, lp_k), kTol);
  EXPECT_LE(rel_err(ent, ent_k), kTol);
  Tensor dlp = random_tensor({T}, 92, DType::f32), dent = random_tensor({T}, 93, DType::f32), d;
  ops::token_logprobs_backward(logits, targets, 0.9f, dlp, dent, d);
  for (float x : d.to_vector()) ASSERT_TRUE(std::isfinite(x));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 8; j < 24; ++j) EXPECT_EQ(d.f32()[t * V + j], 0.0f);
  // Chunked: chunks [8, 16) and [16, 24) are all -inf.
  Tensor stats, clp, cent = Tensor::empty({T}, DType::f32), clse = Tensor::empty({T}, DType::f32);
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    Tensor chunk = Tensor::empty({T, C}, DType::f32);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < C; ++j) chunk.f32()[t * C + j] = logits.f32()[t * V + v0 + j];
    ops::logprob_chunk_stats(chunk, targets, v0, 0.9f, v0 > 0, stats);
  }
  ops::logprob_chunk_finish(stats, targets, clp, cent, clse);
  EXPECT_LE(rel_err(clp, lp_k), kTol);
  EXPECT_LE(rel_err(cent, ent_k), kTol);
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    Tensor chunk = Tensor::empty({T, C}, DType::f32), dchunk;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < C; ++j) chunk.f32()[t * C + j] = logits.f32()[t * V + v0 + j];
    ops::logprob_chunk_backward(chunk, targets, v0, 0.9f, clse, cent, dlp, dent, dchunk);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < C; ++j)
        EXPECT_NEAR(dchunk.f32()[t * C + j], d.f32()[t * V + v0 + j], 1e-5) << t << " " << v0 + j;
  }
}

// A NaN logit makes its row's log-prob and entropy NaN — as token_logprobs makes them — whatever
// the chunk holding it and whatever the chunking: the fold must not drop a chunk whose sum is NaN
// as it drops a masked one (s = 0), or a diverged model would score finite numbers that depend on
// the chunk width. Rows without a NaN keep token_logprobs' values.
TEST(LogprobChunk, NanLogitsGiveNanWhateverTheChunking) {
  const int64_t T = 3, V = 40;
  Tensor logits = random_tensor({T, V}, 95, DType::f32, 2.0);
  logits.f32()[0 * V + 30] = NAN;  // row 0: in the last chunks
  logits.f32()[1 * V + 2] = NAN;   // row 1: in the first chunk
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{5, 17, 33}, {T});
  Tensor lp_ref, ent_ref = Tensor::empty({T}, DType::f32);
  ops::token_logprobs(logits, targets, 1.0f, lp_ref, ent_ref);
  ASSERT_TRUE(std::isnan(lp_ref.f32()[0]) && std::isnan(lp_ref.f32()[1]));
  ASSERT_TRUE(std::isfinite(lp_ref.f32()[2]));
  for (int64_t C : {int64_t(1), int64_t(7), int64_t(8), int64_t(40)}) {
    SCOPED_TRACE(testing::Message() << "chunk " << C);
    Tensor stats;
    for (int64_t v0 = 0; v0 < V; v0 += C) {
      const int64_t w = std::min(C, V - v0);
      Tensor chunk = Tensor::empty({T, w}, DType::f32);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < w; ++j) chunk.f32()[t * w + j] = logits.f32()[t * V + v0 + j];
      ops::logprob_chunk_stats(chunk, targets, v0, 1.0f, v0 > 0, stats);
    }
    Tensor lp, ent = Tensor::empty({T}, DType::f32), lse = Tensor::empty({T}, DType::f32);
    ops::logprob_chunk_finish(stats, targets, lp, ent, lse);
    for (int64_t t : {0, 1}) {
      EXPECT_TRUE(std::isnan(lp.f32()[t])) << "row " << t << ": " << lp.f32()[t];
      EXPECT_TRUE(std::isnan(ent.f32()[t])) << "row " << t << ": " << ent.f32()[t];
    }
    EXPECT_NEAR(lp.f32()[2], lp_ref.f32()[2], 1e-5);
    EXPECT_NEAR(ent.f32()[2], ent_ref.f32()[2], 1e-5);
  }
}
