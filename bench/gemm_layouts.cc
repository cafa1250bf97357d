// bench_gemm_layouts: what the training step's GEMM shapes and operand layouts cost in cuBLASLt,
// and how much of that any of cuBLASLt's candidates (not only the ones with the heuristic's bits)
// would recover. One JSON line per problem.
//
// Why: the 1.5B training step's backward GEMMs run at ~610-660 TFLOP/s against ~700-750 for the
// forward's (CUPTI, session 26 call 9: down_proj's dX 686 us against gate's forward 602 us, the
// same M, N, K; every dW GEMM ~607-618). The backward reads one or both operands MN-major (the
// weight for dX, both activations for dW) and its dW GEMMs have a long K (the tokens) and a small
// M x N. This separates the two causes: each problem is timed as the step runs it and with both
// operands K-major (what a transposed copy would give), at its shape and merged with its sibling
// (gate | up as one problem).
//
// Per problem: the heuristic's first choice (what an untuned plan runs), the fastest candidate
// with its bits (what gyre's autotuning can pick, gemm_tune.h) and the fastest of all candidates
// (other bits: split-K, other reductions), each the median of cold single calls (L2 flushed),
// in us and TFLOP/s. Problems use cuBLAS's column-major names: op(A) is m x k, op(B) k x n;
// "T" on A / "N" on B is the K-major operand, the layout a row-major forward linear hands over.
// Argument `all` prints every candidate too; `sustained` also times each candidate back to back
// after ~0.3 s of the same launches (first_ / best_sustained_us: the rate once the GPU sits at its
// power limit; inside the 1.5B training step the same GEMMs run 11-27% slower than cold alone).
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"gemm_layouts\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

using namespace gyre;

namespace {

constexpr size_t kWorkspace = 32u << 20;
constexpr int kCandidates = 32;

struct Problem {
  const char* name;
  bool ta, tb;  // cuBLAS transposes: true on A / false on B is K-major
  int64_t m, n, k;
  bool f32_out;
};

// Random bf16 device buffer of n values (a 16 Mi-value host block tiled on the device).
Tensor random_bf16(int64_t n, uint64_t seed) {
  const int64_t block = std::min<int64_t>(n, int64_t(1) << 24);
  Tensor host = Tensor::empty({block}, DType::f32);
  PhiloxStream r(seed);
  for (int64_t i = 0; i < block; ++i) host.f32()[i] = r.next_uniform() * 2.0f - 1.0f;
  Tensor src = host.to(DType::bf16).to(Device::cuda);
  Tensor out = Tensor::empty({n}, DType::bf16, Device::cuda);
  for (int64_t i = 0; i < n; i += block)
    GYRE_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint16_t*>(out.raw()) + i, src.raw(),
                                    size_t(std::min(block, n - i)) * 2, cudaMemcpyDeviceToDevice,
                                    cuda::stream()));
  cuda::sync();
  return out;
}

int config(const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoConfigAttributes_t attr) {
  int32_t v = -1;
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, attr, &v, sizeof(v), &written);
  return v;
}

