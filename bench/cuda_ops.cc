// bench_cuda_ops: the CUDA backend's kernels on the device, one JSON line per figure. The anchors
// (PyTorch on the same GPU) come from bench/hf_anchor.py run in the same device call; that script
// joins both outputs and prints ours / anchor.
//   gemm_bf16        cuBLASLt bf16 x bf16 -> bf16, f32 accumulate, 8192^3, TFLOP/s
//   gemm_f32         cuBLASLt f32 (no TF32) 4096^3, TFLOP/s
//   attn_fwd/bwd     bf16 FlashAttention-2 kernel, causal, 4 x 4096 tokens, 16 heads of 128,
//                    TFLOP/s counted as FlashAttention does (fwd 4·B·L²·H·D / 2, bwd 2.5x fwd)
//   attn_fwd/bwd_d64 the same at Qwen2.5-0.5B's shape: 14 query / 2 kv heads of 64
//   attn_*_cudnn     the same shapes through cuDNN's fused SDPA (backend/cuda/cudnn_attention.h,
//                    the training default): forward, deterministic backward and the atomic-dQ
//                    backward (_nondet), with the plan build time, the workspace and the
//                    relative difference of out / lse / dq against the flash kernels' results
//   attn_f32_fwd     the f32 exact attention kernel at 4 x 1024 tokens (for scale)
//   logprob_bf16     fused token log-prob + entropy over bf16 logits [4·4096, 151936]
//                    (Qwen2.5 vocabulary): tokens/s, GB/s, and peak extra device memory against
//                    an f32 [tokens x vocab] tensor (goal <= 1/8)
//   logprob_chunk    (only with the argument `logprob_chunk`) the fused head's chunk kernels alone
//                    (stats and the bf16 backward) at 4·4096 rows x 9472 columns, us and GB/s
//   f32_to_bf16, rms_norm_fwd_bf16, rope_qkv_bf16  (only with the argument `memory`) the
//                    forward's memory-bound passes: a gate/up weight's conversion (0.5B / 1.5B),
//                    RMSNorm into bf16 (H 896 / 1536) and RoPE of q/k/v into bf16 (0.5B / 1.5B
//                    heads) at 4·4096 rows: us and GB/s of the 6 bytes per element each moves;
//                    and the backward's rope_inverse_dqkv_packed (bf16 dq/dk/dv in, packed
//                    bf16 dy + the q/k/v bias column sums out: 4 bytes per element) at the same
//                    heads and rows, cold (L2 flushed) and hot
//   copy             device-to-device copy bandwidth (bytes read + written), the memory ceiling
//   residual_gemm    (only with the argument `residual_gemm`) the residual linears of the Qwen2.5
//                    forwards (o_proj and down_proj, 4·4096 rows): the plain bf16 GEMM into f32
//                    (beta 0), linear_gemm_bf16_add (the residual as C, beta 1, in place) and
//                    the GEMM + add fallback, each in us and TFLOP/s (session 21: the fused
//                    path costs 4-17% over the plain GEMM and saves the separate add)
//   attn_*_1p5b[_mha], attn_*_d64_mha  (only with the argument `attention_gqa`) Qwen2.5-1.5B's
//                    12 / 2 heads of 128, and both models' query heads with K/V expanded (MHA):
//                    whether cuDNN's GQA path costs more than repeating K/V
//   gemv_bf16[_residual]  (only with the argument `gemv`) the batch-1 decode GEMV y = x · w^T
//                    (plain, and with the residual epilogue the fused decode uses for o/down) at
//                    the Qwen2.5 o_proj and down_proj shapes (0.5B: N 896, K 896 / 4864; 1.5B:
//                    N 1536, K 1536 / 8960): microseconds per call over back-to-back calls that
//                    cycle through copies of w totalling >= 256 MB (so each call reads its weight
//                    from HBM, as a decode step's layers do), the split-K factor, and the
//                    bandwidth bound bf16 weight bytes / 3.3 TB/s
//   cast_overlap     (only with the argument `cast_overlap`) whether one layer's weight casts
//                    (Qwen2.5-1.5B: 55M f32 -> bf16, 330 MB moved) can hide under the cuDNN
//                    attention forward (12 / 2 heads of 128, 4 x 4096, causal) when run on another
//                    stream: attention alone, cast alone, both launched together (the cast from a
//                    second host thread, whose stream is its own), median ms of each
//   rms_bwd_add      (only with the argument `rms_bwd` [R...]) the decoder layer's RMSNorm
//                    backward + residual add + bf16 copy of the sum at R = 16384 rows (or the R
//                    given), H = 896 / 1536: the fused ops::rms_norm_backward_add (its default
//                    path, and forced one-pass / two-kernel) and the composition
//                    rms_norm_backward, add_, copy to bf16; microseconds cold (L2 flushed) and
//                    hot, and the bandwidth of the bytes each variant must move (composition 38,
//                    one pass 18, two kernels 26 per element)
//   hopper_gemm      (only with the argument `hopper_gemm`) the own Hopper GEMM (TMA + wgmma,
//                    backend/cuda/hopper_gemm.h) against cuBLASLt at 4·4096 rows: the MLP's gate/up
//                    at Qwen2.5-0.5B / -1.5B shapes — cuBLASLt's two bf16-out GEMMs + silu_mul
//                    (the current path), the own plain GEMM for gate and up, and the own SwiGLU
//                    kernel writing act only (scoring) and act + gate + up (training) — and a
//                    plain 8192^3; microseconds and TFLOP/s, L2 flushed before each call
// Each figure is the median of repeated runs timed with CUDA events after warm-up; inputs are
// random (never zeros).
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"cuda_ops\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/cudnn_attention.h"
#include "gyre/backend/cuda/fused_gemm.h"
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/hopper_gemm.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/cuda/rms_bwd_fused.h"
#include "gyre/backend/cuda/rope_attention_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/fused_norm_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

using namespace gyre;

