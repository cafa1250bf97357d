// Whole-model throughput on the GPU (issue 7's model-level figures): a Qwen2.5-0.5B- or 1.5B-shaped
// model with random weights on the CUDA backend, bf16 mixed precision (default; f32 master weights,
// bf16 GEMMs/attention — CausalLM Precision::bf16) or the exact f32 path, 4 sequences x 4096 tokens
// per step:
//   - training step: forward + policy-gradient loss + backward + AdamW step, tokens/s and MFU
//     (6 x params x tokens + causal attention 12 x L x Hq x D x sum(len^2 / 2), over the H200's 989
//     dense bf16 TFLOP/s: the convention behind the anchors' 26% / 36%);
//   - log-prob forward: per-token log-probs (+ entropy), tokens/s, two ways: casting every f32
//     weight to bf16 in the pass (model_gpu_logprob[_entropy]: PyTorch autocast's way, as the
//     anchor, and gyre's colocated trainer's old-log-prob pass in its first call), and over bf16
//     weight copies that already exist (..._bf16_copies: the trainer's old-log-prob pass
//     otherwise — rl::ActorTrainer carries the copies its optimizer wrote in the previous call's
//     last update, or colocated reads the rollout engine's, which the optimizer writes — and
//     every later pass of a training call; model/step_weight_copies.h).
// Anchors (issue 7, same H200, PyTorch 2.11 + transformers 5.17, bf16 autocast, sdpa, fused AdamW):
// 0.5B training 73.7k tokens/s, log-prob 231k; 1.5B training 34.4k, log-prob 114k. One JSON line
// each. Usage: bench_model_gpu [--shape qwen2.5-0.5b|qwen2.5-1.5b] [--precision bf16|f32]
//              [--seqs 4] [--len 4096] [--iters 3] [--layers N (default: the shape's)]
//              [--logprob-chunk C] [--head-only 1] [--head-ops 1] [--decode-fusion 0|1]
//              [--micro-batch-tokens N] [--logprob-weights both|cast|copies]
// --iters N: timed steps after 2 warm-ups (mean). Keep the default 3 when comparing with
// bench/hf_anchor.py (a median of 3 after 1 warm-up): the GEMM and attention kernels run 5-8%
// slower a few passes into a sustained run as the clock drops under tensor-core load (session 22's
// CUPTI timeline), so a longer run measures a lower clock than the anchor's.
// --logprob-weights: which log-prob variants run (default both, the casting one first). Each
// variant's figure depends on how warm the GPU already is (see --iters), so compare one variant
// against the anchor from a fresh process each (cast, copies) rather than the second of a pair.
// --micro-batch-tokens N: the training step in micro-batches of at most N tokens (default: one
// micro-batch of every token, as the anchor's one forward of the whole batch; the JSON's
// micro_batch_token_budget — model/scoring.cc also caps a micro-batch at 2^28 / the vocabulary
// chunk tokens, 28,339 at the default chunk: one micro-batch for the default 16,384).
// --decode-fusion 0: the scoring forward (nothing saved) runs the unfused ops instead of the fused
// linears (model/decode_fusion.h; bitwise the same numbers) — the A/B of that switch.
// --logprob-chunk: the scoring path's vocabulary chunk (model/scoring.h set_logprob_vocab_chunk):
// 0 = fused with the default chunk (<= V/16), > 0 = fused with C rows per chunk, -1 = the unfused
// [T, V] logits. The log-prob lines report peak_extra_bytes: the allocator's high-water mark during
// the step minus the bytes live before it.
// --head-only 1: only the lm_head + log-prob forward and backward on T = seqs x len random hidden
// states (issue 7's memory goal), fused vs unfused, one JSON line each with peak_extra_bytes
// against the anchor T x V x 4 / 8 bytes (1/8 of one f32 [T, V] tensor).
// --head-ops 1 (CUDA builds): op-level times of the fused log-prob head under bf16 autocast at
// T = seqs x len tokens, the shape's vocabulary and H = 896 and 1536 (the default chunk, or
// --logprob-chunk C): fwd =
// ops::linear_token_logprobs, fwd_bwd = it + linear_token_logprobs_backward, each against the
// GEMM-only time of the same chunked bf16 products on pre-converted operands (fwd: the logits GEMM;
// fwd_bwd: logits, recomputed logits, dh and dw) and the composition the head replaced (ops::linear
// / linear_backward under autocast + the chunk ops). Effective TFLOP/s = 2 T V H x GEMMs / time.
// Also fwd_bwd_one_pass: the head for a gradient known up front
// (cuda::linear_token_logprobs_with_grad_autocast, token chunks, no logits recompute) against the
// two-pass fwd_bwd, with the largest log-prob difference between the two.
// The workloads themselves are gyre::bench's (bench/workloads.h), shared with `gyre bench`.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/scoring.h"
#include "gyre/model/step_weight_copies.h"

