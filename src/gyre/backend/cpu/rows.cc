// Row-indexed CPU kernels: embedding lookup and its scatter-add backward, MoE gather / weighted
// scatter-add of token rows, and row-wise dot products.
//
// Invariants: indices were range-checked by ops.cc. Scatter-adds may hit the same destination row
// many times, so they are parallelised over column blocks (each task walks all source rows in
// order): race-free and bitwise independent of the thread count.
#include <algorithm>
#include <cstring>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"

namespace gyre::cpu {

namespace {
constexpr int64_t kColBlock = 256;

int64_t row_grain(int64_t H) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(H, 1)); }

// out[idx[i], c] += s_i * src[i, c], tasks over column blocks.
template <typename T>
void scatter_columns(const T* src, int64_t H, const int32_t* idx, const T* scale, int64_t n,
                     T* out) {
  parallel_for((H + kColBlock - 1) / kColBlock, 1, [&](int64_t b, int64_t e) {
    int64_t c0 = b * kColBlock, c1 = std::min(H, e * kColBlock);
    for (int64_t i = 0; i < n; ++i) {
      const T* s = src + i * H;
      T* o = out + int64_t(idx[i]) * H;
      if (scale) {
        T a = scale[i];
        for (int64_t c = c0; c < c1; ++c) o[c] += a * s[c];
      } else {
        for (int64_t c = c0; c < c1; ++c) o[c] += s[c];
      }
    }
  });
}
}  // namespace

template <typename T>
void embedding_fwd(const int32_t* ids, int64_t n, const T* table, int64_t H, T* out) {
  parallel_for(n, row_grain(H), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(out + i * H, table + int64_t(ids[i]) * H, size_t(H) * sizeof(T));
  });
}

template <typename T>
void embedding_bwd(const int32_t* ids, int64_t n, const T* dout, int64_t H, T* dtable) {
  scatter_columns<T>(dout, H, ids, nullptr, n, dtable);
}

template <typename T>
void gather_rows(const T* src, int64_t H, const int32_t* idx, int64_t n, T* out) {
  embedding_fwd<T>(idx, n, src, H, out);
}

template <typename T>
void scatter_add_rows(const T* src, int64_t H, const int32_t* idx, const T* scale, int64_t n,
                      T* out) {
  scatter_columns<T>(src, H, idx, scale, n, out);
}

template <typename T>
void row_dot(const T* a, const T* b, int64_t n, int64_t H, T* out) {
  parallel_for(n, row_grain(H), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* x = a + i * H;
      const T* y = b + i * H;
      double s = 0;
      for (int64_t c = 0; c < H; ++c) s += double(x[c]) * double(y[c]);
      out[i] = T(s);
    }
  });
}

#define GYRE_INSTANTIATE(T)                                                                    \
  template void embedding_fwd<T>(const int32_t*, int64_t, const T*, int64_t, T*);              \
  template void embedding_bwd<T>(const int32_t*, int64_t, const T*, int64_t, T*);              \
  template void gather_rows<T>(const T*, int64_t, const int32_t*, int64_t, T*);                \
  template void scatter_add_rows<T>(const T*, int64_t, const int32_t*, const T*, int64_t, T*); \
  template void row_dot<T>(const T*, const T*, int64_t, int64_t, T*);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
