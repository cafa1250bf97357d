// Dense and elementwise CPU kernels: Linear forward/backward over OpenBLAS, add/scale, the f64
// sum of squares used for gradient norms, SwiGLU and the AdamW update.
//
// Invariants: GEMMs are split into panels over our pool (gemm_parallel, single-threaded BLAS);
// column reductions (bias gradient) and the sum of squares use a fixed blocking, so they do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
constexpr int64_t kElemGrain = 1 << 14;  // elements per task for memory-bound loops
constexpr int64_t kColBlock = 256;       // columns per task for column reductions

// acc[c] += Σ_r a[r, c] over rows [0, R) for c in [0, C), summed in row order in double.
template <typename T>
void column_sums_add(const T* a, int64_t R, int64_t C, T* out) {
  parallel_for((C + kColBlock - 1) / kColBlock, 1, [&](int64_t b, int64_t e) {
    double acc[kColBlock];
    for (int64_t blk = b; blk < e; ++blk) {
      int64_t c0 = blk * kColBlock, c1 = std::min(C, c0 + kColBlock);
      std::fill(acc, acc + (c1 - c0), 0.0);
      for (int64_t r = 0; r < R; ++r) {
        const T* row = a + r * C;
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(row[c]);
      }
      for (int64_t c = c0; c < c1; ++c) out[c] = T(double(out[c]) + acc[c - c0]);
    }
  });
}
}  // namespace

template <typename T>
void linear_fwd(const T* x, const T* w, const T* b, int64_t M, int64_t N, int64_t K, T* y) {
  if (b) {
    // Seed y with the bias and let the GEMM add x w^T (beta = 1), as torch's addmm does.
    parallel_for(M, std::max<int64_t>(1, kElemGrain / std::max<int64_t>(N, 1)),
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t r = r0; r < r1; ++r) std::copy(b, b + N, y + r * N);
                 });
  }
  gemm_parallel<T>(false, true, M, N, K, T(1), x, K, w, K, b ? T(1) : T(0), y, N);
}

template <typename T>
void linear_bwd(const T* dy, const T* x, const T* w, int64_t M, int64_t N, int64_t K, T* dx,
                bool accumulate_dx, T* dw, T* db) {
  if (dx)
    gemm_parallel<T>(false, false, M, K, N, T(1), dy, N, w, K, accumulate_dx ? T(1) : T(0), dx, K);
  if (dw) gemm_parallel<T>(true, false, N, K, M, T(1), dy, N, x, K, T(1), dw, K);
  if (db) column_sums_add(dy, M, N, db);
}

template <typename T>
void add(const T* a, const T* b, T* out, int64_t n) {
  parallel_for(n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

template <typename T>
void scale(T* a, T s, int64_t n) {
  parallel_for(n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) a[i] *= s;
  });
}

template <typename T>
double sum_squares(const T* a, int64_t n) {
  // Fixed blocks summed in order: the total is the same for any number of threads.
  int64_t blocks = (n + kElemGrain - 1) / kElemGrain;
  std::vector<double> part(size_t(std::max<int64_t>(blocks, 0)), 0.0);
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      int64_t i0 = blk * kElemGrain, i1 = std::min(n, i0 + kElemGrain);
      part[size_t(blk)] = vec::dot(a + i0, a + i0, i1 - i0);
    }
  });
  double total = 0;
  for (double p : part) total += p;
  return total;
}

template <typename T>
void silu_mul_fwd(const T* gate, const T* up, T* out, int64_t n) {
  parallel_for(n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T g = gate[i];
      T silu = g / (T(1) + vec::exp<T>(-g));  // HF ACT2FN["silu"] = x * sigmoid(x)
      out[i] = silu * up[i];
    }
  });
}

template <typename T>
void silu_mul_bwd(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  parallel_for(n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T g = gate[i];
      T sig = T(1) / (T(1) + vec::exp<T>(-g));
      T silu = g * sig;
      T d = dout[i];
      // d silu / dg = sig (1 + g (1 - sig))
      dgate[i] = d * up[i] * sig * (T(1) + g * (T(1) - sig));
      dup[i] = d * silu;
    }
  });
}

template <typename T>
void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weight_decay, int64_t step, T grad_scale) {
  // torch.optim.AdamW (_single_tensor_adamw): the scalars are formed in double (Python floats) and
  // applied in the tensor's type; the first moment uses lerp with weight 1-β1 (< 0.5, so torch's
  // lerp kernel evaluates m + w (g - m)).
  const T decay = T(1.0 - lr * weight_decay);
  const T w1 = T(1.0 - beta1);
  const T b2 = T(beta2), w2 = T(1.0 - beta2);
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  const T step_size = T(lr / bc1);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T eps_t = T(eps);
  auto update = [=](int64_t i, T g) {
    T p = param[i] * decay;
    T mi = m[i] + w1 * (g - m[i]);
    T vi = v[i] * b2 + w2 * g * g;
    T denom = std::sqrt(vi) / bc2_sqrt + eps_t;
    param[i] = p - step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  };
  // Scalars captured by value: loads through captured references would block vectorisation.
  if (grad_scale == T(1)) {
    parallel_for(n, kElemGrain, [=](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) update(i, grad[i]);
    });
    return;
  }
  // g = grad · grad_scale rounded on its own, as scale() then the plain update: the products go
  // through memory (a separate loop), so the compiler cannot contract them into the update's FMAs.
  parallel_for(n, kElemGrain, [=](int64_t i0, int64_t i1) {
    constexpr int64_t kBlock = 256;
    T g[kBlock];
    for (int64_t b = i0; b < i1; b += kBlock) {
      const int64_t e = std::min(i1, b + kBlock);
      for (int64_t i = b; i < e; ++i) g[i - b] = grad[i] * grad_scale;
      for (int64_t i = b; i < e; ++i) update(i, g[i - b]);
    }
  });
}

#define GYRE_INSTANTIATE(T)                                                                      \
  template void linear_fwd<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);      \
  template void linear_bwd<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, bool, \
                              T*, T*);                                                           \
  template void add<T>(const T*, const T*, T*, int64_t);                                         \
  template void scale<T>(T*, T, int64_t);                                                        \
  template double sum_squares<T>(const T*, int64_t);                                             \
  template void silu_mul_fwd<T>(const T*, const T*, T*, int64_t);                                \
  template void silu_mul_bwd<T>(const T*, const T*, const T*, T*, T*, int64_t);                  \
  template void adamw<T>(T*, const T*, T*, T*, int64_t, double, double, double, double, double,  \
                         int64_t, T);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
