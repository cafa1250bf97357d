// CPU MoE dispatch kernels (moe_dispatch.h). The permutation is serial (O(N + E), tiny next to the
// expert GEMMs); the row loops split tokens / positions over the pool, each output row written by
// one task in a fixed order, so results do not depend on the thread count.
#include "gyre/backend/cpu/moe_dispatch.h"

#include <algorithm>
#include <vector>

#include "gyre/backend/cpu/parallel.h"

namespace gyre::cpu {

namespace {
// Rows per task for row loops of width H (about 16k elements per task).
int64_t grain_for(int64_t H) { return H > 0 ? std::max<int64_t>(1, 16384 / H) : 1; }
}  // namespace

void moe_permute(const int32_t* indices, int64_t N, int64_t k, int64_t E, int32_t* perm,
                 int32_t* pos, int32_t* rows, int32_t* offsets) {
  // Counting sort: histogram, exclusive scan, then a scatter in slot order (stable).
  std::vector<int64_t> next(size_t(E) + 1, 0);
  for (int64_t s = 0; s < N; ++s) ++next[size_t(indices[s]) + 1];
  for (int64_t e = 0; e < E; ++e) next[size_t(e) + 1] += next[size_t(e)];
  for (int64_t e = 0; e <= E; ++e) offsets[e] = int32_t(next[size_t(e)]);
  for (int64_t s = 0; s < N; ++s) {
    const int64_t p = next[size_t(indices[s])]++;
    perm[p] = int32_t(s);
    pos[s] = int32_t(p);
    rows[p] = int32_t(s / k);
  }
}

template <typename T>
void moe_unpermute(const T* y, const int32_t* pos, const T* w, int64_t tokens, int64_t k, int64_t H,
                   T* out) {
  parallel_for(tokens, grain_for(H * k), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* o = out + t * H;
      for (int64_t c = 0; c < H; ++c) o[c] = T(0);
      for (int64_t j = 0; j < k; ++j) {
        const T* src = y + int64_t(pos[t * k + j]) * H;
        if (w) {
          const T s = w[t * k + j];
          for (int64_t c = 0; c < H; ++c) o[c] += s * src[c];
        } else {
          for (int64_t c = 0; c < H; ++c) o[c] += src[c];
        }
      }
    }
  });
}

template <typename T>
void moe_unpermute_bwd(const T* dout, const T* y, const int32_t* perm, const T* w, int64_t tokens,
                       int64_t k, int64_t H, T* dy, T* dw) {
  parallel_for(tokens * k, grain_for(H), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t s = perm[p];
      const T* d = dout + (s / k) * H;
      if (dy) {
        const T scale = w[s];
        for (int64_t c = 0; c < H; ++c) dy[p * H + c] = scale * d[c];
      }
      if (dw) {
        const T* yp = y + p * H;
        double acc = 0;
        for (int64_t c = 0; c < H; ++c) acc += double(d[c]) * double(yp[c]);
        dw[s] = T(acc);
      }
    }
  });
}

#define GYRE_INSTANTIATE(T)                                                                     \
  template void moe_unpermute<T>(const T*, const int32_t*, const T*, int64_t, int64_t, int64_t, \
                                 T*);                                                           \
  template void moe_unpermute_bwd<T>(const T*, const T*, const int32_t*, const T*, int64_t,     \
                                     int64_t, int64_t, T*, T*);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
