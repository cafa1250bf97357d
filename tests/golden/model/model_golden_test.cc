// Golden tests of CausalLM against Hugging Face transformers (float64 reference, fixtures in
// tests/fixtures/models/*): logits, token log-probs and entropies (each sequence alone and all
// packed in one batch), the policy-gradient loss and every parameter gradient, with and without
// activation recomputation.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "gyre/model/causal_lm.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/scoring.h"
#include "test_util.h"

namespace gyre::model {
namespace {

struct Fixture {
  std::unique_ptr<CausalLM> model;
  SafetensorsReader expected;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int32_t> prompt_lens;
  std::vector<float> advantages;
};

Fixture load_fixture(const std::string& name) {
  const std::string dir = test::source_path("tests/fixtures/models/" + name);
  Fixture f{
      CausalLM::load(dir), SafetensorsReader::open(dir + "/expected.safetensors"), {}, {}, {}};
  for (int i = 0; f.expected.contains("seq" + std::to_string(i) + ".ids"); ++i) {
    Tensor ids = f.expected.get("seq" + std::to_string(i) + ".ids");
    std::vector<int32_t> s;
    for (int64_t j = 0; j < ids.numel(); ++j) s.push_back(int32_t(ids.i64()[j]));
    f.seqs.push_back(s);
  }
  auto j = nlohmann::json::parse(test::read_file(dir + "/fixture.json"));
  f.prompt_lens = j["prompt_lens"].get<std::vector<int32_t>>();
  f.advantages = j["advantages"].get<std::vector<float>>();
  return f;
}

double max_abs_diff(const float* a, const std::vector<float>& b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

class ModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGolden, LogitsEachSequenceAlone) {
  Fixture f = load_fixture(GetParam());
  ASSERT_EQ(f.seqs.size(), 3u);
  for (size_t i = 0; i < f.seqs.size(); ++i) {
    Tensor logits = f.model->forward(Batch::pack({f.seqs[i]}), ForwardOptions{});
    std::vector<float> want = f.expected.get("seq" + std::to_string(i) + ".logits").to_vector();
    ASSERT_EQ(size_t(logits.numel()), want.size());
    EXPECT_LT(max_abs_diff(logits.f32(), want, want.size()), 1e-4) << "sequence " << i;
  }
}

TEST_P(ModelGolden, LogitsPackedBatch) {
  Fixture f = load_fixture(GetParam());
  Batch b = Batch::pack(f.seqs);
  Tensor logits = f.model->forward(b, ForwardOptions{});
  const int64_t V = f.model->config().vocab_size;
  const int32_t* cu = b.cu_seqlens.i32();
  for (size_t i = 0; i < f.seqs.size(); ++i) {
    std::vector<float> want = f.expected.get("seq" + std::to_string(i) + ".logits").to_vector();
    EXPECT_LT(max_abs_diff(logits.f32() + cu[i] * V, want, want.size()), 1e-4) << "sequence " << i;
  }
  // logits_rows: only the last token of each sequence, same values as the full forward (up to GEMM
  // blocking differences between the two row counts).
  ForwardOptions o;
  o.logits_rows = Tensor::from_vector(std::vector<int32_t>{cu[1] - 1, cu[2] - 1, cu[3] - 1}, {3});
  Tensor last = f.model->forward(b, o);
  ASSERT_EQ(last.size(0), 3);
  for (int i = 0; i < 3; ++i)
    for (int64_t v = 0; v < V; ++v)
      ASSERT_NEAR(last.f32()[i * V + v], logits.f32()[(cu[i + 1] - 1) * V + v], 1e-5);
}

void expect_scores(const Fixture& f, const std::vector<SequenceScores>& got, const char* how) {
  for (size_t i = 0; i < f.seqs.size(); ++i) {
    const std::string p = "seq" + std::to_string(i) + ".";
    std::vector<float> lp = f.expected.get(p + "token_logprobs").to_vector();
    std::vector<float> ent = f.expected.get(p + "entropy").to_vector();
    ASSERT_EQ(got[i].token_logprobs.size(), lp.size());
    ASSERT_EQ(got[i].entropy.size(), ent.size());
    EXPECT_LT(max_abs_diff(got[i].token_logprobs.data(), lp, lp.size()), 1e-4) << how << " " << i;
    EXPECT_LT(max_abs_diff(got[i].entropy.data(), ent, ent.size()), 1e-4) << how << " " << i;
  }
}

TEST_P(ModelGolden, TokenLogprobsAndEntropy) {
  Fixture f = load_fixture(GetParam());
  std::vector<SequenceScores> alone;
  for (const auto& s : f.seqs) alone.push_back(score(*f.model, {s}, 1.0f, true)[0]);
  expect_scores(f, alone, "alone");
  expect_scores(f, score(*f.model, f.seqs, 1.0f, true), "packed");
  // A token budget smaller than the batch splits it into several forwards: same numbers.
  expect_scores(f, score(*f.model, f.seqs, 1.0f, true, /*max_tokens_per_batch=*/20), "split");
}

void expect_gradients(const Fixture& f, const LossAndGrad& r) {
  const float want_loss = f.expected.get("loss").f32()[0];
  EXPECT_NEAR(r.loss, want_loss, 1e-5 * std::fabs(want_loss)) << "loss";
  // Every parameter has an expected gradient and vice versa.
  std::set<std::string> expected_names;
  for (const auto& n : f.expected.names())
    if (n.rfind("grad.", 0) == 0) expected_names.insert(n.substr(5));
  EXPECT_EQ(expected_names.size(), r.grads.tensors.size());
  for (const NamedTensor& g : r.grads.tensors) {
    ASSERT_TRUE(expected_names.count(g.name)) << "no reference gradient for " << g.name;
    Tensor want = f.expected.get("grad." + g.name);
    ASSERT_EQ(want.shape(), g.tensor.shape()) << g.name;
    std::vector<float> w = want.to_vector();
    double num = 0.0, den = 0.0;
    for (size_t k = 0; k < w.size(); ++k) {
      const double d = double(g.tensor.f32()[k]) - double(w[k]);
      num += d * d;
      den += double(w[k]) * double(w[k]);
    }
    if (den < 1e-30) {
      // An expert that received no token has an exactly zero reference gradient.
      EXPECT_LT(std::sqrt(num), 1e-12) << g.name;
    } else {
      EXPECT_LT(std::sqrt(num / den), 1e-4) << g.name;
    }
  }
}

TEST_P(ModelGolden, PolicyGradientLossAndGradients) {
  Fixture f = load_fixture(GetParam());
  LossAndGrad r = policy_gradient_loss_and_grad(*f.model, f.seqs, f.prompt_lens, f.advantages);
  expect_gradients(f, r);
}

TEST_P(ModelGolden, RecomputeGivesIdenticalGradients) {
  Fixture f = load_fixture(GetParam());
  LossAndGrad plain = policy_gradient_loss_and_grad(*f.model, f.seqs, f.prompt_lens, f.advantages);
  f.model->set_recompute(true);
  LossAndGrad re = policy_gradient_loss_and_grad(*f.model, f.seqs, f.prompt_lens, f.advantages);
  expect_gradients(f, re);
  EXPECT_EQ(plain.loss, re.loss);
  ASSERT_EQ(plain.grads.tensors.size(), re.grads.tensors.size());
  for (size_t i = 0; i < plain.grads.tensors.size(); ++i) {
    const Tensor& a = plain.grads.tensors[i].tensor;
    const Tensor& b = re.grads.tensors[i].tensor;
    for (int64_t k = 0; k < a.numel(); ++k)
      ASSERT_EQ(a.f32()[k], b.f32()[k]) << plain.grads.tensors[i].name << " element " << k;
  }
}

TEST_P(ModelGolden, GradientsAccumulateAcrossMicroBatches) {
  // Two backward passes (one per half of the batch, each normalised by the global N) add up to the
  // single-batch gradient: what the trainer's micro-batching relies on.
  Fixture f = load_fixture(GetParam());
  LossAndGrad whole = policy_gradient_loss_and_grad(*f.model, f.seqs, f.prompt_lens, f.advantages);
  Gradients acc = f.model->zeros_like_parameters();
  int64_t N = 0;
  for (size_t i = 0; i < f.seqs.size(); ++i) N += int64_t(f.seqs[i].size()) - f.prompt_lens[i];
  double loss = 0.0;
  for (size_t i = 0; i < f.seqs.size(); ++i) {
    // Scale the advantage so that the per-call 1/N_i normalisation becomes the global 1/N.
    const double n_i = double(f.seqs[i].size() - size_t(f.prompt_lens[i]));
    const float adv = float(double(f.advantages[i]) * n_i / double(N));
    loss += policy_gradient_loss_and_grad(*f.model, {f.seqs[i]}, {f.prompt_lens[i]}, {adv}, acc);
  }
  EXPECT_NEAR(loss, whole.loss, 1e-6 * std::fabs(whole.loss) + 1e-9);
  for (size_t i = 0; i < acc.tensors.size(); ++i) {
    const Tensor& a = acc.tensors[i].tensor;
    const Tensor& b = whole.grads.tensors[i].tensor;
    double num = 0, den = 0;
    for (int64_t k = 0; k < a.numel(); ++k) {
      num += std::pow(double(a.f32()[k]) - double(b.f32()[k]), 2);
      den += std::pow(double(b.f32()[k]), 2);
    }
    if (den > 0) {
      EXPECT_LT(std::sqrt(num / den), 1e-5) << acc.tensors[i].name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelGolden,
                         ::testing::Values("llama3_tiny", "qwen2_tiny", "qwen3_tiny",
                                           "qwen3_tiny_bf16", "qwen3moe_tiny"));

}  // namespace
}  // namespace gyre::model
