// bench_decode_stack_gpu: the decoder layers of one batch-1 decode step on the GPU, the persistent
// decode stack (backend/cuda/decode_stack.h: one kernel for every layer) against the per-op fused
// decode it replaces (per layer: the q/k/v GEMV behind the input norm, RoPE + KV write + paged
// attention (+ the split combine), o_proj with the residual, gate/up with SiLU·mul behind the
// post-attention norm, down_proj with the residual — ~6 kernels a layer, programmatic dependent
// launch between them). Both run as CUDA graphs (the rollout engine captures its decode step),
// the L2 flushed before each timed replay. Random weights of the real shapes: Qwen2.5-0.5B (24
// layers, 896 / 14 / 2 / 64 / 4864) and Qwen2.5-1.5B (28 layers, 1536 / 12 / 2 / 128 / 8960), one
// sequence at `--kv` keys (default 384: a 128-token prompt + 256 new tokens), the split plan for a
// 4096-key engine context. Anchor: the bytes the layers must read at least once (every weight +
// the K/V of the context) at 3.3 TB/s — issue 7's bound for the decode step. One JSON line per
// shape; the stack's x is checked bitwise against the per-op path's first.
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"decode_stack_gpu\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/decode_stack.h"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/graph.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

struct ModelShape {
  const char* name;
  int64_t layers, H, Hq, Hkv, D, I;
};

constexpr int64_t kPage = 16;
constexpr int64_t kBound = 4096;
constexpr double kHbm = 3.3e12;  // issue 7's bandwidth for the decode bound

Tensor random_bf16(int64_t n, float scale, uint64_t seed) {
  PhiloxStream r(seed, 3);
  Tensor t = Tensor::empty({n}, DType::bf16);
  uint16_t* b = static_cast<uint16_t*>(t.raw());
  for (int64_t i = 0; i < n; ++i) b[i] = f32_to_bf16(r.next_normal() * scale);
  return t.to(Device::cuda);
}

Tensor random_f32(int64_t n, float mean, float scale, uint64_t seed) {
  PhiloxStream r(seed, 4);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = mean + r.next_normal() * scale;
  return Tensor::from_vector(v, {n}).to(Device::cuda);
}

