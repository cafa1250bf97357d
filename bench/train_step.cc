// bench_train_step: one RL training step of a random Qwen3-shaped model on the CPU backend —
// packed forward with saved activations, token log-probs, the policy-gradient backward, and AdamW
// (ops::adamw_step) on every parameter. Prints one JSON line per figure with its anchor:
//   tokens_per_s       forward+backward(+AdamW) tokens per second
//   gflops / sgemm_fraction
//                      achieved GFLOP/s, FLOPs counted as llm.c does (6·N·T for the matmuls plus
//                      6·L·H·S per token for causal attention), against cblas_sgemm GFLOP/s on a
//                      representative layer shape measured in this same run (goal >= 0.5)
//   peak_memory        allocator peak and ru_maxrss of a step against weights + grads + 2 AdamW
//                      states + an activation estimate computed from the shapes (goal <= 1.3x)
// Model (documented choice, ~23M parameters): hidden 512, 8 layers, 8 query / 4 KV heads of 64,
// intermediate 1024, vocab 8192, tied embeddings, q/k RMSNorm (Qwen3); batch 4 x 512 tokens.
// Run with GYRE_NUM_THREADS=2 on the shared 2-core machine.
#include <cblas.h>
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/core/allocator.h"
#include "gyre/core/philox.h"
#include "gyre/core/thread_pool.h"
#include "gyre/core/timer.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

using namespace gyre;
using namespace gyre::model;

namespace {

ModelConfig bench_config() {
  ModelConfig c;
  c.arch = Arch::qwen3;
  c.model_type = "qwen3";
  c.vocab_size = 8192;
  c.hidden_size = 512;
  c.intermediate_size = 1024;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  c.qk_norm = true;
  c.rope.theta = 1e6;
  return c;
}

void emit(const char* metric, double value, const char* unit, const std::string& anchor) {
  std::printf(
      "{\"bench\": \"train_step\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", %s}\n",
      metric, value, unit, anchor.c_str());
  std::fflush(stdout);
}

// cblas_sgemm GFLOP/s on the MLP up-projection shape of this model: [T, H] x [H, I], with OpenBLAS
// on as many threads as the model's pool (GYRE_NUM_THREADS), so both sides use the same cores.
double sgemm_gflops(int64_t M, int64_t N, int64_t K, int threads) {
  openblas_set_num_threads(threads);
  std::vector<float> a(size_t(M * K), 0.01f), b(size_t(K * N), 0.02f), c(size_t(M * N));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a.data(),
              int(K), b.data(), int(K), 0.0f, c.data(), int(N));  // warm-up
  int reps = 0;
  Timer t;
  while (reps < 3 || t.elapsed() < 1.0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a.data(),
                int(K), b.data(), int(K), 0.0f, c.data(), int(N));
    ++reps;
  }
  return 2.0 * double(M) * double(N) * double(K) * reps / t.elapsed() / 1e9;
}

struct Adam {
  std::vector<Tensor> m, v;
};

struct PhaseTimes {
  double forward = 0, backward = 0, adamw = 0;
};

// One full step (the fixture policy-gradient loss, as scoring.h's policy_gradient_loss_and_grad,
// spelled out here to time its phases); returns the loss.
double train_step(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                  const std::vector<int32_t>& prompt_lens, const std::vector<float>& adv,
                  Gradients& grads, Adam& adam, int64_t step, PhaseTimes* times) {
  Timer t;
  grads.zero();
  ScoredBatch sb = score_for_training(model, seqs, 1.0f, false);
  const int64_t T = sb.batch.num_tokens();
  int64_t N = 0;
  for (size_t i = 0; i < seqs.size(); ++i) N += int64_t(seqs[i].size()) - prompt_lens[i];
  Tensor dlogp = Tensor::zeros({T}, DType::f32);
  const int32_t* cu = sb.batch.cu_seqlens.i32();
  double loss = 0;
  for (size_t i = 0; i < seqs.size(); ++i)
    for (int64_t r = cu[i] + prompt_lens[i] - 1; r < cu[i + 1] - 1; ++r) {
      dlogp.f32()[r] = -adv[i] / float(N);
      loss += double(dlogp.f32()[r]) * sb.logp.f32()[r];
    }
  times->forward += t.elapsed();
  t.reset();
  backward_from_logprobs(model, sb, dlogp, Tensor(), grads);
  times->backward += t.elapsed();
  t.reset();
  auto params = model.parameters();
  ops::AdamWParams p;
  p.lr = 1e-4f;
  p.weight_decay = 0.01f;
  p.step = step;
  for (size_t i = 0; i < params.size(); ++i)
    ops::adamw_step(params[i].tensor, grads.tensors[i].tensor, adam.m[i], adam.v[i], p);
  times->adamw += t.elapsed();
  return loss;
}

}  // namespace