#ifdef GYRE_HAVE_CUDA
#include "gpu_timing.h"
#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#endif

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// lm_head + log-probs + entropy, forward and backward, on random hidden states h [T, H] and
// lm_head W [V, H]: the unfused path (logits [T, V] -> token_logprobs -> dlogits [T, V] ->
// linear_backward) and the fused one (ops::linear_token_logprobs{,_backward}, default chunk).
// Reports the extra device memory of each (peak minus the bytes live before: h, W, dW) against
// issue 7's goal, T·V·4/8 bytes.
int head_memory(const gyre::model::ModelConfig& cfg, int64_t T, const std::string& precision,
                int iters) {
  using gyre::Device;
  using gyre::Tensor;
  namespace ops = gyre::ops;
  const int64_t V = cfg.vocab_size, H = cfg.hidden_size;
  ops::Bf16Autocast autocast(precision == "bf16");
  std::vector<float> hv(static_cast<size_t>(T * H)), wv(size_t(V * H));
  uint32_t x = 7;
  auto next = [&] {
    x = x * 1664525u + 1013904223u;
    return (float((x >> 8) & 0xffff) / 65536.0f - 0.5f);
  };
  for (float& v : hv) v = 2.0f * next();
  for (float& v : wv) v = 0.1f * next();
  const Tensor h = Tensor::from_vector(hv, {T, H}).to(Device::cuda);
  const Tensor w = Tensor::from_vector(wv, {V, H}).to(Device::cuda);
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = int32_t((t * 7919) % V);
  const Tensor targets = Tensor::from_vector(tg, {T}).to(Device::cuda);
  Tensor dlogp = Tensor::zeros({T}), dent = Tensor::zeros({T});
  dlogp.fill(-1.0f / float(T));  // a mean log-prob loss with a small entropy bonus
  dent.fill(0.01f);
  dlogp = dlogp.to(Device::cuda);
  dent = dent.to(Device::cuda);
  Tensor dw = Tensor::zeros({V, H}, gyre::DType::f32, Device::cuda);
  const double anchor = double(T) * double(V) * 4.0 / 8.0;
  for (int fused = 0; fused < 2; ++fused) {
    auto step = [&] {
      Tensor none, lp, ent = Tensor::empty({T}, gyre::DType::f32, Device::cuda), dh;
      if (fused) {
        Tensor lse;
        ops::linear_token_logprobs(h, w, targets, 1.0f, 0, lp, ent, lse);
        ops::linear_token_logprobs_backward(h, w, targets, 1.0f, 0, lse, ent, dlogp, dent, dh, dw);
      } else {
        Tensor logits, dlogits;
        ops::linear(h, w, none, logits);
        ops::token_logprobs(logits, targets, 1.0f, lp, ent);
        ops::token_logprobs_backward(logits, targets, 1.0f, dlogp, dent, dlogits);
        logits = Tensor();
        ops::linear_backward(dlogits, h, w, dh, dw, none);
      }
      (void)lp.to(Device::cpu);  // synchronise
    };
    step();  // warm-up (allocator pool, cuBLAS handles; GYRE_GEMM_AUTOTUNE tunes on launch 2)
    step();
    const size_t before = gyre::bench::memory_in_use_bytes(Device::cuda);
    gyre::bench::reset_peak_memory(Device::cuda);
    const double s = gyre::bench::time_steps(step, iters, 0);
    const size_t extra = gyre::bench::peak_memory_bytes(Device::cuda) - before;
    std::printf(
        "{\"bench\": \"model_gpu_logprob_head\", \"path\": \"%s\", \"precision\": \"%s\", "
        "\"tokens\": %lld, \"vocab\": %lld, \"hidden\": %lld, \"chunk\": %lld, "
        "\"fwd_bwd_seconds\": %.4f, \"peak_extra_bytes\": %zu, "
        "\"anchor_bytes_TxVx4_over_8\": %.0f, \"ratio_to_anchor\": %.3f}\n",
        fused ? "fused" : "unfused", precision.c_str(), (long long)T, (long long)V, (long long)H,
        (long long)(fused ? ops::default_logprob_chunk(V) : V), s, extra, anchor,
        double(extra) / anchor);
  }
  return 0;
}

