// GEMMs through cuBLASLt: row-major f32 (f32 compute, no TF32, so results match the OpenBLAS
// reference to ~1e-6) and bf16-input / f32-accumulate products, plus Linear forward/backward.
//
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so every call hands cuBLASLt the
// operands swapped (B first) with m = N, n = M. One Lt handle, one 32 MiB workspace and one
// heuristic cache per host thread (each thread has its own stream). Unless GYRE_GEMM_AUTOTUNE=0,
// large problems are timed once among the heuristic's top candidates that give its first choice's
// exact bits (gemm_tune.h).
#include <cublasLt.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/gemm_tune.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

constexpr size_t kWorkspace = 32u << 20;

// Everything that identifies one GEMM problem (the heuristic's choice and the descriptors depend on
// all of it): transposes, sizes, leading dims, types, whether beta != 0, whether a bias epilogue.
using AlgoKey = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                           bool, bool>;

// RAII holders for the Lt descriptors.
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld) {
    GYRE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, uint64_t(rows), uint64_t(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(l); }
};
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  MatmulDesc(bool ta, bool tb) {
    GYRE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    GYRE_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &a, sizeof(a)));
    GYRE_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &b, sizeof(b)));
  }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(d); }
};

// One GEMM problem's descriptors and chosen algorithm, built once per thread and reused: creating
// and destroying four Lt descriptors per call costs host time that a decode step (hundreds of small
// GEMMs) cannot afford. `found` is false when cuBLASLt offers no algorithm (the caller falls back).
struct Plan {
  MatmulDesc desc;
  Layout lx, ly, ld;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  int after_sum = -1;  // epilogue_after_full_sum(algo), read on first need (-1: not yet)
  // Candidates still to be timed (gemm_tune.h): the heuristic's top ones without split-K, algo
  // first; emptied once tuned. Empty: the heuristic's choice stays.
  std::vector<cublasLtMatmulAlgo_t> candidates;
  int launches = 0;
  Plan(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t ldx, int64_t ldy, int64_t ldd,
       cudaDataType_t in_type, cudaDataType_t out_type)
      : desc(ta, tb),
        lx(in_type, ta ? k : m, ta ? m : k, ldx),
        ly(in_type, tb ? n : k, tb ? k : n, ldy),
        ld(out_type, m, n, ldd) {}
};

struct LtThread {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<AlgoKey, std::unique_ptr<Plan>> plans;  // descriptors + algorithm per problem
  ~LtThread() {
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

int split_k_of(const cublasLtMatmulAlgo_t& algo) {
  int32_t splits = 1;
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                           sizeof(splits), &written) != CUBLAS_STATUS_SUCCESS)
    return -1;  // unknown: treated as split (not tuned)
  return splits;
}

LtThread& lt() {
  thread_local LtThread t;
  if (!t.handle) {
    stream();  // throws a clear error when there is no device
    GYRE_CUBLAS_CHECK(cublasLtCreate(&t.handle));
    GYRE_CUDA_CHECK(cudaMalloc(&t.workspace, kWorkspace));
  }
  return t;
}

