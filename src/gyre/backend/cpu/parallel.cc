// Thread-pool selection, dynamic work distribution and the BLAS entry points of the CPU backend.
#include "gyre/backend/cpu/parallel.h"

#include <cblas.h>

#include <algorithm>

namespace gyre::cpu {

namespace {
thread_local ThreadPool* t_pool = nullptr;
}

ThreadPool& pool() { return t_pool ? *t_pool : global_thread_pool(); }

ScopedThreadPool::ScopedThreadPool(ThreadPool& p) : prev_(t_pool) { t_pool = &p; }
ScopedThreadPool::~ScopedThreadPool() { t_pool = prev_; }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  pool().parallel_for(n, grain, fn);
}

void parallel_workers(int64_t max_workers, const std::function<void(int64_t)>& fn) {
  int64_t n = std::min<int64_t>(max_workers, pool().size());
  if (n <= 0) return;
  pool().parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) fn(w);
  });
}

SerialBlas::SerialBlas() : prev_(openblas_get_num_threads()) {
  if (prev_ > 1) openblas_set_num_threads(1);
}
SerialBlas::~SerialBlas() {
  if (prev_ > 1) openblas_set_num_threads(prev_);
}

namespace {
template <typename T>
void scale_matrix(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c, c + N, T(0));
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_matrix(M, N, beta, C, ldc);
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C,
              blasint(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_matrix(M, N, beta, C, ldc);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C,
              blasint(ldc));
}

template <typename T>
void gemm_parallel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  SerialBlas serial;
  // Panels of whole 16-row/column blocks keep the BLAS micro-kernels on their fast path; below
  // ~2 MFLOP per panel the split is not worth a task.
  constexpr int64_t kAlign = 16;
  const bool split_m = M >= N;
  const int64_t dim = split_m ? M : N;
  const int64_t blocks = (dim + kAlign - 1) / kAlign;
  const int64_t flops_per_block = 2 * kAlign * (split_m ? N : M) * std::max<int64_t>(K, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 21) / flops_per_block);
  parallel_for(blocks, grain, [&](int64_t b, int64_t e) {
    const int64_t i0 = b * kAlign, i1 = std::min(dim, e * kAlign);
    if (split_m) {
      const T* a = ta ? A + i0 : A + i0 * lda;
      gemm<T>(ta, tb, i1 - i0, N, K, alpha, a, lda, B, ldb, beta, C + i0 * ldc, ldc);
    } else {
      const T* bp = tb ? B + i0 * ldb : B + i0;
      gemm<T>(ta, tb, M, i1 - i0, K, alpha, A, lda, bp, ldb, beta, C + i0, ldc);
    }
  });
}

template void gemm_parallel<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                   int64_t, const float*, int64_t, float, float*, int64_t);
template void gemm_parallel<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                    int64_t, const double*, int64_t, double, double*, int64_t);

}  // namespace gyre::cpu