namespace {

// Random device tensor: up to 16 Mi values drawn on the host (Philox), tiled on the device for
// larger tensors (still far larger than the 60 MB L2, so no figure measures the cache).
Tensor random_device(const Shape& s, DType dt, uint64_t seed, float scale = 1.0f) {
  const int64_t n = shape_numel(s), block = std::min<int64_t>(n, int64_t(1) << 24);
  Tensor host = Tensor::empty({block}, DType::f32);
  PhiloxStream r(seed);
  float* p = host.f32();
  for (int64_t i = 0; i < block; ++i) p[i] = (r.next_uniform() * 2.0f - 1.0f) * scale;
  Tensor src = (dt == DType::f32 ? host : host.to(dt)).to(Device::cuda);
  Tensor out = Tensor::empty(s, dt, Device::cuda);
  const size_t es = dtype_size(dt);
  for (int64_t i = 0; i < n; i += block) {
    const int64_t m = std::min(block, n - i);
    GYRE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(out.raw()) + size_t(i) * es, src.raw(),
                                    size_t(m) * es, cudaMemcpyDeviceToDevice, cuda::stream()));
  }
  cuda::sync();
  return out;
}

void emit(const std::string& json) { std::printf("%s\n", json.c_str()), std::fflush(stdout); }

void bench_gemm() {
  const int64_t n = 8192;
  Tensor a = random_device({n, n}, DType::bf16, 1), b = random_device({n, n}, DType::bf16, 2);
  Tensor c = Tensor::empty({n, n}, DType::bf16, Device::cuda);
  double ms = bench::median_ms([&] {
    cuda::gemm_bf16(false, true, n, n, n, 1.0f, a.data<uint16_t>(), n, b.data<uint16_t>(), n, 0.0f,
                    c.data<uint16_t>(), n, true);
  });
  double tf = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
  emit("{\"bench\":\"gemm_bf16\",\"shape\":\"8192x8192x8192\",\"ms\":" + std::to_string(ms) +
       ",\"tflops\":" + std::to_string(tf) + "}");
  const int64_t m = 4096;
  Tensor x = random_device({m, m}, DType::f32, 3), y = random_device({m, m}, DType::f32, 4);
  Tensor z = Tensor::empty({m, m}, DType::f32, Device::cuda);
  ms = bench::median_ms([&] {
    cuda::gemm_f32(false, false, m, m, m, 1.0f, x.f32(), m, y.f32(), m, 0.0f, z.f32(), m);
  });
  tf = 2.0 * m * m * m / (ms * 1e-3) / 1e12;
  emit("{\"bench\":\"gemm_f32\",\"shape\":\"4096x4096x4096\",\"ms\":" + std::to_string(ms) +
       ",\"tflops\":" + std::to_string(tf) + "}");
}

// One residual linear y = x·wᵀ + r over M rows (x bf16 [M, K], w bf16 [N, K], r = y f32 [M, N]).
void bench_residual_gemm_shape(int64_t M, int64_t N, int64_t K, const std::string& name) {
  Tensor x = random_device({M, K}, DType::bf16, 5),
         w = random_device({N, K}, DType::bf16, 6, 0.05f);
  Tensor y = random_device({M, N}, DType::f32, 7),
         t = Tensor::empty({M, N}, DType::f32, Device::cuda);
  const uint16_t *xp = x.data<uint16_t>(), *wp = w.data<uint16_t>();
  float *yp = y.f32(), *tp = t.f32();
  const double plain =
      bench::median_ms([&] { cuda::linear_gemm_bf16(xp, wp, nullptr, M, N, K, tp); });
  bool fused = true;
  const double add_c = bench::median_ms(
      [&] { fused = cuda::linear_gemm_bf16_add(xp, wp, yp, M, N, K, yp) && fused; });
  const double fallback = bench::median_ms([&] {
    cuda::linear_gemm_bf16(xp, wp, nullptr, M, N, K, tp);
    cuda::add(tp, yp, yp, M * N);
  });
  const double flop = 2.0 * double(M) * double(N) * double(K);
  auto us = [](double ms) { return std::to_string(ms * 1e3); };
  auto tf = [&](double ms) { return std::to_string(flop / (ms * 1e-3) / 1e12); };
  emit("{\"bench\":\"residual_gemm\",\"shape\":\"" + name + "\",\"M\":" + std::to_string(M) +
       ",\"N\":" + std::to_string(N) + ",\"K\":" + std::to_string(K) + ",\"plain_us\":" +
       us(plain) + ",\"plain_tflops\":" + tf(plain) + ",\"beta1_us\":" + us(add_c) +
       ",\"beta1_tflops\":" + tf(add_c) + ",\"beta1_fused\":" + (fused ? "true" : "false") +
       ",\"gemm_then_add_us\":" + us(fallback) + "}");
}

void bench_residual_gemm() {
  const int64_t M = 4 * 4096;
  bench_residual_gemm_shape(M, 896, 896, "0.5b_o_proj");
  bench_residual_gemm_shape(M, 896, 4864, "0.5b_down_proj");
  bench_residual_gemm_shape(M, 1536, 1536, "1.5b_o_proj");
  bench_residual_gemm_shape(M, 1536, 8960, "1.5b_down_proj");
}