void run(const ModelShape& s, int32_t kv_len, int reps, int probe) {
  const int64_t qd = s.Hq * s.D, kvd = s.Hkv * s.D;
  const int64_t pages = (kBound + kPage - 1) / kPage + 1;
  std::vector<Tensor> keep;
  auto hold = [&](Tensor t) {
    keep.push_back(t);
    return t;
  };
  auto w16 = [&](int64_t n, int64_t k, uint64_t seed) {
    return static_cast<const uint16_t*>(
        hold(random_bf16(n * k, float(1.0 / std::sqrt(double(k))), seed)).raw());
  };
  std::vector<cuda::DecodeStackLayer> layers;
  for (int64_t l = 0; l < s.layers; ++l) {
    const uint64_t b = 1000 * uint64_t(l + 1);
    cuda::DecodeStackLayer L;
    L.input_norm = hold(random_f32(s.H, 1.0f, 0.1f, b + 1)).f32();
    L.wq = w16(qd, s.H, b + 2), L.wk = w16(kvd, s.H, b + 3), L.wv = w16(kvd, s.H, b + 4);
    L.bq = hold(random_f32(qd, 0, 0.1f, b + 5)).f32();
    L.bk = hold(random_f32(kvd, 0, 0.1f, b + 6)).f32();
    L.bv = hold(random_f32(kvd, 0, 0.1f, b + 7)).f32();
    L.wo = w16(s.H, qd, b + 8);
    L.post_norm = hold(random_f32(s.H, 1.0f, 0.1f, b + 9)).f32();
    L.wg = w16(s.I, s.H, b + 10), L.wu = w16(s.I, s.H, b + 11), L.wd = w16(s.H, s.I, b + 12);
    L.k_cache = static_cast<uint16_t*>(hold(random_bf16(pages * kPage * kvd, 1.0f, b + 13)).raw());
    L.v_cache = static_cast<uint16_t*>(hold(random_bf16(pages * kPage * kvd, 1.0f, b + 14)).raw());
    layers.push_back(L);
  }
  std::vector<float> cs(static_cast<size_t>(kBound * s.D / 2)), sn(cs.size());
  for (int64_t p = 0; p < kBound; ++p)
    for (int64_t i = 0; i < s.D / 2; ++i) {
      const double a = double(p) * std::pow(1e6, -2.0 * double(i) / double(s.D));
      cs[size_t(p * s.D / 2 + i)] = float(std::cos(a)),
                              sn[size_t(p * s.D / 2 + i)] = float(std::sin(a));
    }
  const Tensor cos = Tensor::from_vector(cs, {kBound, s.D / 2}).to(Device::cuda);
  const Tensor sin = Tensor::from_vector(sn, {kBound, s.D / 2}).to(Device::cuda);
  // One sequence over pages 1..np in order; its new token at position kv_len - 1.
  const int32_t np = int32_t((kv_len + kPage - 1) / kPage);
  std::vector<int32_t> page_ids(static_cast<size_t>(np));
  std::iota(page_ids.begin(), page_ids.end(), 1);
  const int32_t pos = kv_len - 1;
  const int32_t slot = page_ids[size_t(pos / kPage)] * int32_t(kPage) + pos % int32_t(kPage);
  auto i32 = [&](std::vector<int32_t> v) {
    const int64_t n = int64_t(v.size());
    return hold(Tensor::from_vector(v, {n}).to(Device::cuda)).i32();
  };
  const int32_t* d_pos = i32({pos});
  const int32_t* d_slot = i32({slot});
  const int32_t* d_cu = i32({0, 1});
  const int32_t* d_kv = i32({kv_len});
  const int32_t* d_indptr = i32({0, np});
  const int32_t* d_pages = i32(page_ids);
  const Tensor x0 = random_f32(s.H, 0, 1.0f, 7);
  Tensor x_ops = x0.clone(), x_stack = x0.clone();
  Tensor q = Tensor::empty({qd}, DType::f32, Device::cuda);
  Tensor k = Tensor::empty({kvd}, DType::f32, Device::cuda);
  Tensor v = Tensor::empty({kvd}, DType::f32, Device::cuda);
  Tensor attn = Tensor::empty({qd}, DType::f32, Device::cuda);
  Tensor act = Tensor::empty({s.I}, DType::f32, Device::cuda);
  const double eps = double(1e-6f);
  const float scale = float(1.0 / std::sqrt(double(s.D)));
  const size_t attn_ws =
      cuda::paged_attention_bf16_workspace_bytes(1, 1, s.Hq, s.Hkv, s.D, 1, kBound);
  Tensor ws = Tensor::empty({int64_t(attn_ws / 4 + 4)}, DType::f32, Device::cuda);

  auto per_op = [&](float* x) {
    for (const cuda::DecodeStackLayer& L : layers) {
      cuda::RmsPrologue n1;
      n1.w = L.input_norm, n1.eps = eps;
      cuda::GemvGroup g;
      g.count = 3;
      g.w[0] = L.wq, g.w[1] = L.wk, g.w[2] = L.wv;
      g.b[0] = L.bq, g.b[1] = L.bk, g.b[2] = L.bv;
      g.y[0] = q.f32(), g.y[1] = k.f32(), g.y[2] = v.f32();
      g.n[0] = qd, g.n[1] = kvd, g.n[2] = kvd;
      cuda::linear_gemv_bf16_group_rms(x, n1, g, 1, s.H);
      cuda::rope_paged_attention_bf16_decode(q.f32(), k.f32(), v.f32(), d_pos, cos.f32(), sin.f32(),
                                             d_slot, L.k_cache, L.v_cache, d_cu, d_kv, d_indptr,
                                             d_pages, 1, s.Hq, s.Hkv, s.D, kPage, scale, kBound,
                                             attn.f32(), ws.raw(), attn_ws);
      cuda::linear_gemv_bf16_residual(attn.f32(), L.wo, nullptr, x, 1, s.H, qd, x);
      cuda::RmsPrologue n2;
      n2.w = L.post_norm, n2.eps = eps;
      cuda::linear_gemv_bf16_silu_mul_rms(x, n2, L.wg, nullptr, L.wu, nullptr, 1, s.I, s.H,
                                          act.f32());
      cuda::linear_gemv_bf16_residual(act.f32(), L.wd, nullptr, x, 1, s.H, s.I, x);
    }
  };
  cuda::DecodeStackArgs args;
  args.layers = s.layers, args.H = s.H, args.Hq = s.Hq, args.Hkv = s.Hkv, args.D = s.D;
  args.I = s.I, args.eps = eps, args.scale = scale, args.layer = layers.data();
  args.positions = d_pos, args.slot_mapping = d_slot, args.cu_seqlens_q = d_cu;
  args.kv_lens = d_kv, args.page_indptr = d_indptr, args.page_indices = d_pages;
  args.cos = cos.f32(), args.sin = sin.f32(), args.page_size = kPage, args.max_kv_len = kBound;
  auto stack = [&](float* x) {
    args.x = x;
    cuda::decode_stack_bf16(args);
  };

  // Correctness first: one step of each from the same x (the K/V both write is the same value at
  // the same slot).
  per_op(x_ops.f32());
  stack(x_stack.f32());
  cuda::sync();
  const Tensor a = x_ops.to(Device::cpu), b = x_stack.to(Device::cpu);
  const bool same = std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;

  // Where the stack's time goes: one traced run (decode_stack.h's trace), per stage kind the mean
  // over layers of the CTAs' mean and max time staging the input row, working their chunks /
  // virtual blocks, and waiting at the grid barrier (clock64 on each SM, at the SM clock).
  {
    const int64_t stages = s.layers * 6, G = cuda::sm_count();
    Tensor tr = Tensor::empty({G * stages * 7 * 2}, DType::f32, Device::cuda);  // int64s
    GYRE_CUDA_CHECK(cudaMemsetAsync(tr.raw(), 0, tr.nbytes(), cuda::stream()));
    args.trace = static_cast<long long*>(tr.raw()), args.trace_stages = stages;
    args.probe = probe;
    stack(x_stack.f32());
    args.trace = nullptr, args.trace_stages = 0, args.probe = 0;
    cuda::sync();
    std::vector<long long> h(static_cast<size_t>(G * stages * 7));
    GYRE_CUDA_CHECK(cudaMemcpy(h.data(), tr.raw(), h.size() * 8, cudaMemcpyDeviceToHost));
    int khz = 0;
    GYRE_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    const double us_per_clk = 1e3 / double(khz);
    const char* kinds[] = {"qkv", "o", "gate_up", "down", "attention", "combine"};
    double sum[6][5] = {}, maxsum[6][3] = {};
    int n[6] = {};
    for (int64_t st = 0; st < stages; ++st) {
      const long long* r0 = &h[size_t(st * 7)];
      if (r0[1] == 0) continue;  // past the last stage
      const int kind = int(r0[0]);
      double mean[3] = {}, mx[3] = {};
      for (int64_t b = 0; b < G; ++b) {
        const long long* r = &h[size_t((b * stages + st) * 7)];
        const double d[3] = {double(r[2] - r[1]), double(r[3] - r[2]), double(r[4] - r[3])};
        for (int i = 0; i < 3; ++i) mean[i] += d[i] / double(G), mx[i] = std::max(mx[i], d[i]);
        sum[kind][3] += double(r[5]) / double(G), sum[kind][4] += double(r[6]) / double(G);
      }
      for (int i = 0; i < 3; ++i) sum[kind][i] += mean[i], maxsum[kind][i] += mx[i];
      ++n[kind];
    }
    for (int k = 0; k < 6; ++k) {
      if (!n[k]) continue;
      std::printf(
          "{\"bench\":\"decode_stack_gpu_trace\",\"probe\":%d,\"shape\":\"%s\",\"stage\":\"%s\","
          "\"stages\":%d,\"row_us\":%.2f,\"work_us\":%.2f,\"work_max_us\":%.2f,"
          "\"barrier_us\":%.2f,\"barrier_max_us\":%.2f,\"chunk_wait_us\":%.2f,"
          "\"copy_issue_us\":%.2f}\n",
          probe, s.name, kinds[k], n[k], sum[k][0] / n[k] * us_per_clk,
          sum[k][1] / n[k] * us_per_clk, maxsum[k][1] / n[k] * us_per_clk,
          sum[k][2] / n[k] * us_per_clk, maxsum[k][2] / n[k] * us_per_clk,
          sum[k][3] / n[k] * us_per_clk, sum[k][4] / n[k] * us_per_clk);
    }
  }

  cuda::CudaGraph g_ops, g_stack;
  g_ops.capture([&] { per_op(x_ops.f32()); });
  g_stack.capture([&] { stack(x_stack.f32()); });
  // Each replay starts from x0 (the residual stream would otherwise grow replay after replay).
  auto time_graph = [&](cuda::CudaGraph& g, Tensor& x) {
    auto reset = [&] {
      GYRE_CUDA_CHECK(cudaMemcpyAsync(x.raw(), x0.raw(), x0.nbytes(), cudaMemcpyDeviceToDevice,
                                      cuda::stream()));
    };
    for (int i = 0; i < 3; ++i) reset(), g.replay();
    bench::EventPair ev;
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      reset();
      bench::flush_l2(i);
      ev.start();
      g.replay();
      t.push_back(ev.stop_ms() * 1e3);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double us_ops = time_graph(g_ops, x_ops), us_stack = time_graph(g_stack, x_stack);
  const double weight_bytes =
      double(s.layers) * 2.0 * double(s.H * (qd + 2 * kvd) + qd * s.H + 3 * s.H * s.I);
  const double kv_bytes = double(s.layers) * double(kv_len) * 2.0 * double(kvd) * 2.0;
  const double bound_us = (weight_bytes + kv_bytes) / kHbm * 1e6;
  std::printf(
      "{\"bench\":\"decode_stack_gpu\",\"shape\":\"%s\",\"kv_len\":%d,\"bitwise_equal\":%s,"
      "\"stack_us\":%.1f,\"per_op_us\":%.1f,\"speedup\":%.2f,\"bound_us\":%.1f,"
      "\"stack_over_bound\":%.2f,\"per_op_over_bound\":%.2f,\"stack_TBps\":%.2f}\n",
      s.name, kv_len, same ? "true" : "false", us_stack, us_ops, us_ops / us_stack, bound_us,
      us_stack / bound_us, us_ops / bound_us, (weight_bytes + kv_bytes) / (us_stack * 1e-6) / 1e12);
  std::fflush(stdout);
}

}  // namespace
}  // namespace gyre

