// The whole model on the GPU (CausalLM::load(dir, {.device = Device::cuda})) against the same model
// on the CPU, for every fixture the CPU golden tests use (tests/golden/model/model_golden_test.cc):
// logits, per-token log-probs and entropies (scoring), the policy-gradient loss and every parameter
// gradient, with and without activation recomputation. cuBLASLt may order the f32 GEMM sums
// differently from the CPU backend, so the bound is 1e-4 relative (L2 per sequence / per gradient
// tensor) rather than bitwise. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/scoring.h"
#include "test_util.h"

namespace gyre::model {
namespace {

constexpr double kTol = 1e-4;

struct Fixture {
  std::string dir;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int32_t> prompt_lens;
  std::vector<float> advantages;
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  f.dir = test::source_path("tests/fixtures/models/" + name);
  SafetensorsReader expected = SafetensorsReader::open(f.dir + "/expected.safetensors");
  for (int i = 0; expected.contains("seq" + std::to_string(i) + ".ids"); ++i) {
    Tensor ids = expected.get("seq" + std::to_string(i) + ".ids");
    std::vector<int32_t> s;
    for (int64_t j = 0; j < ids.numel(); ++j) s.push_back(int32_t(ids.i64()[j]));
    f.seqs.push_back(s);
  }
  auto j = nlohmann::json::parse(test::read_file(f.dir + "/fixture.json"));
  f.prompt_lens = j["prompt_lens"].get<std::vector<int32_t>>();
  f.advantages = j["advantages"].get<std::vector<float>>();
  return f;
}

// ‖got − want‖ / ‖want‖ over two host vectors (NaN anywhere = infinite error).
double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

class ModelGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGpu, WeightsLiveOnTheGpu) {
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto cpu = CausalLM::load(f.dir);
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  EXPECT_EQ(gpu->device(), Device::cuda);
  auto pc = cpu->parameters(), pg = gpu->parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_EQ(pg[i].tensor.device(), Device::cuda) << pg[i].name;
    EXPECT_EQ(pg[i].tensor.to_vector(), pc[i].tensor.to_vector()) << pg[i].name;  // exact copy
  }
  for (const auto& g : gpu->zeros_like_parameters().tensors)
    ASSERT_EQ(g.tensor.device(), Device::cuda) << g.name;
  // to() back to the host gives the same model again.
  gpu->to(Device::cpu);
  EXPECT_EQ(gpu->device(), Device::cpu);
  EXPECT_EQ(gpu->parameters()[0].tensor.to_vector(), pc[0].tensor.to_vector());
}

TEST_P(ModelGpu, LogitsMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto cpu = CausalLM::load(f.dir);
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  Batch b = Batch::pack(f.seqs);  // host batch: the model copies ids/positions/cu_seqlens
  Tensor want = cpu->forward(b, ForwardOptions{});
  Tensor got = gpu->forward(b, ForwardOptions{});
  ASSERT_EQ(got.device(), Device::cuda);
  EXPECT_LT(rel_l2(got.to_vector(), want.to_vector()), kTol);
  // logits_rows (host or device) selects the last token of each sequence.
  const int32_t* cu = b.cu_seqlens.i32();
  Tensor rows = Tensor::from_vector(std::vector<int32_t>{cu[1] - 1, cu[2] - 1, cu[3] - 1}, {3});
  ForwardOptions o;
  o.logits_rows = rows;
  Tensor last_cpu = cpu->forward(b, o);
  Tensor last_gpu = gpu->forward(b, o);
  EXPECT_LT(rel_l2(last_gpu.to_vector(), last_cpu.to_vector()), kTol);
  o.logits_rows = rows.to(Device::cuda);
  Batch db{b.ids.to(Device::cuda), b.positions.to(Device::cuda), b.cu_seqlens.to(Device::cuda)};
  Tensor last_dev = gpu->forward(db, o);
  EXPECT_EQ(last_dev.to_vector(), last_gpu.to_vector());  // same kernels, same inputs
}

TEST_P(ModelGpu, TokenLogprobsAndEntropyMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto cpu = CausalLM::load(f.dir);
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  for (float temperature : {1.0f, 0.7f}) {
    auto want = score(*cpu, f.seqs, temperature, true);
    auto got = score(*gpu, f.seqs, temperature, true);
    auto split = score(*gpu, f.seqs, temperature, true, /*max_tokens_per_batch=*/20);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_LT(rel_l2(got[i].token_logprobs, want[i].token_logprobs), kTol)
          << "sequence " << i << " temperature " << temperature;
      EXPECT_LT(rel_l2(got[i].entropy, want[i].entropy), kTol)
          << "sequence " << i << " temperature " << temperature;
      EXPECT_LT(rel_l2(split[i].token_logprobs, want[i].token_logprobs), kTol) << "split " << i;
      EXPECT_LT(rel_l2(split[i].entropy, want[i].entropy), kTol) << "split " << i;
    }
  }
}