// The MLP's gate/up + SwiGLU at M rows (x [M, K], wg / wu [I, K]): cuBLASLt vs the own kernel.
void bench_hopper_swiglu(int64_t M, int64_t I, int64_t K, const std::string& name) {
  Tensor x = random_device({M, K}, DType::bf16, 8),
         wg = random_device({I, K}, DType::bf16, 9, 0.05f),
         wu = random_device({I, K}, DType::bf16, 10, 0.05f);
  Tensor gate = Tensor::empty({M, I}, DType::bf16, Device::cuda),
         up = Tensor::empty({M, I}, DType::bf16, Device::cuda),
         act = Tensor::empty({M, I}, DType::bf16, Device::cuda);
  const uint16_t *xp = x.data<uint16_t>(), *gp = wg.data<uint16_t>(), *up_w = wu.data<uint16_t>();
  uint16_t *g = gate.data<uint16_t>(), *u = up.data<uint16_t>(), *a = act.data<uint16_t>();
  // Median of 10 single calls, each after an L2 flush (milliseconds).
  auto cold = [](const std::function<void()>& fn) {
    return bench::time_call(fn, 10).cold_us / 1e3;
  };
  const double cublas = cold([&] {
    cuda::linear_gemm_bf16_out(xp, gp, nullptr, M, I, K, g);
    cuda::linear_gemm_bf16_out(xp, up_w, nullptr, M, I, K, u);
    cuda::silu_mul_fwd_bf16(g, u, a, M * I);
  });
  const double cublas_gemms = cold([&] {
    cuda::linear_gemm_bf16_out(xp, gp, nullptr, M, I, K, g);
    cuda::linear_gemm_bf16_out(xp, up_w, nullptr, M, I, K, u);
  });
  const double own_gemms = cold([&] {
    cuda::hopper_gemm_bf16(xp, gp, g, M, I, K);
    cuda::hopper_gemm_bf16(xp, up_w, u, M, I, K);
  });
  const double own_act =
      cold([&] { cuda::hopper_swiglu_bf16(xp, gp, up_w, a, nullptr, nullptr, M, I, K); });
  const double own_all = cold([&] { cuda::hopper_swiglu_bf16(xp, gp, up_w, a, g, u, M, I, K); });
  const double flop = 4.0 * double(M) * double(I) * double(K);
  auto us = [](double ms) { return std::to_string(ms * 1e3); };
  auto tf = [&](double ms) { return std::to_string(flop / (ms * 1e-3) / 1e12); };
  emit("{\"bench\":\"hopper_swiglu\",\"shape\":\"" + name + "\",\"M\":" + std::to_string(M) +
       ",\"I\":" + std::to_string(I) + ",\"K\":" + std::to_string(K) +
       ",\"cublas_gemms_silu_us\":" + us(cublas) + ",\"cublas_gemms_us\":" + us(cublas_gemms) +
       ",\"cublas_gemms_tflops\":" + tf(cublas_gemms) + ",\"own_gemms_us\":" + us(own_gemms) +
       ",\"own_gemms_tflops\":" + tf(own_gemms) + ",\"own_swiglu_act_us\":" + us(own_act) +
       ",\"own_swiglu_act_tflops\":" + tf(own_act) + ",\"own_swiglu_all_us\":" + us(own_all) + "}");
}

void bench_hopper_gemm() {
  if (!cuda::hopper_gemm_supported(8, 8, 8)) {
    emit("{\"bench\":\"hopper_gemm\",\"skipped\":\"not an sm_90 device\"}");
    return;
  }
  const int64_t n = 8192;
  Tensor a = random_device({n, n}, DType::bf16, 1), b = random_device({n, n}, DType::bf16, 2);
  Tensor c = Tensor::empty({n, n}, DType::bf16, Device::cuda);
  const uint16_t *ap = a.data<uint16_t>(), *bp = b.data<uint16_t>();
  uint16_t* cp = c.data<uint16_t>();
  const double cublas = bench::median_ms(
      [&] { cuda::gemm_bf16(false, true, n, n, n, 1.0f, ap, n, bp, n, 0.0f, cp, n, true); });
  const double own = bench::median_ms([&] { cuda::hopper_gemm_bf16(ap, bp, cp, n, n, n); });
  auto tf = [&](double ms) { return std::to_string(2.0 * n * n * n / (ms * 1e-3) / 1e12); };
  emit("{\"bench\":\"hopper_gemm\",\"shape\":\"8192x8192x8192\",\"cublas_tflops\":" + tf(cublas) +
       ",\"own_tflops\":" + tf(own) + "}");
  bench_hopper_swiglu(4 * 4096, 4864, 896, "0.5b_gate_up");
  bench_hopper_swiglu(4 * 4096, 8960, 1536, "1.5b_gate_up");
}

// One flash shape: forward and backward TFLOP/s (FlashAttention's count, fwd 4·B·L²·Hq·D / 2
// causal, bwd 2.5x fwd), printed as attn_fwd / attn_bwd (the suffix names the shape).
// The forward operands of a packed causal attention over B sequences of L tokens (random bf16
// q, k, v; out and lse to write), as bench_flash and bench_cast_overlap run it.
struct AttentionInputs {
  int64_t B, L, T, Hq, Hkv, D;
  float scale;
  Tensor cu, q, k, v, out, lse;
  AttentionInputs(int64_t b, int64_t l, int64_t hq, int64_t hkv, int64_t d)
      : B(b), L(l), T(b * l), Hq(hq), Hkv(hkv), D(d), scale(1.0f / std::sqrt(float(d))) {
    std::vector<int32_t> cu_v;
    for (int64_t i = 0; i <= B; ++i) cu_v.push_back(int32_t(i * L));
    cu = Tensor::from_vector(cu_v, {B + 1}).to(Device::cuda);
    q = random_device({T, Hq, D}, DType::bf16, 5);
    k = random_device({T, Hkv, D}, DType::bf16, 6);
    v = random_device({T, Hkv, D}, DType::bf16, 7);
    out = Tensor::empty({T, Hq, D}, DType::bf16, Device::cuda);
    lse = Tensor::empty({T, Hq}, DType::f32, Device::cuda);
  }
};