// The plan of one GEMM problem on this thread, built (descriptors + heuristic) on first use. A bias
// plan carries cuBLASLt's BIAS epilogue; its pointer is set by the caller before every launch.
// Throws where cuBLASLt has no algorithm, except for a bias plan (then plan.found is false).
Plan& lt_plan(LtThread& t, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t ldx,
              int64_t ldy, int64_t ldd, cudaDataType_t in_type, cudaDataType_t out_type,
              bool beta_nonzero, const float* bias) {
  AlgoKey key{int(ta),      int(tb),        m, n, k, ldx, ldy, ldd, int(in_type), int(out_type),
              beta_nonzero, bias != nullptr};
  auto it = t.plans.find(key);
  if (it != t.plans.end()) return *it->second;
  auto plan = std::make_unique<Plan>(ta, tb, m, n, k, ldx, ldy, ldd, in_type, out_type);
  if (bias) {
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    GYRE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                     &epi, sizeof(epi)));
    GYRE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  // Read first: a bad GYRE_GEMM_AUTOTUNE throws before the preference below exists.
  const bool tune = gemm_autotune_enabled() && gemm_problems_tuned() < kTuneMaxProblems &&
                    2.0 * double(m) * double(n) * double(k) >= kTuneMinFlop;
  cublasLtMatmulPreference_t pref;
  GYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kWorkspace;
  GYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  if (out_type == CUDA_R_16BF) {
    // A bf16 D is the f32 accumulation rounded ONCE: split-K only with the partials kept and
    // reduced in f32 (COMPUTE_TYPE); INPLACE and OUTPUT_TYPE would round each partial to bf16
    // first. (The out type is part of the plan key, so f32-output plans are unaffected.)
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    GYRE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes)));
  }
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
  int found = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(t.handle, plan->desc.d, plan->lx.l, plan->ly.l, plan->ld.l,
                                     plan->ld.l, pref, tune ? kTuneCandidates : 1, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  const cublasLtMatmulHeuristicResult_t& res = results[0];
  // Tuning only where the first choice has no split-K (its epilogue contract, after_sum, then
  // holds for every candidate kept); split-K candidates would sum in another order anyway.
  if (tune && found > 1 && split_k_of(res.algo) == 1)
    for (int i = 0; i < found; ++i)
      if (split_k_of(results[i].algo) == 1) plan->candidates.push_back(results[i].algo);
  if (plan->candidates.size() < 2) plan->candidates.clear();
  if (!bias) GYRE_CUBLAS_CHECK(st);
  plan->found = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (!plan->found && !bias)
    GYRE_THROW(unsupported, "cuBLASLt has no algorithm for a {}x{}x{} GEMM (lda {}, ldb {})", m, n,
               k, ldx, ldy);
  plan->algo = res.algo;
  return *t.plans.emplace(key, std::move(plan)).first->second;
}

// Times the plan's candidates on this launch's operands and keeps the fastest of those that give
// the heuristic's bits (gemm_tune.h). Not while the stream is being captured into a CUDA graph
// (the trials would be recorded, and timing needs a synchronisation): a later launch tunes.
// C: the beta term's input when it is not D itself (the trials then read it and write scratch);
// null when the launch reads and writes D.
void tune_plan(LtThread& t, Plan& p, int64_t m, int64_t n, int64_t k, float alpha, const void* X,
               const void* Y, float beta, void* D, const void* C, int64_t ldd,
               cudaDataType_t out_type, cudaStream_t s) {
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return;
  TuneProblem tp;
  tp.d = D;
  const size_t esize = out_type == CUDA_R_16BF ? 2 : 4;
  tp.out_bytes = (size_t(ldd) * size_t(n - 1) + size_t(m)) * esize;  // column-major m x n, ld ldd
  tp.reads_d = beta != 0 && !C;
  tp.stream = s;
  tp.candidates = int(p.candidates.size());
  tp.run = [&](int i, void* out) {
    return cublasLtMatmul(t.handle, p.desc.d, &alpha, X, p.lx.l, Y, p.ly.l, &beta, C ? C : out,
                          p.ld.l, out, p.ld.l, &p.candidates[size_t(i)], t.workspace, kWorkspace,
                          s) == CUBLAS_STATUS_SUCCESS;
  };
  static const bool log_on = [] {
    const char* v = std::getenv("GYRE_GEMM_AUTOTUNE_LOG");
    return v && v[0] == '1';
  }();
  std::string log;
  const int chosen = pick_fastest_same_bits(tp, log_on ? &log : nullptr);
  p.algo = p.candidates[size_t(chosen)];
  if (log_on)
    std::fprintf(stderr,
                 "[gemm-tune] m %lld n %lld k %lld ld %lld out %s beta %g: chose #%d (%s)\n",
                 (long long)m, (long long)n, (long long)k, (long long)ldd,
                 out_type == CUDA_R_16BF ? "bf16" : "f32", double(beta), chosen, log.c_str());
  p.candidates.clear();
}

// Counts this launch toward the plan's tuning and tunes the plan on it when it is due
// (kTuneAtLaunch, within the process's budget of tuned problems; over the budget the plan keeps
// the heuristic's algorithm). Arguments as tune_plan's.
void tune_plan_when_due(LtThread& t, Plan& p, int64_t m, int64_t n, int64_t k, float alpha,
                        const void* X, const void* Y, float beta, void* D, const void* C,
                        int64_t ldd, cudaDataType_t out_type, cudaStream_t s) {
  if (p.candidates.empty() || ++p.launches < kTuneAtLaunch) return;
  if (gemm_problems_tuned() < kTuneMaxProblems)  // the process budget, checked again here
    tune_plan(t, p, m, n, k, alpha, X, Y, beta, D, C, ldd, out_type, s);
  else
    p.candidates.clear();
}