#ifdef GYRE_HAVE_CUDA
// The composition linear_token_logprobs{,_backward} ran under autocast before the fused head
// (backend/cuda/logprob_head.h): ops::linear / linear_backward per vocabulary chunk + chunk ops.
void composed_head(const gyre::Tensor& h, const gyre::Tensor& w, const gyre::Tensor& tg, int64_t C,
                   const gyre::Tensor* dlogp, const gyre::Tensor& dent, gyre::Tensor& dw) {
  using gyre::Tensor;
  namespace ops = gyre::ops;
  const int64_t T = h.size(0), V = w.size(0);
  Tensor stats, none, lp, ent = Tensor::empty({T}, gyre::DType::f32, gyre::Device::cuda),
                          lse = Tensor::empty({T}, gyre::DType::f32, gyre::Device::cuda);
  const Tensor buf = Tensor::empty({T, C}, gyre::DType::f32, gyre::Device::cuda);
  auto view = [&](int64_t c) { return buf.reshape({T * C}).narrow(0, T * c).reshape({T, c}); };
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    Tensor z = view(c);
    ops::linear(h, w.narrow(v0, c), none, z);
    ops::logprob_chunk_stats(z, tg, v0, 1.0f, v0 > 0, stats);
  }
  ops::logprob_chunk_finish(stats, tg, lp, ent, lse);
  if (!dlogp) return;
  Tensor dh = Tensor::empty(h.shape(), gyre::DType::f32, gyre::Device::cuda);
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    const Tensor wc = w.narrow(v0, c);
    Tensor z = view(c), dwc = dw.narrow(v0, c);
    ops::linear(h, wc, none, z);
    ops::logprob_chunk_backward(z, tg, v0, 1.0f, lse, ent, *dlogp, dent, z);
    ops::linear_backward(z, h, wc, dh, dwc, none, v0 > 0);
  }
}