void bench_flash(int64_t Hq, int64_t Hkv, int64_t D, const std::string& suffix) {
  AttentionInputs in(4, 4096, Hq, Hkv, D);
  const int64_t B = in.B, L = in.L, T = in.T;
  const std::string shape = "4x4096," + std::to_string(Hq) + "/" + std::to_string(Hkv) + "x" +
                            std::to_string(D) + ",causal";
  Tensor &cu = in.cu, &q = in.q, &k = in.k, &v = in.v, &out = in.out, &lse = in.lse;
  Tensor dout = random_device({T, Hq, D}, DType::bf16, 8);
  Tensor dq = Tensor::empty({T, Hq, D}, DType::bf16, Device::cuda);
  Tensor dk = Tensor::empty({T, Hkv, D}, DType::bf16, Device::cuda);
  Tensor dv = Tensor::empty({T, Hkv, D}, DType::bf16, Device::cuda);
  Tensor partials = Tensor::empty({T, Hq, D}, DType::f32, Device::cuda);
  Tensor delta = Tensor::empty({T, Hq}, DType::f32, Device::cuda);
  const float scale = in.scale;
  auto fwd = [&] {
    cuda::flash_attention_bf16_fwd(q.data<uint16_t>(), k.data<uint16_t>(), v.data<uint16_t>(),
                                   cu.i32(), B, L, T, Hq, Hkv, D, scale, out.data<uint16_t>(),
                                   lse.f32());
  };
  auto bwd = [&] {
    cuda::flash_attention_bf16_bwd(
        dout.data<uint16_t>(), q.data<uint16_t>(), k.data<uint16_t>(), v.data<uint16_t>(),
        out.data<uint16_t>(), lse.f32(), cu.i32(), B, L, T, Hq, Hkv, D, scale, dq.data<uint16_t>(),
        dk.data<uint16_t>(), dv.data<uint16_t>(), partials.f32(), delta.f32());
  };
  const double flops_fwd = 4.0 * B * double(L) * L * Hq * D / 2.0;
  auto tf = [](double f, double ms) { return std::to_string(f / (ms * 1e-3) / 1e12); };
  double ms = bench::median_ms(fwd);
  emit("{\"bench\":\"attn_fwd" + suffix + "\",\"shape\":\"" + shape +
       "\",\"ms\":" + std::to_string(ms) + ",\"tflops\":" + tf(flops_fwd, ms) + "}");
  fwd();
  ms = bench::median_ms(bwd);
  emit("{\"bench\":\"attn_bwd" + suffix + "\",\"shape\":\"" + shape +
       "\",\"ms\":" + std::to_string(ms) + ",\"tflops\":" + tf(2.5 * flops_fwd, ms) + "}");

  // The same shape through cuDNN; its results are compared with the flash kernels' just computed.
  std::string why;
  if (!cuda::cudnn_attention_available(&why)) {
    emit("{\"bench\":\"attn_fwd_cudnn" + suffix + "\",\"skipped\":\"" + why + "\"}");
    return;
  }
  fwd();
  bwd();
  const std::vector<float> out_f = out.to_vector(), lse_f = lse.to_vector(), dq_f = dq.to_vector();
  auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) num += double(a[i] - b[i]) * (a[i] - b[i]);
    for (float x : b) den += double(x) * x;
    return std::to_string(std::sqrt(num / std::max(den, 1e-30)));
  };
  bool ran = true;
  auto cfwd = [&] {
    ran &= cuda::cudnn_attention_fwd(q.data<uint16_t>(), k.data<uint16_t>(), v.data<uint16_t>(),
                                     cu.i32(), B, L, T, Hq, Hkv, D, scale, out.data<uint16_t>(),
                                     lse.f32());
  };
  auto cbwd = [&] {
    ran &= cuda::cudnn_attention_bwd(dout.data<uint16_t>(), q.data<uint16_t>(), k.data<uint16_t>(),
                                     v.data<uint16_t>(), out.data<uint16_t>(), lse.f32(), cu.i32(),
                                     B, L, T, Hq, Hkv, D, scale, dq.data<uint16_t>(),
                                     dk.data<uint16_t>(), dv.data<uint16_t>());
  };
  auto built = [] {
    const auto s = cuda::cudnn_attention_stats();
    return ",\"plans_built\":" + std::to_string(s.plans_built) +
           ",\"plan_build_ms_total\":" + std::to_string(s.build_ms) +
           ",\"workspace_bytes\":" + std::to_string(s.last_workspace_bytes) + ",\"engine\":\"" +
           s.last_engine + "\"";
  };
  cfwd();  // builds the plan (timed separately: plan_build_ms_total)
  ms = bench::median_ms(cfwd);
  const std::string fwd_diff = ",\"rel_vs_flash_out\":" + rel(out.to_vector(), out_f) +
                               ",\"rel_vs_flash_lse\":" + rel(lse.to_vector(), lse_f);
  emit("{\"bench\":\"attn_fwd_cudnn" + suffix + "\",\"shape\":\"" + shape +
       "\",\"ms\":" + std::to_string(ms) + ",\"tflops\":" + tf(flops_fwd, ms) + fwd_diff + built() +
       ",\"ran\":" + (ran ? "true" : "false") + "}");
  for (const char* det : {"1", "0"}) {
    setenv("GYRE_CUDNN_ATTENTION_DETERMINISTIC", det, 1);
    cbwd();
    ms = bench::median_ms(cbwd);
    const std::string name = std::string("attn_bwd_cudnn") + (det[0] == '0' ? "_nondet" : "");
    emit("{\"bench\":\"" + name + suffix + "\",\"shape\":\"" + shape +
         "\",\"ms\":" + std::to_string(ms) + ",\"tflops\":" + tf(2.5 * flops_fwd, ms) +
         ",\"rel_vs_flash_dq\":" + rel(dq.to_vector(), dq_f) + built() +
         ",\"ran\":" + (ran ? "true" : "false") + "}");
  }
  unsetenv("GYRE_CUDNN_ATTENTION_DETERMINISTIC");
}

void bench_attention() {
  bench_flash(16, 16, 128, "");    // 16 heads of 128 (MHA)
  bench_flash(14, 2, 64, "_d64");  // Qwen2.5-0.5B: 14 query / 2 kv heads of 64
  const int64_t B = 4, H = 16, D = 128;
  const float scale = 1.0f / std::sqrt(float(D));
  double ms = 0;
  // f32 exact path, shorter sequences.
  const int64_t L2 = 1024, T2 = B * L2;
  std::vector<int32_t> cu2;
  for (int64_t b = 0; b <= B; ++b) cu2.push_back(int32_t(b * L2));
  Tensor c2 = Tensor::from_vector(cu2, {B + 1}).to(Device::cuda);
  Tensor qf = random_device({T2, H, D}, DType::f32, 9),
         kf = random_device({T2, H, D}, DType::f32, 10);
  Tensor vf = random_device({T2, H, D}, DType::f32, 11);
  Tensor of = Tensor::empty({T2, H, D}, DType::f32, Device::cuda);
  Tensor lf = Tensor::empty({T2, H}, DType::f32, Device::cuda);
  ms = bench::median_ms(
      [&] {
        cuda::attention_fwd(qf.f32(), kf.f32(), vf.f32(), c2.i32(), B, T2, H, H, D, scale, of.f32(),
                            lf.f32());
      },
      1, 3);
  const double f2 = 4.0 * B * double(L2) * L2 * H * D / 2.0;
  emit("{\"bench\":\"attn_f32_fwd\",\"shape\":\"4x1024,16x128,causal\",\"ms\":" +
       std::to_string(ms) + ",\"tflops\":" + std::to_string(f2 / (ms * 1e-3) / 1e12) + "}");
}

