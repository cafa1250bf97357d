// Whole-model throughput on the GPU (issue 7's model-level figures): a Qwen2.5-0.5B-shaped model
// with random weights, f32 on the CUDA backend (the model path has no bf16 mixed precision yet),
// 4 sequences x 4096 tokens per step:
//   - training step: forward + policy-gradient loss + backward (no optimizer), tokens/s;
//   - log-prob forward: per-token log-probs + entropy, tokens/s.
// Anchors (issue 7, same H200, PyTorch 2.11 + transformers 5.17, bf16 autocast, sdpa): training
// 73.7k tokens/s (with fused AdamW), log-prob forward 231k tokens/s. Prints one JSON line each.
// Usage: bench_model_gpu [--seqs 4] [--len 4096] [--iters 3] [--layers 24]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

gyre::model::ModelConfig qwen25_05b(int64_t layers) {
  gyre::model::ModelConfig c;
  c.arch = gyre::model::Arch::qwen2;
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.rope.theta = 1000000.0;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  int seqs = 4, len = 4096, iters = 3, layers = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seqs")) seqs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--len")) len = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoi(argv[i + 1]);
  }
  try {
    const auto cfg = qwen25_05b(layers);
    auto model = gyre::model::CausalLM::random_init(cfg, 1);
    model->to(gyre::Device::cuda);
    int64_t params = 0;
    for (auto& p : model->parameters()) params += p.tensor.numel();
    std::vector<std::vector<int32_t>> batch(static_cast<size_t>(seqs),
                                            std::vector<int32_t>(static_cast<size_t>(len)));
    uint32_t x = 12345;
    for (auto& s : batch)
      for (auto& t : s) {
        x = x * 1664525u + 1013904223u;
        t = int32_t((x >> 8) % uint32_t(cfg.vocab_size));
      }
    const std::vector<int32_t> prompt_lens(size_t(seqs), 1);
    const std::vector<float> adv(size_t(seqs), 1.0f);
    const double tokens = double(seqs) * len;

    // Log-prob forward (what the trainer's old-log-prob recompute and `gyre score` do).
    auto logprob_step = [&] {
      auto s = gyre::model::score_for_training(*model, batch, 1.0f, true);
      auto host = s.logp.to(gyre::Device::cpu);  // synchronises
      return double(host.f32()[0]);
    };
    logprob_step();
    double t0 = now_s();
    for (int i = 0; i < iters; ++i) logprob_step();
    const double lp_s = (now_s() - t0) / iters;

    auto grads = model->zeros_like_parameters();
    auto train_step = [&] {
      return gyre::model::policy_gradient_loss_and_grad(*model, batch, prompt_lens, adv, grads);
    };
    train_step();
    t0 = now_s();
    double loss = 0;
    for (int i = 0; i < iters; ++i) loss = train_step();
    const double tr_s = (now_s() - t0) / iters;
    // Training FLOPs as MFU counts them: 6 x parameters x tokens (+ attention, omitted).
    const double tflops = 6.0 * double(params) * tokens / tr_s / 1e12;
    std::printf(
        "{\"bench\": \"model_gpu_logprob\", \"shape\": \"qwen2.5-0.5b\", \"layers\": %d, "
        "\"precision\": \"f32\", \"tokens\": %.0f, \"seconds\": %.4f, \"tokens_per_s\": %.0f, "
        "\"anchor_tokens_per_s\": 231000, \"ratio\": %.3f}\n",
        layers, tokens, lp_s, tokens / lp_s, tokens / lp_s / 231000.0);
    std::printf(
        "{\"bench\": \"model_gpu_train_step\", \"shape\": \"qwen2.5-0.5b\", \"layers\": %d, "
        "\"precision\": \"f32\", \"params\": %lld, \"tokens\": %.0f, \"seconds\": %.4f, "
        "\"tokens_per_s\": %.0f, \"model_tflops\": %.1f, \"anchor_tokens_per_s\": 73700, "
        "\"ratio\": %.3f, \"loss\": %.6f}\n",
        layers, (long long)params, tokens, tr_s, tokens / tr_s, tflops, tokens / tr_s / 73700.0,
        loss);
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
