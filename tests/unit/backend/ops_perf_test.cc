// Performance probes of the CPU backend, disabled by default (they take seconds): run with
//   gyre_unit_backend_tests --gtest_also_run_disabled_tests --gtest_filter='OpsPerf*'
// Each prints one JSON line: the figure, and its ratio to the anchor, OpenBLAS sgemm GFLOP/s on
// this machine with its default threads. The model probe chains the ops exactly as a Qwen3 decoder
// does (q/k-norm, RoPE, GQA attention, SwiGLU, LM head + token log-probs), forward and backward.
#include <cblas.h>
#include <gtest/gtest.h>
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "grad_check.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/ops.h"

using namespace gyre;
using gyre::test::random_tensor;

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds used by the whole process (all threads): on a shared machine, work per CPU-second
// is steadier than wall time.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double g_last_cpu = 0;  // least CPU seconds over the repetitions of the last best_seconds()

template <typename Fn>
double best_seconds(int reps, Fn&& fn) {
  fn();  // warm-up
  double best = 1e30;
  g_last_cpu = 1e30;
  for (int i = 0; i < reps; ++i) {
    double t0 = now(), c0 = cpu_now();
    fn();
    best = std::min(best, now() - t0);
    g_last_cpu = std::min(g_last_cpu, cpu_now() - c0);
  }
  return best;
}

double sgemm_gflops(double* cpu_gflops = nullptr) {
  const int64_t n = 1024;
  Tensor a = random_tensor({n, n}, 1, DType::f32), b = random_tensor({n, n}, 2, DType::f32);
  Tensor c = Tensor::zeros({n, n});
  // OpenBLAS itself, with its own threads (OPENBLAS_NUM_THREADS / all cores), not our split.
  double s = best_seconds(5, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, a.f32(), n, b.f32(), n, 0.f,
                c.f32(), n);
  });
  if (cpu_gflops) *cpu_gflops = 2.0 * n * n * n / g_last_cpu / 1e9;
  return 2.0 * n * n * n / s / 1e9;
}

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype()); }

struct Layer {
  Tensor ln1, wq, wk, wv, qn, kn, wo, ln2, wg, wu, wd;
};
}  // namespace

TEST(OpsPerf, DISABLED_AttentionForwardBackward) {
  const double anchor = sgemm_gflops();
  const int64_t T = 2048, Hq = 8, Hkv = 2, D = 64;
  std::vector<int32_t> cu = {0, 1024, 1536, 2048};
  Tensor cus = Tensor::from_vector(cu, {4});
  Tensor q = random_tensor({T, Hq, D}, 1, DType::f32),
         k = random_tensor({T, Hkv, D}, 2, DType::f32);
  Tensor v = random_tensor({T, Hkv, D}, 3, DType::f32),
         dout = random_tensor({T, Hq, D}, 4, DType::f32);
  Tensor out, lse, dq, dk, dv;
  double causal_pairs = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    double L = cu[b + 1] - cu[b];
    causal_pairs += L * (L + 1) / 2;
  }
  double fwd_flops = 4.0 * causal_pairs * D * Hq;  // QK^T and PV; backward: 5 GEMMs = 2.5x
  double tf = best_seconds(3, [&] { ops::attention_varlen(q, k, v, cus, 0.125f, out, lse); });
  double tb = best_seconds(
      3, [&] { ops::attention_varlen_backward(dout, q, k, v, out, lse, cus, 0.125f, dq, dk, dv); });
  std::printf(
      "{\"bench\":\"cpu_attention\",\"fwd_gflops\":%.1f,\"bwd_gflops\":%.1f,\"sgemm_gflops\":%.1f,"
      "\"fwd_ratio\":%.2f,\"bwd_ratio\":%.2f,\"fwd_ms\":%.1f,\"bwd_ms\":%.1f}\n",
      fwd_flops / tf / 1e9, 2.5 * fwd_flops / tb / 1e9, anchor, fwd_flops / tf / 1e9 / anchor,
      2.5 * fwd_flops / tb / 1e9 / anchor, tf * 1e3, tb * 1e3);
}

TEST(OpsPerf, DISABLED_TokenLogprobs) {
  const int64_t T = 512, V = 32768;
  Tensor logits = random_tensor({T, V}, 1, DType::f32, 3.0);
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) tg[size_t(i)] = int32_t((i * 977) % V);
  Tensor targets = Tensor::from_vector(tg, {T}), lp, ent = Tensor::empty({T}, DType::f32), dl;
  double tf = best_seconds(3, [&] { ops::token_logprobs(logits, targets, 0.7f, lp, ent); });
  double tb =
      best_seconds(3, [&] { ops::token_logprobs_backward(logits, targets, 0.7f, lp, ent, dl); });
  double gb = double(T * V * 4) / 1e9;
  std::printf("{\"bench\":\"cpu_token_logprobs\",\"fwd_GBps\":%.1f,\"bwd_GBps\":%.1f}\n", gb / tf,
              2 * gb / tb);
}