void bench_logprob() {
  const int64_t T = 4 * 4096, V = 151936;
  Tensor logits = random_device({T, V}, DType::bf16, 12, 8.0f);
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) tg[size_t(i)] = int32_t((i * 7919) % V);
  Tensor targets = Tensor::from_vector(tg, {T}).to(Device::cuda);
  Tensor logp = Tensor::empty({T}, DType::f32, Device::cuda);
  Tensor ent = Tensor::empty({T}, DType::f32, Device::cuda);
  cuda::sync();
  Allocator& al = cuda::device_allocator();
  al.reset_peak();
  const size_t base = al.bytes_in_use();
  double ms = bench::median_ms([&] {
    cuda::token_logprobs_fwd_bf16(logits.data<uint16_t>(), targets.i32(), T, V, 1.0f, logp.f32(),
                                  ent.f32());
  });
  const size_t extra = al.peak_bytes() - base;
  const double f32_tensor = double(T) * V * 4.0;
  const double gbs = double(T) * V * 2.0 / (ms * 1e-3) / 1e9;
  emit("{\"bench\":\"logprob_bf16\",\"tokens\":" + std::to_string(T) +
       ",\"vocab\":" + std::to_string(V) + ",\"ms\":" + std::to_string(ms) +
       ",\"tokens_per_s\":" + std::to_string(T / (ms * 1e-3)) +
       ",\"gb_per_s\":" + std::to_string(gbs) + ",\"peak_extra_bytes\":" + std::to_string(extra) +
       ",\"extra_over_f32_logits\":" + std::to_string(double(extra) / f32_tensor) +
       ",\"goal_ratio\":0.125}");
}

// The fused head's two chunk kernels alone at T = 4·4096 rows and its chunk width C = 9472
// (default_logprob_chunk of the Qwen2.5 vocabulary): logprob_chunk_stats (f32 logits in, folded
// into the running statistics) and logprob_chunk_bwd_bf16 (f32 logits in, bf16 dz out), in us and
// in GB/s of the bytes each must move (stats 4 per element, backward 6).
void bench_logprob_chunk() {
  const int64_t T = 4 * 4096, C = 9472, V = 151936;
  Tensor x = random_device({T, C}, DType::f32, 14, 8.0f);
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) tg[size_t(i)] = int32_t((i * 7919) % V);
  Tensor targets = Tensor::from_vector(tg, {T}).to(Device::cuda);
  Tensor stats = Tensor::zeros({T, 4}, DType::f32, Device::cuda);
  Tensor lse = random_device({T}, DType::f32, 15, 1.0f);
  Tensor dlogp = random_device({T}, DType::f32, 16, 1.0f);
  Tensor dz = Tensor::empty({T, C}, DType::bf16, Device::cuda);
  cuda::logprob_chunk_stats(x.f32(), targets.i32(), T, C, 0, 1.0f, false, stats.f32());
  const double stats_ms = bench::median_ms(
      [&] { cuda::logprob_chunk_stats(x.f32(), targets.i32(), T, C, 0, 1.0f, true, stats.f32()); });
  const double bwd_ms = bench::median_ms([&] {
    cuda::logprob_chunk_bwd_bf16(x.f32(), targets.i32(), T, C, 0, 1.0f, lse.f32(), nullptr,
                                 dlogp.f32(), nullptr, dz.data<uint16_t>());
  });
  const double el = double(T) * double(C);
  emit("{\"bench\":\"logprob_chunk\",\"rows\":" + std::to_string(T) +
       ",\"chunk\":" + std::to_string(C) + ",\"stats_us\":" + std::to_string(stats_ms * 1e3) +
       ",\"stats_gb_per_s\":" + std::to_string(el * 4.0 / (stats_ms * 1e-3) / 1e9) +
       ",\"bwd_bf16_us\":" + std::to_string(bwd_ms * 1e3) +
       ",\"bwd_gb_per_s\":" + std::to_string(el * 6.0 / (bwd_ms * 1e-3) / 1e9) + "}");
}