int head_ops(int64_t T, int64_t V, int iters, int64_t chunk) {
  using gyre::Device;
  using gyre::Tensor;
  namespace ops = gyre::ops;
  namespace cuda = gyre::cuda;
  ops::Bf16Autocast autocast;
  for (int64_t H : {int64_t(896), int64_t(1536)}) {
    std::vector<float> hv(static_cast<size_t>(T * H)), wv(size_t(V * H));
    uint32_t x = 11;
    auto next = [&] {
      x = x * 1664525u + 1013904223u;
      return (float((x >> 8) & 0xffff) / 65536.0f - 0.5f);
    };
    for (float& v : hv) v = 2.0f * next();
    for (float& v : wv) v = 0.1f * next();
    const Tensor h = Tensor::from_vector(hv, {T, H}).to(Device::cuda);
    const Tensor w = Tensor::from_vector(wv, {V, H}).to(Device::cuda);
    hv = {}, wv = {};
    std::vector<int32_t> tg(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = int32_t((t * 7919) % V);
    const Tensor targets = Tensor::from_vector(tg, {T}).to(Device::cuda);
    Tensor dlogp = Tensor::zeros({T}), dent = Tensor::zeros({T});
    dlogp.fill(-1.0f / float(T));
    dent.fill(0.01f);
    dlogp = dlogp.to(Device::cuda);
    dent = dent.to(Device::cuda);
    Tensor dw = Tensor::zeros({V, H}, gyre::DType::f32, Device::cuda);
    const int64_t C = chunk > 0 ? std::min(chunk, V) : ops::default_logprob_chunk(V);
    Tensor lp, ent = Tensor::empty({T}, gyre::DType::f32, Device::cuda), lse, dh;
    auto fwd = [&] { ops::linear_token_logprobs(h, w, targets, 1.0f, C, lp, ent, lse); };
    auto fwd_bwd = [&] {
      fwd();
      ops::linear_token_logprobs_backward(h, w, targets, 1.0f, C, lse, ent, dlogp, dent, dh, dw);
    };
    // GEMM-only: the same chunked bf16 products on operands converted once (outside the timing).
    cuda::DeviceBuffer hb(size_t(T * H) * 2), wb(size_t(V * H) * 2), zb(size_t(T * C) * 4),
        dzb(size_t(T * C) * 2), dhb(size_t(T * H) * 4);
    cuda::f32_to_bf16(h.f32(), hb.as<uint16_t>(), T * H);
    cuda::f32_to_bf16(w.f32(), wb.as<uint16_t>(), V * H);
    GYRE_CUDA_CHECK(cudaMemsetAsync(dzb.as<void>(), 0, size_t(T * C) * 2, gyre::cuda::stream()));
    auto gemms = [&](bool bwd) {
      for (int64_t v0 = 0; v0 < V; v0 += C) {
        const int64_t c = std::min(C, V - v0);
        const uint16_t* wc = wb.as<uint16_t>() + v0 * H;
        cuda::linear_gemm_bf16(hb.as<uint16_t>(), wc, nullptr, T, c, H, zb.as<float>());
        if (!bwd) continue;
        cuda::linear_gemm_bf16(hb.as<uint16_t>(), wc, nullptr, T, c, H, zb.as<float>());
        cuda::gemm_bf16(false, false, T, H, c, 1.0f, dzb.as<uint16_t>(), c, wc, H,
                        v0 > 0 ? 1.0f : 0.0f, dhb.as<float>(), H, false);
        cuda::gemm_bf16(true, false, c, H, T, 1.0f, dzb.as<uint16_t>(), c, hb.as<uint16_t>(), H,
                        1.0f, dw.f32() + v0 * H, H, false);
      }
    };
    const int reps = std::max(iters, 3);
    const double ms[2] = {gyre::bench::median_ms(fwd, 1, reps),
                          gyre::bench::median_ms(fwd_bwd, 1, reps)};
    const double gemm_ms[2] = {gyre::bench::median_ms([&] { gemms(false); }, 1, reps),
                               gyre::bench::median_ms([&] { gemms(true); }, 1, reps)};
    const double old_ms[2] = {
        gyre::bench::median_ms([&] { composed_head(h, w, targets, C, nullptr, dent, dw); }, 1,
                               reps),
        gyre::bench::median_ms([&] { composed_head(h, w, targets, C, &dlogp, dent, dw); }, 1,
                               reps)};
    // The one-pass head for a gradient known up front (ops::linear_token_logprobs_with_grad under
    // autocast: token chunks over the whole vocabulary, 3 GEMMs of the head's size instead of 4)
    // on the same bf16 weight, and the largest log-prob difference to the two-pass head's.
    Tensor lp1 = Tensor::empty({T}, gyre::DType::f32, Device::cuda),
           ent1 = Tensor::empty({T}, gyre::DType::f32, Device::cuda),
           lse1 = Tensor::empty({T}, gyre::DType::f32, Device::cuda);
    auto one_pass = [&] {
      cuda::linear_token_logprobs_with_grad_autocast(
          h.f32(), w.f32(), wb.as<uint16_t>(), targets.data<int32_t>(), T, H, V, 1.0f, dlogp.f32(),
          dent.f32(), lp1.f32(), ent1.f32(), lse1.f32(), dhb.as<float>(), dw.f32());
    };
    const double one_pass_ms = gyre::bench::median_ms(one_pass, 1, reps);
    fwd();
    const std::vector<float> a = lp.to(Device::cpu).to_vector(),
                             b = lp1.to(Device::cpu).to_vector();
    double max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i)
      max_diff = std::max(max_diff, double(std::abs(a[i] - b[i])));
    std::printf(
        "{\"bench\": \"model_gpu_logprob_head_op\", \"pass\": \"fwd_bwd_one_pass\", "
        "\"tokens\": %lld, \"vocab\": %lld, \"hidden\": %lld, \"token_chunk\": %lld, "
        "\"ms\": %.3f, \"two_pass_fwd_bwd_ms\": %.3f, \"max_logp_diff\": %.3g}\n",
        (long long)T, (long long)V, (long long)H, (long long)cuda::logprob_grad_rows_per_chunk(T),
        one_pass_ms, ms[1], max_diff);
    for (int b = 0; b < 2; ++b) {
      const double flops = 2.0 * double(T) * double(V) * double(H) * (b ? 4 : 1);
      std::printf(
          "{\"bench\": \"model_gpu_logprob_head_op\", \"pass\": \"%s\", \"precision\": \"bf16\", "
          "\"tokens\": %lld, \"vocab\": %lld, \"hidden\": %lld, \"chunk\": %lld, \"ms\": %.3f, "
          "\"effective_tflops\": %.1f, \"gemm_only_ms\": %.3f, \"gemm_only_tflops\": %.1f, "
          "\"ratio_to_gemm_only\": %.3f, \"previous_composition_ms\": %.3f}\n",
          b ? "fwd_bwd" : "fwd", (long long)T, (long long)V, (long long)H, (long long)C, ms[b],
          flops / ms[b] / 1e9, gemm_ms[b], flops / gemm_ms[b] / 1e9, ms[b] / gemm_ms[b], old_ms[b]);
    }
  }
  return 0;
}
#endif
}  // namespace

