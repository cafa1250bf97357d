// The fused SwiGLU ops on CUDA (backend/fused_linear_ops.h): linear_silu_mul (gate and up over one
// input, then silu_mul) and the whole MLP with its residual, rms_norm_swiglu_mlp_residual, and the
// SwiGLU kernels over bf16 gate/up (backend/cuda/silu_bf16.cu). On the bf16 GEMV path (autocast +
// weight cache, M = 1..8) linear_silu_mul is ONE kernel and bitwise linear, linear, silu_mul on the
// same path, for rows short enough for one warp per column and long enough for split-K (K = 4104),
// within kBf16ActTol of the CPU ops on bf16-rounded operands; past the GEMV's rows (M = 9, 64, 256,
// 300) it is bitwise the unfused cuBLASLt path with one bf16 input, one cast (and the norm) fewer.
// The whole-MLP op is bitwise the unfused ops and the two fused ops at every row count, one kernel
// (the down_proj input cast) fewer past 8 rows; its SwiGLU -> bf16 kernel is bitwise silu_mul then
// f32_to_bf16. Under autocast the SwiGLU's gate and up are bf16 (ops::swiglu_gate_up_dtype): every
// unfused reference writes them with ops::linear into bf16 tensors, and silu_mul over bf16 gate/up
// is bitwise the f32 op on the converted values. The RMSNorm-folded gate/up on the GEMV path:
// fused_rms_cuda_test.cc. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gpu/backend/fused_linear_test_util.h"
#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::bf16_act;
using gputest::cpu;
using gputest::Decode;
using gputest::expect_bitwise;
using gputest::expect_same_bytes;
using gputest::gpu;
using gputest::kBf16ActTol;
using gputest::kernels_if_gemv;
using gputest::kernels_warm;
using gputest::kGemmRows;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;
using gputest::swiglu_ref;

TEST(FusedLinearCuda, SiluMulIsOneKernelAndBitwiseLinearsThenSiluMul) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  for (int64_t K : {896, 4104, 264}) {  // 4104: split-K
    const int64_t N = K == 896 ? 4863 : 77;
    Tensor wg = randn({N, K}, 1 + K), wu = randn({N, K}, 2 + K), bg = randn({N}, 3),
           bu = randn({N}, 4);
    Tensor gwg = gpu(wg), gwu = gpu(wu), gbg = gpu(bg), gbu = gpu(bu), none;
    for (int64_t M = 1; M <= 9; ++M) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) + (bias ? " bias" : ""));
        Tensor x = randn({M, K}, 30 + M, 2.0f), gx = gpu(x);
        const Tensor& pbg = bias ? gbg : none;
        const Tensor& pbu = bias ? gbu : none;
        Decode d(&cache);
        Tensor g = bf16_act(M, N), u = bf16_act(M, N), want;
        ops::linear(gx, gwg, pbg, g);
        ops::linear(gx, gwu, pbu, u);
        ops::silu_mul(g, u, want);
        Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
        const size_t kernels =
            kernels_if_gemv(M, [&] { ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out); });
        EXPECT_EQ(kernels, 1u);
        expect_bitwise(out, want, "silu_mul");
        Tensor cg, cu;
        ops::linear(round_bf16(x), round_bf16(wg), bias ? bg : none, cg);
        ops::linear(round_bf16(x), round_bf16(wu), bias ? bu : none, cu);
        EXPECT_LE(rel_err(cpu(out), swiglu_ref(cg, cu)), kBf16ActTol);
      }
    }
  }
}