// Column-major D[m,n] = alpha opA(X) opB(Y) + beta D (+ bias[i] on row i when bias is non-null:
// cuBLASLt's BIAS epilogue, added in f32 after the accumulation exactly like beta = 1 over a
// bias-seeded D), X stored (ta ? [k,m] : [m,k]) with ldx. Returns false only for a bias call that
// cuBLASLt has no algorithm for (the caller then seeds D with the bias instead).
bool lt_matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* X,
               int64_t ldx, const void* Y, int64_t ldy, float beta, void* D, int64_t ldd,
               cudaDataType_t in_type, cudaDataType_t out_type, const float* bias = nullptr) {
  if (m == 0 || n == 0) return true;
  LtThread& t = lt();
  cudaStream_t s = stream();
  Plan& p = lt_plan(t, ta, tb, m, n, k, ldx, ldy, ldd, in_type, out_type, beta != 0, bias);
  if (!p.found) return false;
  if (bias)  // the pointer changes from call to call; the rest of the plan does not
    GYRE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &bias, sizeof(bias)));
  tune_plan_when_due(t, p, m, n, k, alpha, X, Y, beta, D, nullptr, ldd, out_type, s);
  GYRE_CUBLAS_CHECK(cublasLtMatmul(t.handle, p.desc.d, &alpha, X, p.lx.l, Y, p.ly.l, &beta, D,
                                   p.ld.l, D, p.ld.l, &p.algo, t.workspace, kWorkspace, s));
  return true;
}

// Whether `algo` applies its epilogue (alpha acc + beta C) to the finished accumulation: no
// split-K, or split-K whose partials are reduced in a separate step (the reduction's order does not
// depend on beta). The in-place scheme adds the partials into D one after another, so a beta = 1 C
// would enter the sum before them — a different rounding from GEMM-then-add; it (and anything this
// cannot read) answers false.
bool epilogue_after_full_sum(const cublasLtMatmulAlgo_t& algo) {
  int32_t splits = 1;
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                           sizeof(splits), &written) != CUBLAS_STATUS_SUCCESS)
    return false;
  if (splits <= 1) return true;
  uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                           sizeof(scheme), &written) != CUBLAS_STATUS_SUCCESS)
    return false;
  return scheme == CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE ||
         scheme == CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
}

}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C (cuBLASLt rejects an empty inner dimension)
    if (beta == 0.0f) {
      GYRE_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * 4, 0, size_t(N) * 4, size_t(M), stream()));
    } else if (beta != 1.0f) {
      for (int64_t r = 0; r < M; ++r) scale(C + r * ldc, beta, N);
    }
    return;
  }
  lt_matmul(trans_b, trans_a, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc, CUDA_R_32F, CUDA_R_32F);
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, void* C,
               int64_t ldc, bool c_is_bf16) {
  if (M == 0 || N == 0) return;
  GYRE_CHECK(K > 0, "gemm_bf16 with an empty inner dimension");
  lt_matmul(trans_b, trans_a, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc, CUDA_R_16BF,
            c_is_bf16 ? CUDA_R_16BF : CUDA_R_32F);
}

namespace {
// y = x w^T (+ b): column-major y^T[N,M] = w[N,K] x^T, bias on the N rows of y^T.
void linear_gemm(const void* x, const void* w, const float* b, int64_t M, int64_t N, int64_t K,
                 float* y, cudaDataType_t in_type) {
  if (b && lt_matmul(true, false, N, M, K, 1.0f, w, K, x, K, 0.0f, y, N, in_type, CUDA_R_32F, b))
    return;
  if (b) broadcast_rows(b, M, N, y);  // no epilogue algorithm: seed y with b (torch addmm)
  lt_matmul(true, false, N, M, K, 1.0f, w, K, x, K, b ? 1.0f : 0.0f, y, N, in_type, CUDA_R_32F);
}
}  // namespace

void linear_gemm_f32(const float* x, const float* w, const float* b, int64_t M, int64_t N,
                     int64_t K, float* y) {
  linear_gemm(x, w, b, M, N, K, y, CUDA_R_32F);
}