int main() {
  const ModelConfig c = bench_config();
  const int64_t B = 4, S = 512, T = B * S;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t L = c.num_hidden_layers, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const int64_t D = c.head_dim;
  const int threads = global_thread_pool().size();

  auto model = CausalLM::random_init(c, 1234);
  const int64_t N = model->num_parameters();
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(B));
  PhiloxStream rng(99);
  for (auto& s : seqs)
    for (int64_t t = 0; t < S; ++t) s.push_back(int32_t(rng.next_u32() % uint32_t(V)));
  std::vector<int32_t> prompt_lens(size_t(B), int32_t(S / 4));
  std::vector<float> adv = {1.0f, -0.5f, 0.25f, -1.0f};

  Gradients grads = model->zeros_like_parameters();
  Adam adam;
  for (const auto& p : model->parameters()) {
    adam.m.push_back(Tensor::zeros(p.tensor.shape()));
    adam.v.push_back(Tensor::zeros(p.tensor.shape()));
  }

  // Warm-up step (first-touch page faults, OpenBLAS buffers), then measure.
  cpu_allocator().reset_peak();
  PhaseTimes warm;
  train_step(*model, seqs, prompt_lens, adv, grads, adam, 1, &warm);
  const size_t alloc_peak = cpu_allocator().peak_bytes();
  const int kSteps = 3;
  Timer timer;
  double loss = 0;
  PhaseTimes phases;
  for (int s = 0; s < kSteps; ++s)
    loss = train_step(*model, seqs, prompt_lens, adv, grads, adam, 2 + s, &phases);
  const double step_s = timer.elapsed() / kSteps;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double maxrss = double(ru.ru_maxrss) * 1024.0;

  // FLOPs (llm.c convention): 6 per parameter per token for forward+backward matmuls, plus causal
  // attention 6·L·H·S per token (QKᵀ and PV over half the S×S scores, backward twice forward).
  const double flops =
      6.0 * double(N) * double(T) + 6.0 * double(L * Hq * D) * double(S) * double(T);
  const double gflops = flops / step_s / 1e9;
  const double sgemm = sgemm_gflops(T, I, H, threads);

  // Memory model: parameters, gradients and AdamW m, v (f32) + saved activations per layer
  // (x, xn1, h, xn2: H; q_raw, q, attn: Hq·D; k_raw, k, v: Hkv·D; gate, up: I; per token) + the
  // final norm input/output (2·H) + the log-prob step's [T, *] buffers: one vocabulary chunk
  // (ops::default_logprob_chunk(V), the fused path's logits/dz buffer) or, on the unfused path,
  // logits and dlogits (2·V) + the backward's largest per-layer working set (dgate, dup, dact: 3·I;
  // dh, dxn, dx: 3·H).
  const double state_bytes = 4.0 * 4.0 * double(N);
  const double per_token_layer = 4.0 * H + 3.0 * Hq * D + 3.0 * Hkv * D + 2.0 * I;
  const double head_cols = logprob_vocab_chunk() < 0 ? 2.0 * double(V)
                           : logprob_vocab_chunk() > 0
                               ? double(std::min<int64_t>(logprob_vocab_chunk(), V))
                               : double(ops::default_logprob_chunk(V));
  const double act_bytes =
      4.0 * double(T) * (double(L) * per_token_layer + 2.0 * H + head_cols + 3.0 * I + 3.0 * H);
  const double expected = state_bytes + act_bytes;

  char anchor[512];
  std::snprintf(
      anchor, sizeof anchor,
      "\"params\": %lld, \"tokens\": %lld, \"threads\": %d, \"step_s\": %.3f, \"loss\": %.6f",
      (long long)N, (long long)T, threads, step_s, loss);
  emit("tokens_per_s", double(T) / step_s, "tok/s",
       std::string(anchor) + ", \"anchor\": \"llm.c-style fwd+bwd+AdamW step, CPU f32\"");
  emit(
      "phase_seconds", step_s, "s",
      fmt::format("\"forward_s\": {:.3f}, \"backward_s\": {:.3f}, \"adamw_s\": {:.3f}, \"anchor\": "
                  "\"backward ~2x forward for matmul-bound training\"",
                  phases.forward / kSteps, phases.backward / kSteps, phases.adamw / kSteps));
  emit("gflops", gflops, "GFLOP/s",
       fmt::format(
           "\"flops_per_step\": {:.4g}, \"anchor\": \"cblas_sgemm {}x{}x{}: {:.2f} GFLOP/s\"",
           flops, T, I, H, sgemm));
  emit("sgemm_fraction", gflops / sgemm, "ratio",
       fmt::format("\"sgemm_gflops\": {:.2f}, \"goal\": \">= 0.5\"", sgemm));
  emit("peak_memory_allocator", double(alloc_peak) / double(expected), "ratio",
       fmt::format("\"allocator_peak_mb\": {:.1f}, \"expected_mb\": {:.1f}, \"state_mb\": {:.1f}, "
                   "\"activation_estimate_mb\": {:.1f}, \"goal\": \"<= 1.3\"",
                   alloc_peak / 1048576.0, expected / 1048576.0, state_bytes / 1048576.0,
                   act_bytes / 1048576.0));
  emit("peak_memory_rss", maxrss / expected, "ratio",
       fmt::format("\"maxrss_mb\": {:.1f}, \"expected_mb\": {:.1f}, \"goal\": \"<= 1.3\"",
                   maxrss / 1048576.0, expected / 1048576.0));
  return 0;
}