// linear_silu_mul / rms_norm_linear_silu_mul past the GEMV's rows: bitwise (rms_norm,) linear,
// linear, silu_mul; Qwen2.5-0.5B's gate/up shape and an odd one. At M = 256 one cast (and the
// norm) fewer.
TEST(FusedLinearCuda, GemmSiluMulRoundsTheInputOnceAndIsBitwiseLinearsThenSiluMul) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  for (int64_t K : {896, 259}) {
    const int64_t N = K == 896 ? 4864 : 77;
    Tensor gnw = gpu(randn({K}, 1000 + K));
    Tensor gwg = gpu(randn({N, K}, 1001 + K, 0.05f)), gwu = gpu(randn({N, K}, 1002 + K, 0.05f));
    Tensor gbg = gpu(randn({N}, 1003)), gbu = gpu(randn({N}, 1004));
    for (int64_t M : kGemmRows) {
      for (bool bias : {true, false}) {
        for (bool norm : {false, true}) {
          SCOPED_TRACE("K " + std::to_string(K) + " M " + std::to_string(M) +
                       (bias ? " bias" : "") + (norm ? " norm" : ""));
          Tensor gx = gpu(randn({M, K}, 1010 + M + K, 3.0f));
          const Tensor& pbg = bias ? gbg : none;
          const Tensor& pbu = bias ? gbu : none;
          Decode d(&cache);
          Tensor xn = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd = Tensor::empty({M}, DType::f32, Device::cuda);
          Tensor g = bf16_act(M, N), u = bf16_act(M, N);
          Tensor want = Tensor::empty({M, N}, DType::f32, Device::cuda);
          auto unfused = [&] {
            if (norm) ops::rms_norm(gx, gnw, eps, xn, rstd);
            ops::linear(norm ? xn : gx, gwg, pbg, g);
            ops::linear(norm ? xn : gx, gwu, pbu, u);
            ops::silu_mul(g, u, want);
          };
          unfused();
          Tensor xn_out = Tensor::empty({M, K}, DType::f32, Device::cuda);
          Tensor rstd_out = Tensor::empty({M}, DType::f32, Device::cuda);
          Tensor out;
          for (bool outputs : {false, true}) {
            if (outputs && !norm) continue;
            SCOPED_TRACE(outputs ? "with rms_norm's outputs" : "");
            out = Tensor();  // allocated by the op
            if (norm)
              ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, out,
                                            outputs ? &xn_out : nullptr,
                                            outputs ? &rstd_out : nullptr);
            else
              ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out);
            expect_bitwise(out, want, "silu_mul");
          }
          if (norm) {
            expect_bitwise(xn_out, xn, "xn_out");
            expect_bitwise(rstd_out, rstd, "rstd_out");
          }
          if (M != 256 || K != 896) continue;
          auto fused = [&] {
            if (norm)
              ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, out);
            else
              ops::linear_silu_mul(gx, gwg, pbg, gwu, pbu, out);
          };
          const size_t n_fused = kernels_warm(fused), n_unfused = kernels_warm(unfused);
          // unfused: [rms_norm] + 2 x (f32_to_bf16 + GEMM) + silu_mul; fused: 1 + 2 GEMMs +
          // silu_mul (with a bias each bf16-output GEMM is the f32 GEMM + f32_to_bf16 in both).
          EXPECT_EQ(n_unfused - n_fused, norm ? 2u : 1u);
          expect_bitwise(out, want, "silu_mul after the counts");
        }
      }
    }
  }
}