void linear_gemm_bf16(const uint16_t* x, const uint16_t* w, const float* b, int64_t M, int64_t N,
                      int64_t K, float* y) {
  linear_gemm(x, w, b, M, N, K, y, CUDA_R_16BF);
}

void linear_gemm_bf16_out(const uint16_t* x, const uint16_t* w, const float* b, int64_t M,
                          int64_t N, int64_t K, uint16_t* y) {
  if (M == 0 || N == 0) return;
  if (b) {
    // cuBLASLt's bias vector has D's data type (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
    // an f32 bias with a bf16 D is not among the documented exceptions), and rounding gyre's f32
    // bias to bf16 first would change the value. So: the f32 GEMM with the f32 bias epilogue, then
    // one round-to-nearest-even conversion — acc + b rounded once, as without a bias.
    DeviceBuffer t(size_t(M * N) * 4);
    linear_gemm_bf16(x, w, b, M, N, K, t.as<float>());
    return f32_to_bf16(t.as<float>(), y, M * N);
  }
  // bf16 D straight from the f32 accumulators (lt_plan keeps split-K partials in f32).
  lt_matmul(true, false, N, M, K, 1.0f, w, K, x, K, 0.0f, y, N, CUDA_R_16BF, CUDA_R_16BF);
}

bool linear_gemm_bf16_add(const uint16_t* x, const uint16_t* w, const float* c, int64_t M,
                          int64_t N, int64_t K, float* y) {
  if (M == 0 || N == 0) return true;
  // The heuristic chose the algorithm assuming C and D at cuBLASLt's default minimum alignment
  // (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, 256); fresh allocations have it, views may not.
  if ((reinterpret_cast<uintptr_t>(c) | reinterpret_cast<uintptr_t>(y)) % 256 != 0) return false;
  LtThread& t = lt();
  // linear_gemm_bf16(x, w, nullptr, ...)'s own plan — its descriptors and algorithm — so the
  // accumulation is the one that GEMM makes; only beta and the C pointer differ.
  Plan& p = lt_plan(t, true, false, N, M, K, K, K, N, CUDA_R_16BF, CUDA_R_32F, false, nullptr);
  if (p.after_sum < 0) p.after_sum = epilogue_after_full_sum(p.algo) ? 1 : 0;
  if (!p.after_sum) return false;
  const float alpha = 1.0f, beta = 1.0f;
  // The shared plan is tuned on these launches too, timed as they run (beta 1: every trial reads
  // C, and C comes from HBM): a model's residual GEMMs are often the only users of their shape,
  // and the heuristic's first choice for them is slow with a cold C (1.5B o_proj, session 24
  // CUPTI: ~187 us in the log-prob pass vs ~131 us on the algorithm the plain GEMM tunes to).
  // Every candidate gives the first choice's bits on the beta-0 product, has no split-K (so
  // after_sum holds for it as well), and is kept only if its beta-1 output equals the first
  // choice's bit for bit.
  tune_plan_when_due(t, p, N, M, K, alpha, w, x, beta, y, c, N, CUDA_R_32F, stream());
  GYRE_CUBLAS_CHECK(cublasLtMatmul(t.handle, p.desc.d, &alpha, w, p.lx.l, x, p.ly.l, &beta, c,
                                   p.ld.l, y, p.ld.l, &p.algo, t.workspace, kWorkspace, stream()));
  return true;
}

void linear_fwd(const float* x, const float* w, const float* b, int64_t M, int64_t N, int64_t K,
                float* y) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // no product: y = bias rows (or zeros)
    if (b) return broadcast_rows(b, M, N, y);
    return gemm_f32(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
  }
  linear_gemm_f32(x, w, b, M, N, K, y);
}

void linear_bwd(const float* dy, const float* x, const float* w, int64_t M, int64_t N, int64_t K,
                float* dx, bool accumulate_dx, float* dw, float* db) {
  if (dx) gemm_f32(false, false, M, K, N, 1.0f, dy, N, w, K, accumulate_dx ? 1.0f : 0.0f, dx, K);
  if (dw) gemm_f32(true, false, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
  if (db) column_sums_add(dy, M, N, db);
}

}  // namespace gyre::cuda