TEST(OpsPerf, DISABLED_Qwen3ShapedModelForwardBackward) {
  // ~20M parameters: hidden 384, 8 layers, 6 query / 2 kv heads of 64, MLP 1024, vocab 8192.
  const int64_t H = 384, L = 8, Hq = 6, Hkv = 2, D = 64, I = 1024, V = 8192;
  const std::vector<int32_t> cu = {0, 512, 768, 1024};
  const int64_t T = cu.back();
  const float eps = 1e-6f, scale = 1.0f / 8.0f;
  const DType f32 = DType::f32;
  uint64_t seed = 100;
  auto param = [&](Shape s, double sd = 0.05) { return random_tensor(s, seed++, f32, sd); };
  auto ones = [&](int64_t n) { return Tensor::full({n}, 1.0f); };
  Tensor embed = param({V, H}), lm_head = param({V, H}), final_norm = ones(H);
  std::vector<Layer> layers(static_cast<size_t>(L));
  int64_t n_params = 2 * V * H + H;
  for (auto& l : layers) {
    l = {ones(H),
         param({Hq * D, H}),
         param({Hkv * D, H}),
         param({Hkv * D, H}),
         ones(D),
         ones(D),
         param({H, Hq * D}),
         ones(H),
         param({I, H}),
         param({I, H}),
         param({H, I})};
    n_params += 2 * H + 2 * D + 2 * Hq * D * H + 2 * Hkv * D * H + 3 * I * H;
  }
  std::vector<Layer> grads(static_cast<size_t>(L));
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    grads[i] = {zeros_like(l.ln1), zeros_like(l.wq), zeros_like(l.wk), zeros_like(l.wv),
                zeros_like(l.qn),  zeros_like(l.kn), zeros_like(l.wo), zeros_like(l.ln2),
                zeros_like(l.wg),  zeros_like(l.wu), zeros_like(l.wd)};
  }
  Tensor d_embed = zeros_like(embed), d_lm = zeros_like(lm_head), d_fn = zeros_like(final_norm);
  std::vector<int32_t> ids(static_cast<size_t>(T)), pos(static_cast<size_t>(T)),
      tg(static_cast<size_t>(T));
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int32_t t = cu[b]; t < cu[b + 1]; ++t) {
      ids[size_t(t)] = int32_t((t * 7919) % V);
      pos[size_t(t)] = t - cu[b];
      tg[size_t(t)] = t + 1 < cu[b + 1] ? int32_t(((t + 1) * 7919) % V) : -1;
    }
  Tensor tids = Tensor::from_vector(ids, {T}), tpos = Tensor::from_vector(pos, {T});
  Tensor ttg = Tensor::from_vector(tg, {T}), cus = Tensor::from_vector(cu, {int64_t(cu.size())});
  Tensor cos = Tensor::empty({1024, D / 2}, f32), sin = Tensor::empty({1024, D / 2}, f32);
  for (int64_t p = 0; p < 1024; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      double a = p * std::pow(1e6, -2.0 * i / D);
      cos.f32()[p * D / 2 + i] = float(std::cos(a));
      sin.f32()[p * D / 2 + i] = float(std::sin(a));
    }

  struct Saved {
    Tensor x, h1, r1, q, k, v, qpre, kpre, rq, rk, attn, lse, x1, h2, r2, g, u, a;
  };
  std::vector<Saved> saved(static_cast<size_t>(L));
  auto step = [&] {
    Tensor x;
    ops::embedding(tids, embed, x);
    for (int64_t li = 0; li < L; ++li) {
      const Layer& l = layers[size_t(li)];
      Saved& s = saved[size_t(li)];
      s.x = x;
      ops::rms_norm(x, l.ln1, eps, s.h1 = Tensor(), s.r1 = Tensor());
      Tensor q, k;
      ops::linear(s.h1, l.wq, Tensor(), q);
      ops::linear(s.h1, l.wk, Tensor(), k);
      ops::linear(s.h1, l.wv, Tensor(), s.v = Tensor());
      s.qpre = q.reshape({T, Hq, D});
      s.kpre = k.reshape({T, Hkv, D});
      ops::rms_norm(s.qpre, l.qn, eps, s.q = Tensor(), s.rq = Tensor());
      ops::rms_norm(s.kpre, l.kn, eps, s.k = Tensor(), s.rk = Tensor());
      s.q = s.q.reshape({T, Hq, D});
      s.k = s.k.reshape({T, Hkv, D});
      ops::rope_(s.q, tpos, cos, sin);
      ops::rope_(s.k, tpos, cos, sin);
      s.v = s.v.reshape({T, Hkv, D});
      ops::attention_varlen(s.q, s.k, s.v, cus, scale, s.attn = Tensor(), s.lse = Tensor());
      Tensor o;
      ops::linear(s.attn.reshape({T, Hq * D}), l.wo, Tensor(), o);
      ops::add(x, o, s.x1 = Tensor());
      ops::rms_norm(s.x1, l.ln2, eps, s.h2 = Tensor(), s.r2 = Tensor());
      ops::linear(s.h2, l.wg, Tensor(), s.g = Tensor());
      ops::linear(s.h2, l.wu, Tensor(), s.u = Tensor());
      ops::silu_mul(s.g, s.u, s.a = Tensor());
      Tensor d;
      ops::linear(s.a, l.wd, Tensor(), d);
      Tensor x2;
      ops::add(s.x1, d, x2);
      x = x2;
    }
    Tensor hf, rf, logits, lp, none;
    ops::rms_norm(x, final_norm, eps, hf, rf);
    ops::linear(hf, lm_head, Tensor(), logits);
    ops::token_logprobs(logits, ttg, 1.0f, lp, none);
    // Backward of loss = -mean log p.
    Tensor dlp = Tensor::full({T}, -1.0f / float(T)), dlogits;
    ops::token_logprobs_backward(logits, ttg, 1.0f, dlp, none, dlogits);
    Tensor dhf = Tensor::empty({T, H}, f32), dx;
    ops::linear_backward(dlogits, hf, lm_head, dhf, d_lm, none);
    ops::rms_norm_backward(dhf, x, final_norm, rf, dx, d_fn);
    for (int64_t li = L - 1; li >= 0; --li) {
      const Layer& l = layers[size_t(li)];
      Layer& gr = grads[size_t(li)];
      Saved& s = saved[size_t(li)];
      // x2 = x1 + down(silu(g) * u)
      Tensor da = Tensor::empty({T, I}, f32), dg, du, dh2 = Tensor::empty({T, H}, f32), dx1;
      ops::linear_backward(dx, s.a, l.wd, da, gr.wd, none);
      ops::silu_mul_backward(da, s.g, s.u, dg, du);
      ops::linear_backward(dg, s.h2, l.wg, dh2, gr.wg, none);
      ops::linear_backward(du, s.h2, l.wu, dh2, gr.wu, none, /*accumulate_dx=*/true);
      ops::rms_norm_backward(dh2, s.x1, l.ln2, s.r2, dx1, gr.ln2);
      ops::add_(dx1, dx);
      // x1 = x + o_proj(attn(rope(qnorm(q)), rope(knorm(k)), v))
      Tensor dattn = Tensor::empty({T, Hq * D}, f32), dq, dk, dv;
      ops::linear_backward(dx1, s.attn.reshape({T, Hq * D}), l.wo, dattn, gr.wo, none);
      ops::attention_varlen_backward(dattn.reshape({T, Hq, D}), s.q, s.k, s.v, s.attn, s.lse, cus,
                                     scale, dq, dk, dv);
      ops::rope_(dq, tpos, cos, sin, true);
      ops::rope_(dk, tpos, cos, sin, true);
      Tensor dqp, dkp;
      ops::rms_norm_backward(dq, s.qpre, l.qn, s.rq, dqp, gr.qn);
      ops::rms_norm_backward(dk, s.kpre, l.kn, s.rk, dkp, gr.kn);
      Tensor dh1 = Tensor::empty({T, H}, f32), dxl;
      ops::linear_backward(dqp.reshape({T, Hq * D}), s.h1, l.wq, dh1, gr.wq, none);
      ops::linear_backward(dkp.reshape({T, Hkv * D}), s.h1, l.wk, dh1, gr.wk, none, true);
      ops::linear_backward(dv.reshape({T, Hkv * D}), s.h1, l.wv, dh1, gr.wv, none, true);
      ops::rms_norm_backward(dh1, s.x, l.ln1, s.r1, dxl, gr.ln1);
      ops::add_(dxl, dx1);
      dx = dxl;
    }
    ops::embedding_backward(tids, dx, d_embed);
  };
  // The machine may be shared: take the better anchor of before/after (a conservative ratio).
  double anchor_cpu = 0, anchor_cpu2 = 0;
  double anchor = sgemm_gflops(&anchor_cpu);
  double secs = best_seconds(2, step);
  double step_cpu = g_last_cpu;
  anchor = std::max(anchor, sgemm_gflops(&anchor_cpu2));
  anchor_cpu = std::max(anchor_cpu, anchor_cpu2);
  // Matmul FLOPs: 6 per parameter per token for every weight used as a matrix (the embedding
  // lookup is not a matmul), plus causal attention (fwd 2 GEMMs, bwd 4 + recomputed QK^T).
  double causal_pairs = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    double n = cu[b + 1] - cu[b];
    causal_pairs += n * (n + 1) / 2;
  }
  double matmul_params = double(n_params - V * H);
  double flops = 6.0 * matmul_params * T + 14.0 * causal_pairs * D * Hq * L;
  double gflops = flops / secs / 1e9;
  std::printf(
      "{\"bench\":\"cpu_qwen3_20m_fwd_bwd\",\"params\":%lld,\"tokens\":%lld,\"step_ms\":%.0f,"
      "\"gflops\":%.1f,\"sgemm_gflops\":%.1f,\"ratio\":%.2f,\"gflops_per_cpu_s\":%.1f,"
      "\"sgemm_gflops_per_cpu_s\":%.1f,\"cpu_ratio\":%.2f,\"threads\":%d}\n",
      (long long)n_params, (long long)T, secs * 1e3, gflops, anchor, gflops / anchor,
      flops / step_cpu / 1e9, anchor_cpu, flops / step_cpu / 1e9 / anchor_cpu, cpu::pool().size());
}