// SwiGLU over bf16 gate/up (the autocast MLP's pre-activations, silu_bf16.cu): ops::silu_mul and
// ops::silu_mul_backward are bitwise the f32 ops on the values converted to f32, and
// silu_mul_fwd_bf16 (the fused MLP's bf16 activation) is that forward then f32_to_bf16 — odd
// sizes, one element, more elements than one grid covers (65535 blocks of 256: threads loop), and
// every pairing of special gate and up values — NaN, ±inf, ±0, huge (silu(g) * u overflowing f32,
// or rounding past the largest bf16), exp(-g) overflowing (g = -100), denormals. Sizes that are a
// multiple of 4 take the kernels' 4-wide accesses (silu_bf16.cu), the others one element at a
// time; both loop past one grid (65535 blocks of 256 threads).
TEST(FusedLinearCuda, SiluMulOverBf16GateUpIsBitwiseTheF32OpsOnTheConvertedValues) {
  GYRE_SKIP_WITHOUT_GPU();
  const float inf = INFINITY, nan = std::nanf("");
  const std::vector<float> special = {nan,      inf,      -inf,  0.0f,   -0.0f,   3.0e38f,
                                      -3.0e38f, 3.39e38f, 88.7f, -88.7f, -100.0f, 100.0f,
                                      1e-40f,   -1e-40f,  1.0f,  -1.0f,  20.0f,   -20.0f};
  const size_t S = special.size();
  // n normal values (a random block of at most 2^20, repeated: the large sizes stay cheap).
  auto values = [](int64_t n, uint64_t seed) {
    const int64_t m = std::min<int64_t>(n, int64_t(1) << 20);
    const std::vector<float> block = randn({m}, seed, 4.0f).to_vector();
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = block[i % size_t(m)];
    return v;
  };
  for (int64_t n :
       {int64_t(1), int64_t(7), int64_t(259), int64_t(S * S), int64_t(4863), int64_t(256) * 4864,
        int64_t(256) * 4864 + 1, int64_t(65535) * 256 + 3, int64_t(65535) * 256 * 4 + 8}) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<float> g = values(n, 1300 + n), u = values(n, 1301 + n);
    for (size_t i = 0; i < S * S && i < size_t(n); ++i)
      g[i] = special[i / S], u[i] = special[i % S];
    if (n > 1000) u[size_t(n) - 1] = nan, g[size_t(n) - 2] = -inf;  // the last elements too
    // bf16 gate/up on the device (the host rounding is f32_to_bf16's), and their f32 values.
    Tensor gb = gpu(Tensor::from_vector(g, {n}).to(DType::bf16));
    Tensor ub = gpu(Tensor::from_vector(u, {n}).to(DType::bf16));
    Tensor gf = Tensor::empty({n}, DType::f32, Device::cuda);
    Tensor uf = Tensor::empty({n}, DType::f32, Device::cuda);
    ops::copy(gb, gf);
    ops::copy(ub, uf);
    Tensor act, act_f32;
    ops::silu_mul(gb, ub, act);
    ops::silu_mul(gf, uf, act_f32);
    EXPECT_EQ(act.dtype(), DType::f32);
    expect_same_bytes(act, act_f32, "silu_mul over bf16 gate/up");
    Tensor dout = gpu(Tensor::from_vector(values(n, 1302 + n), {n})), dg, du, dg_f32, du_f32;
    ops::silu_mul_backward(dout, gb, ub, dg, du);
    ops::silu_mul_backward(dout, gf, uf, dg_f32, du_f32);
    expect_same_bytes(dg, dg_f32, "silu_mul_backward dgate over bf16 gate/up");
    expect_same_bytes(du, du_f32, "silu_mul_backward dup over bf16 gate/up");
    Tensor want = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(act.f32(), static_cast<uint16_t*>(want.raw()), n);
    Tensor got = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::silu_mul_fwd_bf16(static_cast<const uint16_t*>(gb.raw()),
                            static_cast<const uint16_t*>(ub.raw()),
                            static_cast<uint16_t*>(got.raw()), n);
    expect_same_bytes(got, want, "silu_mul_fwd_bf16");
    // The ops with bf16 outputs (the training backward's GEMM operands): act, dgate and dup
    // rounded once — f32_to_bf16 of the f32 outputs, bitwise.
    Tensor act16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    ops::silu_mul(gb, ub, act16);
    expect_same_bytes(act16, want, "ops::silu_mul into bf16");
    Tensor dg16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    Tensor du16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    ops::silu_mul_backward(dout, gb, ub, dg16, du16);
    Tensor dg_want = Tensor::empty({n}, DType::bf16, Device::cuda);
    Tensor du_want = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(dg.f32(), static_cast<uint16_t*>(dg_want.raw()), n);
    cuda::f32_to_bf16(du.f32(), static_cast<uint16_t*>(du_want.raw()), n);
    expect_same_bytes(dg16, dg_want, "ops::silu_mul_backward dgate into bf16");
    expect_same_bytes(du16, du_want, "ops::silu_mul_backward dup into bf16");
    // A bf16 dout (down_proj's dx rounded by its GEMM) is read widened exactly: bitwise the op
    // over the f32 tensor holding the same values.
    Tensor dout16 = Tensor::empty({n}, DType::bf16, Device::cuda);
    cuda::f32_to_bf16(dout.f32(), static_cast<uint16_t*>(dout16.raw()), n);
    Tensor dout_widened = Tensor::empty({n}, DType::f32, Device::cuda);
    ops::copy(dout16, dout_widened);
    Tensor dg_b = Tensor::empty({n}, DType::bf16, Device::cuda);
    Tensor du_b = Tensor::empty({n}, DType::bf16, Device::cuda);
    ops::silu_mul_backward(dout16, gb, ub, dg_b, du_b);
    ops::silu_mul_backward(dout_widened, gb, ub, dg16, du16);
    expect_same_bytes(dg_b, dg16, "ops::silu_mul_backward dgate from a bf16 dout");
    expect_same_bytes(du_b, du16, "ops::silu_mul_backward dup from a bf16 dout");
  }
  // A bf16 dout only with bf16 gradients (and bf16 gate/up).
  Tensor g = gpu(randn({8}, 1310).to(DType::bf16)), u = gpu(randn({8}, 1311).to(DType::bf16));
  Tensor d16 = gpu(randn({8}, 1312).to(DType::bf16)), dg32, du32;
  EXPECT_THROW(ops::silu_mul_backward(d16, g, u, dg32, du32), Error);
}