int main(int argc, char** argv) {
  int seqs = 4, len = 4096, iters = 3, layers = 0, head_only = 0, head_ops_mode = 0;
  std::string lp_weights = "both";
  long long logprob_chunk = 0, micro_tokens = 0;
  std::string shape = "qwen2.5-0.5b", precision = "bf16";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seqs")) seqs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--len")) len = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--shape")) shape = argv[i + 1];
    if (!std::strcmp(argv[i], "--precision")) precision = argv[i + 1];
    if (!std::strcmp(argv[i], "--logprob-chunk")) logprob_chunk = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--head-only")) head_only = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--logprob-weights")) lp_weights = argv[i + 1];
    if (!std::strcmp(argv[i], "--head-ops")) head_ops_mode = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--micro-batch-tokens")) micro_tokens = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--decode-fusion"))
      gyre::model::set_decode_fusion(std::atoi(argv[i + 1]) != 0);
  }
  try {
    auto cfg = gyre::model::named_shape(shape);
    if (shape != "qwen2.5-0.5b" && shape != "qwen2.5-1.5b")
      GYRE_THROW(invalid_argument,
                 "--shape {}: the anchors are for qwen2.5-0.5b and qwen2.5-1.5b (gyre bench train "
                 "--shape {} --device cuda runs any named shape)",
                 shape, shape);
    if (lp_weights != "both" && lp_weights != "cast" && lp_weights != "copies")
      GYRE_THROW(invalid_argument, "--logprob-weights {}: expected both, cast or copies",
                 lp_weights);
    if (layers > 0) cfg.num_hidden_layers = layers;
    gyre::model::set_logprob_vocab_chunk(logprob_chunk);
    if (head_only) return head_memory(cfg, int64_t(seqs) * len, precision, iters);
    if (head_ops_mode) {
#ifdef GYRE_HAVE_CUDA
      return head_ops(int64_t(seqs) * len, cfg.vocab_size, iters, logprob_chunk);
#else
      GYRE_THROW(unsupported, "--head-ops needs a build with the CUDA backend");
#endif
    }
    const bool big = shape == "qwen2.5-1.5b";
    const double anchor_train = big ? 34400 : 73700, anchor_lp = big ? 114000 : 231000;
    auto model = gyre::model::CausalLM::random_init(cfg, 1);
    model->to(gyre::Device::cuda);
    model->set_precision(gyre::model::parse_precision(precision));
    const int64_t params = model->num_parameters();
    const auto batch = gyre::bench::random_sequences(seqs, len, cfg.vocab_size, 12345);
    const double tokens = double(seqs) * len;

    // Log-prob forward (the trainer's old-log-prob recompute, `gyre score`): no saved activations;
    // with and without the entropy of every next-token distribution.
    // Two ways (e: 0 plain, 1 with entropy; c: 0 casting, 1 with copies):
    // - casting: each pass rounds every f32 weight to bf16 as it goes, as PyTorch's autocast does
    //   in the anchor (its cast cache lives for one autocast region: one forward), and as the RL
    //   trainer's old-log-prob pass does in a colocated trainer's first train() call;
    // - with copies: the same pass under bf16 weight copies that already exist
    //   (model/step_weight_copies.h; filled by the first warm-up pass, the same round-to-nearest-
    //   even values), as the trainer's old-log-prob pass runs otherwise (rl/trainer/
    //   actor_trainer.cc carries the copies its optimizer wrote in the previous call's last
    //   update, or colocated reads the rollout engine's, which the optimizer writes; their upkeep
    //   is inside the training step's AdamW, timed below).
    auto logprob_step = [&](bool entropy) { gyre::bench::logprob_step(*model, batch, entropy); };
    auto variant_runs = [&](int c) {
      return lp_weights == "both" || lp_weights == (c ? "copies" : "cast");
    };
    double lp_s[2][2];
    size_t lp_extra[2][2];
    for (int c = 0; c < 2; ++c) {
      if (!variant_runs(c)) continue;
      gyre::model::StepWeightCopies copies(*model);
      const gyre::ops::UseBf16WeightCache use(c ? copies.cache() : nullptr);
      for (int e = 0; e < 2; ++e) {
        const size_t before = gyre::bench::memory_in_use_bytes(gyre::Device::cuda);
        gyre::bench::reset_peak_memory(gyre::Device::cuda);
        lp_s[c][e] = gyre::bench::time_steps([&] { logprob_step(e == 1); }, iters, 2);
        lp_extra[c][e] = gyre::bench::peak_memory_bytes(gyre::Device::cuda) - before;
      }
    }

    // The anchor's step: forward, backward, clip + fused AdamW (here: AdamW over f32 masters).
    gyre::bench::TrainStep step(*model, batch, micro_tokens);
    double loss = 0;
    auto train_step = [&] { loss = step.run(); };
    // Two warm-ups: GEMM autotuning (default on) tunes a GEMM on its second launch.
    const double tr_s = gyre::bench::time_steps(train_step, iters, 2);
    const double tflops =
        gyre::bench::train_step_flops(cfg, params, std::vector<int64_t>(size_t(seqs), len)) / tr_s /
        1e12;
    const double mfu = tflops * 1e12 / gyre::bench::kH200PeakFlops;
    for (int c = 0; c < 2; ++c)
      for (int e = 0; e < 2; ++e)
        if (variant_runs(c))
          std::printf(
              "{\"bench\": \"model_gpu_logprob%s%s\", \"shape\": \"%s\", \"layers\": %lld, "
              "\"precision\": \"%s\", \"weights\": \"%s\", \"tokens\": %.0f, \"seconds\": %.4f, "
              "\"tokens_per_s\": %.0f, \"issue_anchor_tokens_per_s\": %.0f, "
              "\"ratio_issue_anchor\": %.3f, \"logprob_chunk\": %lld, \"peak_extra_bytes\": %zu}\n",
              e ? "_entropy" : "", c ? "_bf16_copies" : "", shape.c_str(),
              (long long)cfg.num_hidden_layers, precision.c_str(),
              c ? "bf16 copies written by the optimizer (the trainer's old-log-prob pass)"
                : "f32, cast in the pass (PyTorch autocast; a colocated trainer's first call)",
              tokens, lp_s[c][e], tokens / lp_s[c][e], anchor_lp, tokens / lp_s[c][e] / anchor_lp,
              logprob_chunk, lp_extra[c][e]);
    std::printf(
        "{\"bench\": \"model_gpu_train_step\", \"shape\": \"%s\", \"layers\": %lld, "
        "\"precision\": \"%s\", \"params\": %lld, \"tokens\": %.0f, \"seconds\": %.4f, "
        "\"tokens_per_s\": %.0f, \"model_tflops\": %.1f, \"mfu\": %.3f, "
        "\"anchor_tokens_per_s\": %.0f, \"ratio\": %.3f, \"loss\": %.6f, "
        "\"micro_batch_token_budget\": %lld}\n",
        shape.c_str(), (long long)cfg.num_hidden_layers, precision.c_str(), (long long)params,
        tokens, tr_s, tokens / tr_s, tflops, mfu, anchor_train, tokens / tr_s / anchor_train, loss,
        micro_tokens > 0 ? micro_tokens : (long long)tokens);
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
