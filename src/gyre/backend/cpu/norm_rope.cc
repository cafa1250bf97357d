// RMSNorm (HF LlamaRMSNorm) forward/backward and rotary position embedding (HF rotate_half
// convention) CPU kernels.
//
// Invariants: one task per row for row outputs (rstd, y, dx); the weight gradient is a column
// reduction over rows in row order (double accumulators), so results do not depend on the thread
// count. RoPE rotates each (token, head) pair of halves in place.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cpu/vec.h"

namespace gyre::cpu {

namespace {
constexpr int64_t kColBlock = 256;
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(H, 1)); }
}  // namespace

template <typename T>
void rms_norm_fwd(const T* x, const T* w, int64_t R, int64_t H, double eps, T* y, T* rstd) {
  parallel_for(R, row_grain(H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * H;
      const double ss = vec::dot(xr, xr, H);
      T rs = T(1.0 / std::sqrt(ss / double(H) + eps));
      rstd[r] = rs;
      T* yr = y + r * H;
      // HF: weight * (x * rsqrt(var + eps)) — the normalised value is rounded before the weight.
      for (int64_t c = 0; c < H; ++c) yr[c] = w[c] * (xr[c] * rs);
    }
  });
}

template <typename T>
void rms_norm_bwd(const T* dy, const T* x, const T* w, const T* rstd, int64_t R, int64_t H, T* dx,
                  T* dw) {
  if (dx) {
    // y_c = w_c x_c r, r = (mean(x²) + eps)^-1/2, so with g = dy ∘ w and x̂ = x r:
    // dx_c = r (g_c - x̂_c · mean_j(g_j x̂_j)).
    parallel_for(R, row_grain(H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * H;
        const T* dyr = dy + r * H;
        T rs = rstd[r];
        double lane[vec::kLanes] = {}, dot = 0;
        int64_t c = 0;
        for (; c + vec::kLanes <= H; c += vec::kLanes)
          for (int l = 0; l < vec::kLanes; ++l)
            lane[l] += double(dyr[c + l] * w[c + l]) * double(xr[c + l] * rs);
        for (; c < H; ++c) dot += double(dyr[c] * w[c]) * double(xr[c] * rs);
        for (int l = 0; l < vec::kLanes; ++l) dot += lane[l];
        T mean = T(dot / double(H));
        T* dxr = dx + r * H;
        for (int64_t c = 0; c < H; ++c) dxr[c] = rs * (dyr[c] * w[c] - (xr[c] * rs) * mean);
      }
    });
  }
  if (dw) {
    parallel_for((H + kColBlock - 1) / kColBlock, 1, [&](int64_t b, int64_t e) {
      double acc[kColBlock];
      for (int64_t blk = b; blk < e; ++blk) {
        int64_t c0 = blk * kColBlock, c1 = std::min(H, c0 + kColBlock);
        std::fill(acc, acc + (c1 - c0), 0.0);
        for (int64_t r = 0; r < R; ++r) {
          const T* xr = x + r * H;
          const T* dyr = dy + r * H;
          T rs = rstd[r];
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(dyr[c]) * double(xr[c] * rs);
        }
        for (int64_t c = c0; c < c1; ++c) dw[c] = T(double(dw[c]) + acc[c - c0]);
      }
    });
  }
}

template <typename T>
void rope(T* x, int64_t tokens, int64_t H, int64_t D, const int32_t* positions, const T* cos,
          const T* sin, bool inverse) {
  const int64_t half = D / 2;
  parallel_for(tokens, std::max<int64_t>(1, 4096 / std::max<int64_t>(H * D, 1)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const T* c = cos + int64_t(positions[t]) * half;
                   const T* s = sin + int64_t(positions[t]) * half;
                   for (int64_t h = 0; h < H; ++h) {
                     T* a = x + (t * H + h) * D;
                     T* b = a + half;
                     for (int64_t i = 0; i < half; ++i) {
                       T si = inverse ? -s[i] : s[i];
                       T ai = a[i], bi = b[i];
                       // HF: x cos + rotate_half(x) sin, rotate_half(x) = cat(-x2, x1).
                       a[i] = ai * c[i] - bi * si;
                       b[i] = bi * c[i] + ai * si;
                     }
                   }
                 }
               });
}

#define GYRE_INSTANTIATE(T)                                                                        \
  template void rms_norm_fwd<T>(const T*, const T*, int64_t, int64_t, double, T*, T*);             \
  template void rms_norm_bwd<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, T*, T*); \
  template void rope<T>(T*, int64_t, int64_t, int64_t, const int32_t*, const T*, const T*, bool);
GYRE_INSTANTIATE(float)
GYRE_INSTANTIATE(double)
#undef GYRE_INSTANTIATE

}  // namespace gyre::cpu