// rms_norm_swiglu_mlp_residual (the decode layer's MLP with its residual) is bitwise the unfused
// ops (rms_norm, linear gate, linear up, silu_mul, linear down, add) and the two fused ops it is
// defined as (rms_norm_linear_silu_mul, linear_add_residual), at the GEMV's rows and past them:
// Qwen2.5-0.5B's MLP (H 896, I 4864), an odd shape (K % 8 != 0: no GEMV) and one with N != K;
// with and without gate/up biases and a down bias (a down bias: the two ops); out separate,
// allocated, the residual itself, and the residual being x (the decoder's call); a residual view
// cuBLASLt cannot take as C (not 256-byte aligned: the GEMM, then add).
TEST(FusedLinearCuda, SwigluMlpResidualIsBitwiseTheComposition) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  Tensor none;
  struct Case {
    int64_t K, I, N;
  };
  for (const Case& cs : {Case{896, 4864, 896}, Case{259, 77, 259}, Case{264, 136, 33}}) {
    const int64_t K = cs.K, I = cs.I, N = cs.N;
    Tensor gnw = gpu(randn({K}, 1200 + K));
    Tensor gwg = gpu(randn({I, K}, 1201 + K, 0.05f)), gwu = gpu(randn({I, K}, 1202 + K, 0.05f));
    Tensor gwd = gpu(randn({N, I}, 1203 + K, 0.05f));
    Tensor gbg = gpu(randn({I}, 1204)), gbu = gpu(randn({I}, 1205)), gbd = gpu(randn({N}, 1206));
    for (int64_t M : {1, 7, 8, 9, 64, 256, 300}) {
      for (bool gu_bias : {false, true}) {
        for (int variant = 0; variant < 4; ++variant) {
          // With the engine's weight cache, and without one (training / scoring: weights rounded
          // into scratch per call; at M <= 8 the unfused ops, gate/up still bf16).
          const bool down_bias = variant & 1, cached = variant & 2;
          SCOPED_TRACE("K " + std::to_string(K) + " I " + std::to_string(I) + " N " +
                       std::to_string(N) + " M " + std::to_string(M) +
                       (gu_bias ? " gate/up bias" : "") + (down_bias ? " down bias" : "") +
                       (cached ? " weight cache" : " no weight cache"));
          const Tensor& pbg = gu_bias ? gbg : none;
          const Tensor& pbu = gu_bias ? gbu : none;
          const Tensor& pbd = down_bias ? gbd : none;
          const Tensor r = randn({M, N}, 1220 + M, 4.0f);
          Tensor gx = gpu(randn({M, K}, 1210 + M + K, 3.0f)), gr = gpu(r);
          Decode d(cached ? &cache : nullptr);
          Tensor xn, rstd, act, t, want;  // the unfused ops, gate/up bf16 as the decoder's
          Tensor g = bf16_act(M, I), u = bf16_act(M, I);
          ops::rms_norm(gx, gnw, eps, xn, rstd);
          ops::linear(xn, gwg, pbg, g);
          ops::linear(xn, gwu, pbu, u);
          ops::silu_mul(g, u, act);
          ops::linear(act, gwd, pbd, t);
          ops::add(t, gr, want);
          Tensor act2, want2;  // the two fused ops
          ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, pbg, gwu, pbu, act2);
          ops::linear_add_residual(act2, gwd, pbd, gr, want2);
          expect_bitwise(want2, want, "the two fused ops vs the unfused ops");
          auto mlp = [&](const Tensor& x, const Tensor& res, Tensor& out) {
            ops::rms_norm_swiglu_mlp_residual(x, gnw, eps, gwg, pbg, gwu, pbu, gwd, pbd, res, out);
          };
          Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
          mlp(gx, gr, out);
          expect_bitwise(out, want, "separate out");
          expect_bitwise(out, want2, "separate out vs the two fused ops");
          Tensor fresh;
          mlp(gx, gr, fresh);
          expect_bitwise(fresh, want, "out allocated");
          expect_bitwise(gr, r, "residual unchanged");
          Tensor in_place = gr.clone();
          mlp(gx, in_place, in_place);
          expect_bitwise(in_place, want, "out is the residual");
          // The residual (and out) one row into a larger tensor: 256-byte aligned only when a
          // row is (N = 896), else cuBLASLt cannot take it as C.
          Tensor big = Tensor::empty({M + 1, N}, DType::f32, Device::cuda);
          Tensor r_view = big.narrow(1, M);
          r_view.copy_from(gr);
          mlp(gx, r_view, out);
          expect_bitwise(out, want, "residual view");
          mlp(gx, r_view, r_view);
          expect_bitwise(r_view, want, "out is the residual view");
          if (N != K) continue;
          // The decoder's call: the residual is x itself (out = x + mlp(rms_norm(x))).
          Tensor want_x;
          ops::add(t, gx, want_x);
          mlp(gx, gx, out);
          expect_bitwise(out, want_x, "residual is x");
          Tensor x_in_place = gx.clone();
          mlp(x_in_place, x_in_place, x_in_place);
          expect_bitwise(x_in_place, want_x, "out is the residual is x");
        }
      }
    }
  }
}

