// Decode fusion (model/decode_fusion.h, backend/fused_linear_ops.h) changes launches, not numbers:
// on a small bf16 Qwen2-shaped model (attention biases, head dim 64, bf16 weight cache, bf16 KV
// cache) the engine's greedy decode — tokens, sampled log-probs and the top-20 log-probs of every
// step (the logits up to the shared log-sum-exp), eager and CUDA-graph steps, batch 1 and a padded
// bucket — is bitwise the same with the fusion on and off (norm weights drawn around 1, so the
// RMSNorm folded into the q/k/v and gate/up GEMVs is exercised with its weight multiply); and the
// model's layer tensors do take the one-launch norm-folded kernels. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gpu/model/small_model.h"
#include "gyre/backend/decode_stack_ops.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"

namespace gyre::infer {
namespace {

// Restores the process-wide default when a test ends (also on failure).
struct FusionScope {
  explicit FusionScope(bool on) { model::set_decode_fusion(on); }
  ~FusionScope() { model::set_decode_fusion(true); }
};

std::unique_ptr<model::CausalLM> bf16_model() {
  auto m = model::CausalLM::random_init(model::testmodel::small_config(), 21, 0.08f);
  // RMSNorm weights of 1 (random_init's) would hide the weight multiply of the norm folded into
  // the fused GEMVs: draw them around 1 instead.
  uint64_t seed = 900;
  for (auto& [name, t] : m->parameters())
    if (name.ends_with("norm.weight")) {
      std::vector<float> v = gputest::randn(t.shape(), seed++, 0.3f).to_vector();
      for (float& e : v) e += 1.0f;
      t.copy_from(Tensor::from_vector(v, t.shape()));
    }
  m->to(Device::cuda);
  m->set_precision(model::Precision::bf16);
  return m;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

GenerateRequest greedy(std::vector<int32_t> prompt, int32_t n) {
  GenerateRequest r;
  r.input_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.return_logprob = true;
  return r;
}

TEST(DecodeFusionGpu, GreedyDecodeBitwiseWithFusionOnAndOffWithAndWithoutGraphs) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  // Batches of 1 and of 3 (a padded graph bucket of 4), then one request with top log-probs (the
  // logits go to the host sampler).
  std::vector<std::vector<GenerateRequest>> rounds = {
      {greedy({1, 2, 3, 4, 5}, 24)},
      {greedy({9, 8, 7}, 20), greedy({11, 12, 13, 14, 15, 16, 17}, 12), greedy({21}, 16)}};
  GenerateRequest top = greedy({4, 4, 4, 4}, 10);
  top.top_logprobs_num = 20;
  rounds.push_back({top});
  for (int graph_max_bs : {0, 256}) {
    for (size_t r = 0; r < rounds.size(); ++r) {
      SCOPED_TRACE("graphs " + std::to_string(graph_max_bs) + " round " + std::to_string(r));
      std::vector<GenerateResult> res[2];
      for (int on = 0; on < 2; ++on) {
        FusionScope fusion(on == 1);
        EngineConfig c;
        c.page_size = 16;
        c.num_pages = 128;
        c.max_num_batched_tokens = 256;
        c.cuda_graph_max_bs = graph_max_bs;
        Engine engine(*m, nullptr, c);  // a fresh engine: graphs capture the current setting
        res[on] = engine.generate(rounds[r]);
        if (graph_max_bs > 0) {
          EXPECT_GT(engine.num_cuda_graphs(), 0);
        }
      }
      for (size_t i = 0; i < rounds[r].size(); ++i) {
        ASSERT_TRUE(res[1][i].error.empty()) << res[1][i].error;
        EXPECT_EQ(res[0][i].output_ids, res[1][i].output_ids) << "request " << i;
        EXPECT_TRUE(bitwise_equal(res[0][i].output_logprobs, res[1][i].output_logprobs))
            << "request " << i;
        ASSERT_EQ(res[0][i].output_top_logprobs.size(), res[1][i].output_top_logprobs.size());
        for (size_t j = 0; j < res[0][i].output_top_logprobs.size(); ++j) {
          const auto &a = res[0][i].output_top_logprobs[j], &b = res[1][i].output_top_logprobs[j];
          ASSERT_EQ(a.size(), b.size());
          for (size_t k = 0; k < a.size(); ++k) {
            EXPECT_EQ(a[k].token_id, b[k].token_id) << i << "/" << j << "/" << k;
            EXPECT_TRUE(std::memcmp(&a[k].logprob, &b[k].logprob, sizeof(float)) == 0)
                << i << "/" << j << "/" << k;
          }
        }
      }
    }
  }
}

// Sets the decode-stack switch for a scope and restores it (also on failure).
struct StackScope {
  explicit StackScope(bool on) : was_(ops::decode_stack_enabled()) { ops::set_decode_stack(on); }
  ~StackScope() { ops::set_decode_stack(was_); }
  bool was_;
};

// The batch-1 decode step's whole layer stack in one launch (ops::decode_stack_) changes launches,
// not numbers: greedy decode of single requests — eager and through CUDA graphs, short and
// 300-token prompts (more key chunks for the split attention) — gives bitwise the same tokens and
// log-probs with the stack on and off, and with it on the engine did take the stack.
TEST(DecodeFusionGpu, BatchOneDecodeStackBitwiseTheLayerByLayerPath) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt.push_back((i * 37 + 5) % 1000);
  const std::vector<GenerateRequest> reqs = {greedy({1, 2, 3, 4, 5}, 24), greedy(long_prompt, 20),
                                             greedy({7}, 8)};
  for (int graph_max_bs : {0, 256}) {
    for (size_t r = 0; r < reqs.size(); ++r) {
      SCOPED_TRACE("graphs " + std::to_string(graph_max_bs) + " request " + std::to_string(r));
      std::vector<GenerateResult> res[2];
      uint64_t calls[2] = {0, 0};
      for (int on = 0; on < 2; ++on) {
        StackScope stack(on == 1);
        EngineConfig c;
        c.page_size = 16;
        c.num_pages = 128;
        c.max_num_batched_tokens = 512;
        c.cuda_graph_max_bs = graph_max_bs;
        Engine engine(*m, nullptr, c);
        const uint64_t before = ops::decode_stack_calls();
        res[on] = engine.generate({reqs[r]});
        calls[on] = ops::decode_stack_calls() - before;
      }
      EXPECT_EQ(calls[0], 0u);
      EXPECT_GT(calls[1], 0u) << "the engine did not take the decode stack";
      ASSERT_TRUE(res[1][0].error.empty()) << res[1][0].error;
      EXPECT_EQ(res[0][0].output_ids, res[1][0].output_ids);
      EXPECT_TRUE(bitwise_equal(res[0][0].output_logprobs, res[1][0].output_logprobs));
    }
  }
}

// The model's own layer tensors qualify for the norm-folded decode kernels (shapes, alignment,
// the bf16 weight cache): with the engine's settings at batch 1, rms_norm + q/k/v and rms_norm +
// gate/up are one launch each, bitwise the unfused ops. Guards against the decode above silently
// comparing the unfused ops with themselves.
TEST(DecodeFusionGpu, TheModelsLayersTakeTheNormFoldedKernels) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = bf16_model();
  const model::ModelConfig c = model::testmodel::small_config();
  std::map<std::string, Tensor> p;
  for (auto& [name, t] : m->parameters()) p[name] = t;
  ops::Bf16WeightCache cache;
  ops::Bf16Autocast autocast;
  ops::UseBf16WeightCache use(&cache);
  const float eps = float(c.rms_norm_eps);
  Tensor x = gputest::gpu(gputest::randn({1, c.hidden_size}, 5, 2.0f));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto at = [&](const std::string& n) {
      EXPECT_TRUE(p.count(pre + n)) << pre + n;
      return p[pre + n];
    };
    const Tensor in_norm = at("input_layernorm.weight"),
                 post_norm = at("post_attention_layernorm.weight");
    const Tensor qw = at("self_attn.q_proj.weight"), kw = at("self_attn.k_proj.weight"),
                 vw = at("self_attn.v_proj.weight"), qb = at("self_attn.q_proj.bias"),
                 kb = at("self_attn.k_proj.bias"), vb = at("self_attn.v_proj.bias");
    const Tensor gw = at("mlp.gate_proj.weight"), uw = at("mlp.up_proj.weight"), none;
    Tensor q = Tensor::empty({1, qw.size(0)}, DType::f32, Device::cuda);
    Tensor k = Tensor::empty({1, kw.size(0)}, DType::f32, Device::cuda);
    Tensor v = Tensor::empty({1, vw.size(0)}, DType::f32, Device::cuda);
    const Tensor* ws[] = {&qw, &kw, &vw};
    const Tensor* bs[] = {&qb, &kb, &vb};
    Tensor* ys[] = {&q, &k, &v};
    ops::rms_norm_linear_group(x, in_norm, eps, ws, bs, ys);  // caches the bf16 weights
    EXPECT_EQ(
        gputest::kernels_launched([&] { ops::rms_norm_linear_group(x, in_norm, eps, ws, bs, ys); }),
        1u);
    Tensor xn, rstd, q_want, k_want, v_want;
    ops::rms_norm(x, in_norm, eps, xn, rstd);
    ops::linear(xn, qw, qb, q_want);
    ops::linear(xn, kw, kb, k_want);
    ops::linear(xn, vw, vb, v_want);
    EXPECT_TRUE(bitwise_equal(gputest::cpu(q).to_vector(), gputest::cpu(q_want).to_vector()));
    EXPECT_TRUE(bitwise_equal(gputest::cpu(k).to_vector(), gputest::cpu(k_want).to_vector()));
    EXPECT_TRUE(bitwise_equal(gputest::cpu(v).to_vector(), gputest::cpu(v_want).to_vector()));

    Tensor act = Tensor::empty({1, c.intermediate_size}, DType::f32, Device::cuda);
    ops::rms_norm_linear_silu_mul(x, post_norm, eps, gw, none, uw, none, act);
    EXPECT_EQ(gputest::kernels_launched([&] {
                ops::rms_norm_linear_silu_mul(x, post_norm, eps, gw, none, uw, none, act);
              }),
              1u);
    // Under bf16 autocast the MLP's gate/up are bf16 (docs/cuda.md): the unfused reference writes
    // them bf16 as the fused GEMV rounds them in registers.
    Tensor xn2, rstd2, act_want;
    Tensor g = Tensor::empty({1, c.intermediate_size}, DType::bf16, Device::cuda);
    Tensor u = Tensor::empty({1, c.intermediate_size}, DType::bf16, Device::cuda);
    ops::rms_norm(x, post_norm, eps, xn2, rstd2);
    ops::linear(xn2, gw, none, g);
    ops::linear(xn2, uw, none, u);
    ops::silu_mul(g, u, act_want);
    EXPECT_TRUE(bitwise_equal(gputest::cpu(act).to_vector(), gputest::cpu(act_want).to_vector()));
  }
}

}  // namespace
}  // namespace gyre::infer
