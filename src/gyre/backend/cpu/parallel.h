// Threading and BLAS plumbing shared by the CPU kernels.
//
// Invariants: every kernel runs its parallel loops on cpu::pool() (the global pool unless a test
// installs another one for this thread with ScopedThreadPool), and splits work so that each output
// element is produced by exactly one task in an order that does not depend on the number of
// threads — results are bitwise identical for any pool size. GEMMs issued from inside our own
// parallel regions run OpenBLAS single-threaded (SerialBlas), so the two thread pools never
// oversubscribe the cores.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>

#include "gyre/core/thread_pool.h"

namespace gyre::cpu {

// The pool the kernels use on the calling thread.
ThreadPool& pool();

// Makes `p` the pool of the kernels called from this thread until destroyed (tests use it to
// compare single- and multi-threaded results).
class ScopedThreadPool {
 public:
  explicit ScopedThreadPool(ThreadPool& p);
  ~ScopedThreadPool();
  ScopedThreadPool(const ScopedThreadPool&) = delete;
  ScopedThreadPool& operator=(const ScopedThreadPool&) = delete;

 private:
  ThreadPool* prev_;
};

// Splits [0, n) into contiguous chunks (at least `grain` each) on pool().
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(worker) once on each of min(pool().size(), max_workers) workers; used with WorkQueue for
// dynamic scheduling of uneven items (attention blocks of sequences of different lengths) with one
// scratch buffer per worker.
void parallel_workers(int64_t max_workers, const std::function<void(int64_t worker)>& fn);

// Hands out 0..n-1 once each, to whichever worker asks first.
class WorkQueue {
 public:
  explicit WorkQueue(int64_t n) : n_(n) {}
  bool pop(int64_t* item) {
    int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_) return false;
    *item = i;
    return true;
  }

 private:
  int64_t n_;
  std::atomic<int64_t> next_{0};
};

// While alive, OpenBLAS runs each call on the calling thread only (restores the previous thread
// count after). OpenBLAS' pthread build serialises concurrent threaded GEMMs behind one lock, so
// GEMMs issued from our workers must not be threaded themselves.
class SerialBlas {
 public:
  SerialBlas();
  ~SerialBlas();
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  int prev_;
};

// Row-major C[M,N] = alpha op(A) op(B) + beta C through cblas_sgemm / cblas_dgemm. Handles the
// degenerate sizes BLAS implementations disagree on (K = 0: C = beta C, with beta = 0 writing
// zeros even over NaN).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The same product split into row panels of C (along M, or along N when N is larger) computed
// concurrently on pool(), each by a single-threaded BLAS call. Every backend GEMM goes through
// here, so OpenBLAS' own threads never compete with ours; each C element is still one BLAS dot
// product over K, so the result does not depend on the number of threads.
template <typename T>
void gemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace gyre::cpu