// The forward's memory-bound prologues of the autocast GEMMs and the attention: f32_to_bf16 of a
// weight (6 bytes per element), and at 4·4096 rows rms_norm_fwd_bf16 (f32 rows in, bf16 normed rows
// out: 6 bytes per element) at H = 896 / 1536, and rope_qkv_bf16 (f32 q/k/v in, rotated bf16 out: 6
// bytes per element) at Qwen2.5-0.5B's 14 / 2 heads of 64 and 1.5B's 12 / 2 heads of 128; us, and
// GB/s of those bytes (the copy figure is the ceiling).
void bench_memory_bound() {
  const int64_t T = 4 * 4096;
  // The per-pass weight conversion of an autocast forward without a weight cache: f32_to_bf16 of
  // a gate/up weight (0.5B: 4864 x 896, 1.5B: 8960 x 1536).
  for (int64_t n : {int64_t(4864) * 896, int64_t(8960) * 1536}) {
    Tensor src = random_device({n}, DType::f32, 24, 1.0f);
    Tensor dst = Tensor::empty({n}, DType::bf16, Device::cuda);
    // L2 flushed before each call: the weight (22-83 MB) would otherwise stay partly cached.
    const bench::Timing t =
        bench::time_call([&] { cuda::f32_to_bf16(src.f32(), dst.data<uint16_t>(), n); }, 20);
    emit("{\"bench\":\"f32_to_bf16\",\"elements\":" + std::to_string(n) +
         ",\"cold_us\":" + std::to_string(t.cold_us) +
         ",\"gb_per_s\":" + std::to_string(double(n) * 6.0 / (t.cold_us * 1e-6) / 1e9) + "}");
  }
  for (int64_t H : {896, 1536}) {
    Tensor x = random_device({T, H}, DType::f32, 17, 2.0f);
    Tensor w = random_device({H}, DType::f32, 18, 1.0f);
    Tensor yb = Tensor::empty({T, H}, DType::bf16, Device::cuda);
    const double ms = bench::median_ms([&] {
      cuda::rms_norm_fwd_bf16(x.f32(), w.f32(), T, H, 1e-6, yb.data<uint16_t>(), nullptr, nullptr);
    });
    emit("{\"bench\":\"rms_norm_fwd_bf16\",\"rows\":" + std::to_string(T) +
         ",\"hidden\":" + std::to_string(H) + ",\"us\":" + std::to_string(ms * 1e3) +
         ",\"gb_per_s\":" + std::to_string(double(T) * H * 6.0 / (ms * 1e-3) / 1e9) + "}");
  }
  struct Heads {
    int64_t hq, hkv, d;
  };
  for (Heads h : {Heads{14, 2, 64}, Heads{12, 2, 128}}) {
    const int64_t half = h.d / 2, max_pos = 4096;
    Tensor q = random_device({T, h.hq * h.d}, DType::f32, 19, 2.0f);
    Tensor k = random_device({T, h.hkv * h.d}, DType::f32, 20, 2.0f);
    Tensor v = random_device({T, h.hkv * h.d}, DType::f32, 21, 2.0f);
    Tensor cs = random_device({max_pos, half}, DType::f32, 22, 1.0f);
    Tensor sn = random_device({max_pos, half}, DType::f32, 23, 1.0f);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) pos[size_t(i)] = int32_t(i % max_pos);
    Tensor positions = Tensor::from_vector(pos, {T}).to(Device::cuda);
    Tensor qb = Tensor::empty({T, h.hq * h.d}, DType::bf16, Device::cuda);
    Tensor kb = Tensor::empty({T, h.hkv * h.d}, DType::bf16, Device::cuda);
    Tensor vb = Tensor::empty({T, h.hkv * h.d}, DType::bf16, Device::cuda);
    const double ms = bench::median_ms([&] {
      cuda::rope_qkv_bf16(q.f32(), k.f32(), v.f32(), T, h.hq, h.hkv, h.d, positions.i32(), cs.f32(),
                          sn.f32(), qb.data<uint16_t>(), kb.data<uint16_t>(), vb.data<uint16_t>());
    });
    const double el = double(T) * double(h.hq + 2 * h.hkv) * double(h.d);
    emit("{\"bench\":\"rope_qkv_bf16\",\"rows\":" + std::to_string(T) + ",\"heads\":\"" +
         std::to_string(h.hq) + "/" + std::to_string(h.hkv) + "x" + std::to_string(h.d) +
         "\",\"us\":" + std::to_string(ms * 1e3) +
         ",\"gb_per_s\":" + std::to_string(el * 6.0 / (ms * 1e-3) / 1e9) + "}");
  }
  // The backward's counterpart: rope_inverse_dqkv_packed (bf16 dq/dk/dv in, inverse-rotated and
  // packed bf16 [T, (Hq + 2·Hkv)·D] out, the three bias gradients' column sums), 4 bytes per
  // element; cold (L2 flushed) and hot.
  for (Heads h : {Heads{14, 2, 64}, Heads{12, 2, 128}}) {
    const int64_t half = h.d / 2, max_pos = 4096, nq = h.hq * h.d, nkv = h.hkv * h.d;
    Tensor dq = random_device({T, nq}, DType::bf16, 24, 1.0f);
    Tensor dk = random_device({T, nkv}, DType::bf16, 25, 1.0f);
    Tensor dv = random_device({T, nkv}, DType::bf16, 26, 1.0f);
    Tensor cs = random_device({max_pos, half}, DType::f32, 27, 1.0f);
    Tensor sn = random_device({max_pos, half}, DType::f32, 28, 1.0f);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) pos[size_t(i)] = int32_t(i % max_pos);
    Tensor positions = Tensor::from_vector(pos, {T}).to(Device::cuda);
    Tensor dst = Tensor::empty({T, nq + 2 * nkv}, DType::bf16, Device::cuda);
    Tensor dbq = random_device({nq}, DType::f32, 29), dbk = random_device({nkv}, DType::f32, 30),
           dbv = random_device({nkv}, DType::f32, 31);
    cuda::PackedDqkv out;
    out.dst = dst.data<uint16_t>();
    out.ld = nq + 2 * nkv;
    out.col[0] = 0, out.col[1] = nq, out.col[2] = nq + nkv;
    out.db[0] = dbq.f32(), out.db[1] = dbk.f32(), out.db[2] = dbv.f32();
    const bench::Timing t = bench::time_call(
        [&] {
          cuda::rope_inverse_dqkv_packed(dq.data<uint16_t>(), dk.data<uint16_t>(),
                                         dv.data<uint16_t>(), T, h.hq, h.hkv, h.d, positions.i32(),
                                         cs.f32(), sn.f32(), out);
        },
        20);
    const double bytes = double(T) * double(out.ld) * 4.0;
    emit("{\"bench\":\"rope_inverse_dqkv_packed\",\"rows\":" + std::to_string(T) + ",\"heads\":\"" +
         std::to_string(h.hq) + "/" + std::to_string(h.hkv) + "x" + std::to_string(h.d) +
         "\",\"cold_us\":" + std::to_string(t.cold_us) + ",\"hot_us\":" + std::to_string(t.hot_us) +
         ",\"cold_gb_per_s\":" + std::to_string(bytes / (t.cold_us * 1e-6) / 1e9) +
         ",\"hot_gb_per_s\":" + std::to_string(bytes / (t.hot_us * 1e-6) / 1e9) + "}");
  }
}

