// Row primitives the softmax-style CPU kernels are built from, written so that GCC vectorises them
// without -ffast-math: reductions keep kLanes independent partial results (no reassociation of a
// single sum, so they vectorise legally) combined in a fixed order, and exp for f32 is a
// branch-free polynomial instead of a libm call. gyre_backend compiles with -fno-trapping-math so
// that the compares (clamps, max) can be if-converted inside vectorised loops.
//
// Invariants: results depend only on the row contents (never on threads); sums accumulate in
// double; exp_f32 is within ~2 ulp of expf for x <= 88 and returns 0 below -87.3 (the f32 normal
// range ends there; softmax weights that small do not change an f32 sum).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace gyre::cpu::vec {

constexpr int kLanes = 8;

// Cephes expf (facts: range reduction x = n ln2 + r with ln2 split in two constants, degree-5
// minimax polynomial for e^r on |r| <= ln2/2, then scaling by 2^n through the exponent bits).
inline float exp_f32(float x) {
  float xc = std::min(std::max(x, -87.3f), 88.0f);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float y = p * scale;
  y = x < -87.3f ? 0.0f : y;
  return x != x ? x : y;  // NaN stays NaN
}

template <typename T>
inline T exp(T x) {
  if constexpr (sizeof(T) == 4) {
    return exp_f32(x);
  } else {
    return std::exp(x);
  }
}

// max_j x[j] (-inf for n = 0; NaN entries are ignored here and propagate through the sums).
template <typename T>
T row_max(const T* x, int64_t n) {
  T lane[kLanes];
  std::fill(lane, lane + kLanes, -std::numeric_limits<T>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = lane[l] < x[j + l] ? x[j + l] : lane[l];
  T m = lane[0];
  for (int l = 1; l < kLanes; ++l) m = m < lane[l] ? lane[l] : m;
  for (; j < n; ++j) m = m < x[j] ? x[j] : m;
  return m;
}

// Σ_j e_j with e_j = exp(x[j] * mul - shift); writes e to `out` when non-null (out may alias x).
// Optionally also Σ_j e_j (x[j] * mul - shift) into *weighted (entropy; a term with e_j = 0 adds 0,
// the limit of p log p, also where x[j] = -inf and the product would be 0 · -inf). Works in chunks:
// one branch-free loop computes the exponentials (vectorised), then lane-wise double sums.
template <typename T>
double exp_sum(const T* x, int64_t n, T mul, T shift, T* out, double* weighted) {
  constexpr int64_t kChunk = 256;
  T e[kChunk], d[kChunk];
  double s[kLanes] = {}, w[kLanes] = {};
  double tail_s = 0, tail_w = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t m = std::min(kChunk, n - j0);
    for (int64_t j = 0; j < m; ++j) {
      d[j] = x[j0 + j] * mul - shift;
      e[j] = exp<T>(d[j]);
    }
    const int64_t full = m - m % kLanes;
    for (int64_t j = 0; j < full; j += kLanes)
      for (int l = 0; l < kLanes; ++l) s[l] += double(e[j + l]);
    if (weighted)
      for (int64_t j = 0; j < full; j += kLanes)
        for (int l = 0; l < kLanes; ++l)
          w[l] += e[j + l] > T(0) ? double(e[j + l]) * double(d[j + l]) : 0.0;
    for (int64_t j = full; j < m; ++j) {
      tail_s += double(e[j]);
      tail_w += e[j] > T(0) ? double(e[j]) * double(d[j]) : 0.0;
    }
    if (out) std::copy(e, e + m, out + j0);
  }
  double st = 0, wt = 0;
  for (int l = 0; l < kLanes; ++l) st += s[l];
  for (int l = 0; l < kLanes; ++l) wt += w[l];
  if (weighted) *weighted = wt + tail_w;
  return st + tail_s;
}

// Σ_j a[j] b[j] in double.
template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double s[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += double(a[j + l]) * double(b[j + l]);
  double t = 0;
  for (int l = 0; l < kLanes; ++l) t += s[l];
  for (; j < n; ++j) t += double(a[j]) * double(b[j]);
  return t;
}

}  // namespace gyre::cpu::vec