void run_problem(cublasLtHandle_t lt, void* ws, const Problem& p, bool all, bool sustained) {
  const cudaDataType_t out_t = p.f32_out ? CUDA_R_32F : CUDA_R_16BF;
  // Column-major storage: A is m x k (lda m) or, transposed, k x m (lda k); B likewise.
  const int64_t lda = p.ta ? p.k : p.m, ldb = p.tb ? p.n : p.k;
  Tensor a = random_bf16(p.m * p.k, 11), b = random_bf16(p.k * p.n, 12);
  const size_t out_bytes = size_t(p.m * p.n) * (p.f32_out ? 4 : 2);
  Tensor d = Tensor::empty({int64_t(out_bytes)}, DType::u8, Device::cuda);

  cublasLtMatmulDesc_t desc;
  GYRE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t oa = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  GYRE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof(oa)));
  GYRE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof(ob)));
  cublasLtMatrixLayout_t la, lb, ld;
  GYRE_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, p.ta ? p.k : p.m, p.ta ? p.m : p.k, lda));
  GYRE_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, p.tb ? p.n : p.k, p.tb ? p.k : p.n, ldb));
  GYRE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, out_t, p.m, p.n, p.m));
  cublasLtMatmulPreference_t pref;
  GYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t wsb = kWorkspace;
  GYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
  cublasLtMatmulHeuristicResult_t res[kCandidates];
  int found = 0;
  GYRE_CUBLAS_CHECK(
      cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, kCandidates, res, &found));

  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](int i) {
    return cublasLtMatmul(lt, desc, &alpha, a.raw(), la, b.raw(), lb, &beta, d.raw(), ld, d.raw(),
                          ld, &res[i].algo, ws, kWorkspace,
                          cuda::stream()) == CUBLAS_STATUS_SUCCESS;
  };
  std::vector<char> ref(out_bytes), got(out_bytes);
  const double flop = 2.0 * double(p.m) * double(p.n) * double(p.k);
  double first = 0, best_same = 1e30, best_any = 1e30, first_hot = 0, best_hot = 1e30;
  int best_any_i = -1, same_count = 0;
  std::string list;
  for (int i = 0; i < found; ++i) {
    if (!launch(i)) continue;
    cuda::sync();
    GYRE_CUDA_CHECK(
        cudaMemcpy((i == 0 ? ref : got).data(), d.raw(), out_bytes, cudaMemcpyDeviceToHost));
    const bool same = i == 0 || std::memcmp(ref.data(), got.data(), out_bytes) == 0;
    const double us = bench::time_call([&] { launch(i); }, 7).cold_us;
    // Sustained: 60 back-to-back launches after ~0.3 s of the same (the clock a step's GEMMs see
    // once the GPU sits at its power limit), us per launch.
    double hot_us = 0;
    if (sustained) {
      bench::EventPair ev;
      ev.start();
      for (int heat = 0; heat < 2000; heat += 20) {
        for (int r = 0; r < 20; ++r) launch(i);
        if (ev.stop_ms() > 300) break;
      }
      ev.start();
      for (int r = 0; r < 60; ++r) launch(i);
      hot_us = ev.stop_ms() * 1e3 / 60;
      best_hot = std::min(best_hot, hot_us);
      if (i == 0) first_hot = hot_us;
    }
    same_count += same;
    if (i == 0) first = us;
    if (same && us < best_same) best_same = us;
    if (us < best_any) best_any = us, best_any_i = i;
    if (all) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "%s{\"i\":%d,\"us\":%.1f,\"sustained_us\":%.1f,\"same_bits\":%s,\"tile\":%d,"
                    "\"stages\":%d,\"split_k\":%d,\"cluster\":%d}",
                    list.empty() ? "" : ",", i, us, hot_us, same ? "true" : "false",
                    config(res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    config(res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                    config(res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                    config(res[i].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
      list += buf;
    }
  }
  auto tf = [&](double us) { return flop / (us * 1e-6) / 1e12; };
  char buf[640];
  std::snprintf(
      buf, sizeof buf,
      "{\"bench\":\"gemm_layouts\",\"problem\":\"%s\",\"op\":\"%c%c\",\"m\":%lld,"
      "\"n\":%lld,\"k\":%lld,\"out\":\"%s\",\"candidates\":%d,\"same_bits\":%d,"
      "\"first_us\":%.1f,\"first_tflops\":%.0f,\"best_same_us\":%.1f,"
      "\"best_same_tflops\":%.0f,\"best_any_us\":%.1f,\"best_any_tflops\":%.0f,"
      "\"best_any_split_k\":%d,\"first_sustained_us\":%.1f,\"best_sustained_us\":%.1f",
      p.name, p.ta ? 'T' : 'N', p.tb ? 'T' : 'N', (long long)p.m, (long long)p.n, (long long)p.k,
      p.f32_out ? "f32" : "bf16", found, same_count, first, tf(first), best_same, tf(best_same),
      best_any, tf(best_any),
      best_any_i >= 0 ? config(res[best_any_i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) : -1,
      first_hot, sustained ? best_hot : 0.0);
  std::printf("%s%s%s}\n", buf, all ? ",\"all\":[" : "", all ? (list + "]").c_str() : "");
  std::fflush(stdout);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(desc);
}

}  // namespace

int main(int argc, char** argv) {
  bool all = false, sustained = false;
  for (int i = 1; i < argc; ++i) {
    all = all || std::strcmp(argv[i], "all") == 0;
    sustained = sustained || std::strcmp(argv[i], "sustained") == 0;
  }
  try {
    cuda::stream();
    cublasLtHandle_t lt;
    GYRE_CUBLAS_CHECK(cublasLtCreate(&lt));
    void* ws = nullptr;
    GYRE_CUDA_CHECK(cudaMalloc(&ws, kWorkspace));
    // Qwen2.5-1.5B, 4 x 4096 tokens: T tokens, H hidden, I intermediate, C a head chunk (V / 16).
    const int64_t T = 4 * 4096, H = 1536, I = 8960, C = 9496;
    const Problem problems[] = {
        {"square_8192", true, false, 8192, 8192, 8192, false},
        // Forward linears (row-major y = x w^T): both operands K-major.
        {"fwd_gate", true, false, I, T, H, false},
        {"fwd_head_chunk", true, false, C, T, H, true},
        // dX = dy w: the weight MN-major as stored; "_wt" with a transposed weight copy.
        {"dx_down", false, false, I, T, H, false},
        {"dx_down_wt", true, false, I, T, H, false},
        {"dx_gate", false, false, H, T, I, true},
        {"dx_gate_wt", true, false, H, T, I, true},
        {"dx_gate_up", false, false, H, T, 2 * I, true},
        {"dx_o", false, false, H, T, H, false},
        {"dx_head_chunk", false, false, H, T, C, true},
        // dW = dy^T x: both activations MN-major as stored; "_kmajor" if both were transposed.
        {"dw_gate", false, true, H, I, T, true},
        {"dw_gate_kmajor", true, false, H, I, T, true},
        {"dw_gate_up", false, true, H, 2 * I, T, true},
        {"dw_down", false, true, I, H, T, true},
        {"dw_down_kmajor", true, false, I, H, T, true},
        {"dw_o", false, true, H, H, T, true},
        {"dw_head_chunk", false, true, H, C, T, true},
    };
    for (const Problem& p : problems) run_problem(lt, ws, p, all, sustained);
    cudaFree(ws);
    cublasLtDestroy(lt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemm_layouts: %s\n", e.what());
    return 1;
  }
  return 0;
}
#endif