void bench_copy() {
  const int64_t n = int64_t(1) << 30;  // 1 Gi floats = 4 GiB each way
  Tensor a = random_device({n / 1024, 1024}, DType::f32, 13);
  Tensor b = Tensor::empty({n / 1024, 1024}, DType::f32, Device::cuda);
  double ms = bench::median_ms([&] {
    GYRE_CUDA_CHECK(
        cudaMemcpyAsync(b.raw(), a.raw(), size_t(n) * 4, cudaMemcpyDeviceToDevice, cuda::stream()));
  });
  emit("{\"bench\":\"copy\",\"bytes\":" + std::to_string(n * 8) + ",\"ms\":" + std::to_string(ms) +
       ",\"tb_per_s\":" + std::to_string(double(n) * 8 / (ms * 1e-3) / 1e12) + "}");
}

// One decode GEMV shape at M = 1: plain linear_gemv_bf16 and the residual-epilogue variant.
void bench_gemv_shape(int64_t N, int64_t K, const std::string& name) {
  const size_t bytes = size_t(N * K) * 2;
  const int copies = int(std::max<size_t>(2, ((size_t(256) << 20) + bytes - 1) / bytes));
  Tensor w0 = random_device({N, K}, DType::bf16, 14, 0.05f);
  std::vector<Tensor> w;
  for (int i = 0; i < copies; ++i) {
    w.push_back(Tensor::empty({N, K}, DType::bf16, Device::cuda));
    GYRE_CUDA_CHECK(
        cudaMemcpyAsync(w.back().raw(), w0.raw(), bytes, cudaMemcpyDeviceToDevice, cuda::stream()));
  }
  Tensor x = random_device({1, K}, DType::f32, 15), r = random_device({1, N}, DType::f32, 16);
  Tensor y = Tensor::empty({1, N}, DType::f32, Device::cuda);
  const int reps = 20 * copies;  // every copy 20 times, in turn
  const int split = cuda::gemv_split_for(K);
  for (bool residual : {false, true}) {
    auto call = [&](int i) {
      const uint16_t* wi = w[size_t(i % copies)].data<uint16_t>();
      if (residual)
        cuda::linear_gemv_bf16_residual(x.f32(), wi, nullptr, r.f32(), 1, N, K, y.f32());
      else
        cuda::linear_gemv_bf16(x.f32(), wi, nullptr, 1, N, K, y.f32());
    };
    for (int i = 0; i < copies; ++i) call(i);  // warm-up
    bench::EventPair ev;
    std::vector<double> us;
    for (int t = 0; t < 5; ++t) {
      ev.start();
      for (int i = 0; i < reps; ++i) call(i);
      us.push_back(ev.stop_ms() * 1e3 / reps);
    }
    const double u = bench::median(us), bound = double(bytes) / 3.3e12 * 1e6;
    emit("{\"bench\":\"gemv_bf16" + std::string(residual ? "_residual" : "") + "\",\"shape\":\"" +
         name + "\",\"M\":1,\"N\":" + std::to_string(N) + ",\"K\":" + std::to_string(K) +
         ",\"split\":" + std::to_string(split) + ",\"us\":" + std::to_string(u) +
         ",\"bound_us\":" + std::to_string(bound) +
         ",\"tb_per_s\":" + std::to_string(double(bytes) / (u * 1e-6) / 1e12) +
         ",\"weight_copies\":" + std::to_string(copies) + "}");
  }
}

void bench_gemv() {
  bench_gemv_shape(896, 896, "0.5b_o_proj");
  bench_gemv_shape(896, 4864, "0.5b_down_proj");
  bench_gemv_shape(1536, 1536, "1.5b_o_proj");
  bench_gemv_shape(1536, 8960, "1.5b_down_proj");
}

// The RMSNorm backward + residual add + bf16 cast of one decoder-layer norm, fused and composed.
void bench_rms_bwd_add_shape(int64_t R, int64_t H) {
  Tensor x = random_device({R, H}, DType::f32, 17), dy = random_device({R, H}, DType::f32, 18);
  Tensor res = random_device({R, H}, DType::f32, 19), w = random_device({H}, DType::f32, 20);
  Tensor dw = random_device({H}, DType::f32, 21), y, rstd;
  ops::rms_norm(x, w, 1e-6f, y, rstd);
  Tensor dx = Tensor::empty({R, H}, DType::f32, Device::cuda);
  Tensor dx16 = Tensor::empty({R, H}, DType::bf16, Device::cuda);
  const double elems = double(R) * double(H);
  const auto report = [&](const std::string& variant, double bytes_per_elem,
                          const std::function<void()>& fn) {
    const bench::Timing t = bench::time_call(fn, 20);
    const double bytes = bytes_per_elem * elems;
    emit("{\"bench\":\"rms_bwd_add\",\"variant\":\"" + variant + "\",\"R\":" + std::to_string(R) +
         ",\"H\":" + std::to_string(H) + ",\"cold_us\":" + std::to_string(t.cold_us) +
         ",\"hot_us\":" + std::to_string(t.hot_us) +
         ",\"bytes\":" + std::to_string(int64_t(bytes)) +
         ",\"cold_tb_per_s\":" + std::to_string(bytes / (t.cold_us * 1e-6) / 1e12) +
         ",\"hot_tb_per_s\":" + std::to_string(bytes / (t.hot_us * 1e-6) / 1e12) + "}");
    return t.cold_us;
  };
  const auto fused = [&] { ops::rms_norm_backward_add(dy, x, w, rstd, res, dx, dw, &dx16); };
  const int64_t chunks = (R + 127) / 128;
  const bool default_one_pass = chunks >= cuda::rms_bwd_add_min_fused_chunks() && H <= 8192;
  const double fused_us =
      report(default_one_pass ? "fused" : "fused_two_kernels", default_one_pass ? 18 : 26, fused);
  const int64_t old =
      cuda::set_rms_bwd_add_min_fused_chunks(default_one_pass ? int64_t(1) << 62 : 1);
  report(default_one_pass ? "fused_forced_two_kernels" : "fused_forced_one_pass",
         default_one_pass ? 26 : 18, fused);
  cuda::set_rms_bwd_add_min_fused_chunks(old);
  const double comp_us = report("composition", 38, [&] {
    ops::rms_norm_backward(dy, x, w, rstd, dx, dw);
    ops::add_(dx, res);
    ops::copy(dx, dx16);
  });
  emit("{\"bench\":\"rms_bwd_add_speedup\",\"R\":" + std::to_string(R) +
       ",\"H\":" + std::to_string(H) +
       ",\"composition_over_fused_cold\":" + std::to_string(comp_us / fused_us) + "}");
}