// The names of the kernels body launches (captured like kernels_launched after a warm-up run;
// "?" for a node the runtime cannot name, e.g. a library kernel). body then runs once more.
std::vector<std::string> kernel_names_warm(const std::function<void()>& body) {
  body();
  cudaGraph_t graph = gputest::capture_graph(body);
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &n), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) {
    EXPECT_EQ(cudaGraphGetNodes(graph, nodes.data(), &n), cudaSuccess);
  }
  std::vector<std::string> names;
  for (cudaGraphNode_t node : nodes) {
    std::string name = "?";
    cudaGraphNodeType type{};
    cudaKernelNodeParams p{};
    const char* fn = nullptr;
    if (cudaGraphNodeGetType(node, &type) == cudaSuccess && type == cudaGraphNodeTypeKernel &&
        cudaGraphKernelNodeGetParams(node, &p) == cudaSuccess && p.func &&
        cudaFuncGetName(&fn, p.func) == cudaSuccess && fn)
      name = fn;
    names.push_back(name);
  }
  (void)cudaGetLastError();  // a node the runtime could not name leaves its error behind
  cudaGraphDestroy(graph);
  body();
  return names;
}

size_t count_containing(const std::vector<std::string>& names, const std::string& part) {
  size_t n = 0;
  for (const std::string& s : names) n += s.find(part) != std::string::npos;
  return n;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Kernels of rms_norm_swiglu_mlp_residual at the 0.5B MLP shape: at M = 256 without a down bias
// exactly one fewer than the two fused ops — the down_proj input cast (no f32_to_bf16 kernel; the
// norm kernel, the SwiGLU -> bf16 kernel and the GEMMs); with a down bias, and on the GEMV path
// (M = 8: two kernels), as many as the two ops (it runs them).
TEST(FusedLinearCuda, SwigluMlpResidualDropsTheDownProjCast) {
  GYRE_SKIP_WITHOUT_GPU();
  ops::Bf16WeightCache cache;
  const float eps = 1e-6f;
  const int64_t K = 896, I = 4864, N = 896;
  Tensor none;
  Tensor gnw = gpu(randn({K}, 1400)), gwg = gpu(randn({I, K}, 1401, 0.05f));
  Tensor gwu = gpu(randn({I, K}, 1402, 0.05f)), gwd = gpu(randn({N, I}, 1403, 0.05f));
  Tensor gbd = gpu(randn({N}, 1404));
  for (int64_t M : {8, 256}) {
    for (bool down_bias : {false, true}) {
      SCOPED_TRACE("M " + std::to_string(M) + (down_bias ? " down bias" : ""));
      const Tensor& pbd = down_bias ? gbd : none;
      Tensor gx = gpu(randn({M, K}, 1410 + M, 3.0f)), gr = gpu(randn({M, N}, 1411 + M));
      Decode d(&cache);
      Tensor act = Tensor::empty({M, I}, DType::f32, Device::cuda);
      Tensor want = Tensor::empty({M, N}, DType::f32, Device::cuda);
      Tensor out = Tensor::empty({M, N}, DType::f32, Device::cuda);
      auto two_ops = [&] {
        ops::rms_norm_linear_silu_mul(gx, gnw, eps, gwg, none, gwu, none, act);
        ops::linear_add_residual(act, gwd, pbd, gr, want);
      };
      auto fused = [&] {
        ops::rms_norm_swiglu_mlp_residual(gx, gnw, eps, gwg, none, gwu, none, gwd, pbd, gr, out);
      };
      const std::vector<std::string> n_two = kernel_names_warm(two_ops);
      const std::vector<std::string> n_fused = kernel_names_warm(fused);
      expect_bitwise(out, want, "after the counts");
      if (M <= 8) {
        EXPECT_EQ(n_fused.size(), 2u) << joined(n_fused);
        EXPECT_EQ(n_two.size(), 2u) << joined(n_two);
        continue;
      }
      if (down_bias) {
        EXPECT_EQ(n_fused.size(), n_two.size()) << joined(n_fused) << " | " << joined(n_two);
        continue;
      }
      EXPECT_EQ(n_two.size() - n_fused.size(), 1u) << joined(n_fused) << " | " << joined(n_two);
      EXPECT_EQ(count_containing(n_two, "f32_to_bf16_kernel"), 1u) << joined(n_two);
      EXPECT_EQ(count_containing(n_fused, "f32_to_bf16_kernel"), 0u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "silu_mul_bf16_kernel"), 1u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "silu_mul_fwd_kernel"), 0u) << joined(n_fused);
      EXPECT_EQ(count_containing(n_fused, "rms_bf16_kernel"), 1u) << joined(n_fused);
    }
  }
}

}  // namespace
}  // namespace gyre