void expect_grads_close(const LossAndGrad& got, const LossAndGrad& want, const char* how) {
  EXPECT_NEAR(got.loss, want.loss, kTol * std::fabs(want.loss)) << how << " loss";
  ASSERT_EQ(got.grads.tensors.size(), want.grads.tensors.size());
  for (size_t i = 0; i < want.grads.tensors.size(); ++i) {
    const NamedTensor& g = got.grads.tensors[i];
    ASSERT_EQ(g.name, want.grads.tensors[i].name);
    ASSERT_EQ(g.tensor.device(), Device::cuda) << g.name;
    std::vector<float> w = want.grads.tensors[i].tensor.to_vector();
    double den = 0;
    for (float x : w) den += double(x) * x;
    const double e = rel_l2(g.tensor.to_vector(), w);
    if (den < 1e-30) {
      EXPECT_LT(e, 1e-12) << how << " " << g.name;  // an expert that received no token
    } else {
      EXPECT_LT(e, kTol) << how << " " << g.name;
    }
  }
}

TEST_P(ModelGpu, PolicyGradientLossAndGradientsMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto cpu = CausalLM::load(f.dir);
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  LossAndGrad want = policy_gradient_loss_and_grad(*cpu, f.seqs, f.prompt_lens, f.advantages);
  LossAndGrad got = policy_gradient_loss_and_grad(*gpu, f.seqs, f.prompt_lens, f.advantages);
  expect_grads_close(got, want, "plain");

  // Recompute on the GPU: the same kernels on the same inputs, so bitwise the same gradients.
  gpu->set_recompute(true);
  LossAndGrad re = policy_gradient_loss_and_grad(*gpu, f.seqs, f.prompt_lens, f.advantages);
  expect_grads_close(re, want, "recompute");
  EXPECT_EQ(re.loss, got.loss);
  for (size_t i = 0; i < re.grads.tensors.size(); ++i)
    EXPECT_EQ(re.grads.tensors[i].tensor.to_vector(), got.grads.tensors[i].tensor.to_vector())
        << re.grads.tensors[i].name;
  EXPECT_NEAR(got.grads.sum_squares(), want.grads.sum_squares(),
              2 * kTol * want.grads.sum_squares());
}

TEST_P(ModelGpu, ScoredBatchBackwardWithEntropyMatchesCpu) {
  // The trainer's path: score_for_training, host-side dL/dlogp and dL/dentropy, backward.
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto run = [&](CausalLM& m) {
    ScoredBatch sb = score_for_training(m, f.seqs, 0.9f, /*with_entropy=*/true);
    const int64_t T = sb.batch.num_tokens();
    std::vector<float> dlp(static_cast<size_t>(T)), dent(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      dlp[size_t(t)] = 0.01f * float((t * 7) % 5 - 2);
      dent[size_t(t)] = 0.003f * float((t * 3) % 4 - 1);
    }
    LossAndGrad r;
    r.loss = double(sb.logp.to(Device::cpu).to_vector()[1]);
    r.grads = m.zeros_like_parameters();
    backward_from_logprobs(m, sb, Tensor::from_vector(dlp, {T}), Tensor::from_vector(dent, {T}),
                           r.grads);
    return r;
  };
  auto cpu = CausalLM::load(f.dir);
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  LossAndGrad want = run(*cpu);
  LossAndGrad got = run(*gpu);
  expect_grads_close(got, want, "entropy");
}

TEST_P(ModelGpu, LoadWeightsInPlaceAndSave) {
  GYRE_SKIP_WITHOUT_GPU();
  Fixture f = load_fixture(GetParam());
  auto gpu = CausalLM::load(f.dir, {.device = Device::cuda});
  const std::string out = ::testing::TempDir() + "gyre_gpu_save_" + GetParam();
  gpu->save(out, DType::f32);  // copies down to the host, exact in f32
  auto cpu = CausalLM::load(out);
  gpu->parameters()[0].tensor.zero();
  gpu->load_weights(f.dir);  // uploads into the existing device tensors
  auto pc = cpu->parameters(), pg = gpu->parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_EQ(pg[i].tensor.device(), Device::cuda);
    EXPECT_EQ(pg[i].tensor.to_vector(), pc[i].tensor.to_vector()) << pg[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelGpu,
                         ::testing::Values("llama3_tiny", "qwen2_tiny", "qwen3_tiny",
                                           "qwen3_tiny_bf16", "qwen3moe_tiny"));

TEST(ModelGpuErrors, MismatchedDevicesAreErrors) {
  GYRE_SKIP_WITHOUT_GPU();
  auto gpu = CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                            {.device = Device::cuda});
  Batch b = Batch::pack({{1, 2, 3, 4}});
  ForwardOptions o;
  o.save_for_backward = true;
  ForwardState st;
  Tensor logits = gpu->forward(b, o, &st);
  // Host gradients for a device model: an Error naming the device, nothing computed.
  auto host = CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"));
  Gradients hg = host->zeros_like_parameters();
  try {
    gpu->backward(Tensor::zeros(logits.shape(), DType::f32, Device::cuda), st, hg);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  // A state saved before the model moved is rejected.
  gpu->to(Device::cpu);
  Gradients g = gpu->zeros_like_parameters();
  EXPECT_THROW(gpu->backward(Tensor::zeros(logits.shape()), st, g), Error);
}

}  // namespace
}  // namespace gyre::model