// Rows from the command line after `rms_bwd` (for tuning the one-pass threshold), else 16384.
void bench_rms_bwd_add(const std::vector<int64_t>& rows) {
  for (int64_t R : rows.empty() ? std::vector<int64_t>{16384} : rows)
    for (int64_t H : {896, 1536}) bench_rms_bwd_add_shape(R, H);
}

}  // namespace

// See the header: attention on this thread's stream, the cast on a helper thread's stream, both
// released by one event; the span runs from that event to the later of the two ends.
void bench_cast_overlap() {
  const int64_t B = 4, L = 4096, T = B * L, Hq = 12, Hkv = 2, D = 128;
  std::string why;
  if (!cuda::cudnn_attention_available(&why)) {
    emit("{\"bench\":\"cast_overlap\",\"skipped\":\"" + why + "\"}");
    return;
  }
  AttentionInputs in(B, L, Hq, Hkv, D);
  Tensor &cu = in.cu, &q = in.q, &k = in.k, &v = in.v, &out = in.out, &lse = in.lse;
  const int64_t n = 55'000'000;  // one 1.5B layer: q/k/v/o 5.5M + gate/up/down 41.3M, rounded up
  Tensor w = random_device({n}, DType::f32, 9);
  Tensor wb = Tensor::empty({n}, DType::bf16, Device::cuda);
  const float scale = in.scale;
  auto attn = [&] {
    cuda::cudnn_attention_fwd(q.data<uint16_t>(), k.data<uint16_t>(), v.data<uint16_t>(), cu.i32(),
                              B, L, T, Hq, Hkv, D, scale, out.data<uint16_t>(), lse.f32());
  };
  auto cast = [&] { cuda::f32_to_bf16(w.f32(), wb.data<uint16_t>(), n); };
  attn();
  const double attn_ms = bench::median_ms(attn), cast_ms = bench::median_ms(cast);
  cudaEvent_t go, cast_done, end;
  GYRE_CUDA_CHECK(cudaEventCreate(&go));
  GYRE_CUDA_CHECK(cudaEventCreate(&cast_done));
  GYRE_CUDA_CHECK(cudaEventCreate(&end));
  // The helper thread lives for all runs (its stream too): each run it waits for the host's go,
  // enqueues the event wait and the cast, and says so.
  constexpr int kRuns = 13, kWarm = 3;
  std::atomic<int> released{0}, enqueued{0};
  std::thread helper([&] {
    for (int r = 1; r <= kRuns; ++r) {
      while (released.load() < r) std::this_thread::yield();
      GYRE_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), go, 0));
      cast();
      GYRE_CUDA_CHECK(cudaEventRecord(cast_done, cuda::stream()));
      enqueued.store(r);
    }
    cuda::sync();
  });
  std::vector<double> both;
  for (int r = 1; r <= kRuns; ++r) {
    cuda::sync();
    GYRE_CUDA_CHECK(cudaEventRecord(go, cuda::stream()));
    released.store(r);
    attn();
    while (enqueued.load() < r) std::this_thread::yield();
    GYRE_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), cast_done, 0));
    GYRE_CUDA_CHECK(cudaEventRecord(end, cuda::stream()));
    GYRE_CUDA_CHECK(cudaEventSynchronize(end));
    float ms = 0;
    GYRE_CUDA_CHECK(cudaEventElapsedTime(&ms, go, end));
    if (r > kWarm) both.push_back(ms);
  }
  helper.join();
  std::sort(both.begin(), both.end());
  cudaEventDestroy(go), cudaEventDestroy(cast_done), cudaEventDestroy(end);
  emit("{\"bench\":\"cast_overlap\",\"attention_ms\":" + std::to_string(attn_ms) +
       ",\"cast_ms\":" + std::to_string(cast_ms) +
       ",\"cast_gb_per_s\":" + std::to_string(6.0 * double(n) / (cast_ms * 1e-3) / 1e9) +
       ",\"together_ms\":" + std::to_string(both[both.size() / 2]) +
       ",\"serial_ms\":" + std::to_string(attn_ms + cast_ms) + "}");
}

int main(int argc, char** argv) {
  if (!cuda::available()) {
    emit("{\"bench\":\"cuda_ops\",\"skipped\":\"no CUDA device visible\"}");
    return 0;
  }
  const std::string only = argc > 1 ? argv[1] : "";
  try {
    if (only.empty() || only == "gemm") bench_gemm();
    if (only.empty() || only == "attention") bench_attention();
    if (only.empty() || only == "logprob") bench_logprob();
    if (only.empty() || only == "copy") bench_copy();
    // Explicit only (not part of the anchored default set):
    if (only == "gemv") bench_gemv();
    if (only == "residual_gemm") bench_residual_gemm();
    if (only == "hopper_gemm") bench_hopper_gemm();
    if (only == "cast_overlap") bench_cast_overlap();
    if (only == "logprob_chunk") bench_logprob_chunk();
    if (only == "memory") bench_memory_bound();
    if (only == "attention_gqa") {            // explicit only: GQA against the same heads as MHA
      bench_flash(12, 2, 128, "_1p5b");       // Qwen2.5-1.5B: 12 query / 2 kv heads of 128
      bench_flash(12, 12, 128, "_1p5b_mha");  // the same with K/V expanded to 12 heads
      bench_flash(14, 14, 64, "_d64_mha");    // Qwen2.5-0.5B's heads expanded likewise
    }
    if (only == "rms_bwd") {  // explicit only, likewise
      std::vector<int64_t> rows;
      for (int i = 2; i < argc; ++i) rows.push_back(std::atoll(argv[i]));
      bench_rms_bwd_add(rows);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
#endif
