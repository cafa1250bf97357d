// Whole-model throughput on the GPU (issue 7's model-level figures): a Qwen2.5-0.5B- or 1.5B-shaped
// model with random weights on the CUDA backend, bf16 mixed precision (default; f32 master weights,
// bf16 GEMMs/attention — CausalLM Precision::bf16) or the exact f32 path, 4 sequences x 4096 tokens
// per step:
//   - training step: forward + policy-gradient loss + backward + AdamW step, tokens/s and MFU
//     (6 x params x tokens + causal attention 12 x L x Hq x D x sum(len^2 / 2), over the H200's 989
//     dense bf16 TFLOP/s: the convention behind the anchors' 26% / 36%);
//   - log-prob forward: per-token log-probs + entropy, tokens/s.
// Anchors (issue 7, same H200, PyTorch 2.11 + transformers 5.17, bf16 autocast, sdpa, fused AdamW):
// 0.5B training 73.7k tokens/s, log-prob 231k; 1.5B training 34.4k, log-prob 114k. One JSON line
// each. Usage: bench_model_gpu [--shape qwen2.5-0.5b|qwen2.5-1.5b] [--precision bf16|f32]
//              [--seqs 4] [--len 4096] [--iters 3] [--layers N (default: the shape's)]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"
#include "gyre/train/optimizer.h"
#include "qwen_shapes.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  int seqs = 4, len = 4096, iters = 3, layers = 0;
  std::string shape = "qwen2.5-0.5b", precision = "bf16";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seqs")) seqs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--len")) len = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--shape")) shape = argv[i + 1];
    if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
  }
  try {
    const auto cfg = gyre::bench::qwen25(shape, layers);
    const bool big = shape == "qwen2.5-1.5b";
    const double anchor_train = big ? 34400 : 73700, anchor_lp = big ? 114000 : 231000;
    auto model = gyre::model::CausalLM::random_init(cfg, 1);
    model->to(gyre::Device::cuda);
    model->set_precision(gyre::model::parse_precision(precision));
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

    // Log-prob forward (the trainer's old-log-prob recompute, `gyre score`): no saved activations;
    // with and without the entropy of every next-token distribution.
    auto logprob_step = [&](bool entropy) {
      auto s = gyre::model::score(*model, batch, 1.0f, entropy, int64_t(tokens));
      return double(s[0].token_logprobs[0]);  // host vectors: synchronised
    };
    double lp_s[2];
    for (int e = 0; e < 2; ++e) {
      logprob_step(e == 1);
      const double t0 = now_s();
      for (int i = 0; i < iters; ++i) logprob_step(e == 1);
      lp_s[e] = (now_s() - t0) / iters;
    }
    double t0 = 0;

    auto grads = model->zeros_like_parameters();
    // The anchor's step: forward, backward, clip + fused AdamW (here: AdamW over f32 masters).
    gyre::train::AdamW opt({.lr = 1e-6, .clip_grad = 1.0}, {});
    gyre::train::NamedTensors params_list, grads_list;
    {
      auto ps = model->parameters();
      for (size_t i = 0; i < ps.size(); ++i) {
        params_list.emplace_back(ps[i].name, ps[i].tensor);
        grads_list.emplace_back(grads.tensors[i].name, grads.tensors[i].tensor);
      }
    }
    auto train_step = [&] {
      grads.zero();
      const double loss =
          gyre::model::policy_gradient_loss_and_grad(*model, batch, prompt_lens, adv, grads);
      opt.step(params_list, grads_list);  // reads the grad norm back: synchronises
      return loss;
    };
    train_step();
    t0 = now_s();
    double loss = 0;
    for (int i = 0; i < iters; ++i) loss = train_step();
    const double tr_s = (now_s() - t0) / iters;
    // Training FLOPs: 6 x parameters x tokens + causal attention (fwd 4 x Hq x D x len^2 / 2 per
    // sequence and layer, backward twice that).
    const double attn_flops = 3.0 * 4.0 * double(cfg.num_hidden_layers) *
                              double(cfg.num_attention_heads) * double(cfg.head_dim) *
                              double(seqs) * double(len) * double(len) / 2.0;
    const double tflops = (6.0 * double(params) * tokens + attn_flops) / tr_s / 1e12;
    const double mfu = tflops / 989.0;
    for (int e = 0; e < 2; ++e)
      std::printf(
          "{\"bench\": \"model_gpu_logprob%s\", \"shape\": \"%s\", \"layers\": %lld, "
          "\"precision\": \"%s\", \"tokens\": %.0f, \"seconds\": %.4f, \"tokens_per_s\": %.0f, "
          "\"issue_anchor_tokens_per_s\": %.0f, \"ratio_issue_anchor\": %.3f}\n",
          e ? "_entropy" : "", shape.c_str(), (long long)cfg.num_hidden_layers, precision.c_str(),
          tokens, lp_s[e], tokens / lp_s[e], anchor_lp, tokens / lp_s[e] / anchor_lp);
    std::printf(
        "{\"bench\": \"model_gpu_train_step\", \"shape\": \"%s\", \"layers\": %lld, "
        "\"precision\": \"%s\", \"params\": %lld, \"tokens\": %.0f, \"seconds\": %.4f, "
        "\"tokens_per_s\": %.0f, \"model_tflops\": %.1f, \"mfu\": %.3f, "
        "\"anchor_tokens_per_s\": %.0f, \"ratio\": %.3f, \"loss\": %.6f}\n",
        shape.c_str(), (long long)cfg.num_hidden_layers, precision.c_str(), (long long)params,
        tokens, tr_s, tokens / tr_s, tflops, mfu, anchor_train, tokens / tr_s / anchor_train, loss);
    if (gyre::ops::op_profile_enabled()) {  // GYRE_OP_PROFILE=1: where one step's GPU time goes
      gyre::ops::op_profile_report();       // drops the timed runs' records
      double t = now_s();
      logprob_step(false);
      std::fprintf(stderr, "--- log-prob forward, %.1f ms wall\n%s", (now_s() - t) * 1e3,
                   gyre::ops::op_profile_report().c_str());
      t = now_s();
      train_step();
      std::fprintf(stderr, "--- training step, %.1f ms wall\n%s", (now_s() - t) * 1e3,
                   gyre::ops::op_profile_report().c_str());
    }
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