int main(int argc, char** argv) {
  using namespace gyre;
  int32_t kv = 384;
  int reps = 20, probe = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--kv")
      kv = int32_t(std::atoi(argv[i + 1]));
    else if (a == "--reps")
      reps = std::atoi(argv[i + 1]);
    else if (a == "--probe")  // decode_stack.h's DecodeStackArgs::probe for the traced run
      probe = std::atoi(argv[i + 1]);
    else {
      std::fprintf(
          stderr,
          "usage: bench_decode_stack_gpu [--kv KEYS (1..4096)] [--reps N] [--probe 0|1|2]\n");
      return 2;
    }
  }
  if (kv < 1 || kv > 4096 || reps < 1) {
    std::fprintf(stderr, "bench_decode_stack_gpu: --kv must be in 1..4096 and --reps >= 1\n");
    return 2;
  }
  if (!cuda::available()) {
    std::printf("{\"bench\":\"decode_stack_gpu\",\"skipped\":\"no CUDA device\"}\n");
    return 0;
  }
  const ModelShape shapes[] = {{"qwen2.5-0.5b", 24, 896, 14, 2, 64, 4864},
                               {"qwen2.5-1.5b", 28, 1536, 12, 2, 128, 8960}};
  for (const ModelShape& s : shapes) {
    if (!cuda::decode_stack_supported(s.layers, s.H, s.Hq, s.Hkv, s.D, s.I)) {
      std::printf("{\"bench\":\"decode_stack_gpu\",\"shape\":\"%s\",\"skipped\":\"unsupported\"}\n",
                  s.name);
      continue;
    }
    run(s, kv, reps, probe);
  }
  return 0;
}
#endif
