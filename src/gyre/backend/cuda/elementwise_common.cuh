// Device code shared by the per-tensor kernels (elementwise.cu) and the multi-tensor kernels
// (multi_tensor.cu): the f64 sum of squares of one fixed slice, the block sum, and the AdamW
// element update with its scalars.
//
// Invariant: both files compute these through the same functions, so ops::adamw_step_many and
// ops::sum_squares_many are bitwise equal to the per-tensor ops (same expression order, same
// slice boundaries kSumGrain, same reduction tree). Change them here, never in one caller only.
#pragma once
#include <cmath>
#include <cstdint>

namespace gyre::cuda::ew {

constexpr int kSumThreads = 256;         // threads per block of the partial sums
constexpr int64_t kSumGrain = 16384;     // elements per partial of the sum of squares
constexpr int kSumFinishThreads = 1024;  // threads of the pass that adds the partials

// Block sum of a double, result valid in thread 0.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    v = lane < (blockDim.x >> 5) ? part[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

// Σ a[i]² over [i0, i1) by the block (f64), valid in thread 0.
__device__ __forceinline__ double block_sumsq(const float* a, int64_t i0, int64_t i1) {
  double s = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += double(a[i]) * double(a[i]);
  return block_sum(s);
}

// Σ part[0, n) by the block in a fixed order (thread t adds t, t + blockDim, ...), valid in
// thread 0.
__device__ __forceinline__ double block_sum_doubles(const double* part, int64_t n) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  return block_sum(s);
}

struct AdamScalars {
  float decay, w1, b2, w2, step_size, bc2_sqrt, eps;
  float grad_scale;  // 1: the gradient as stored (ops::AdamWParams::grad_scale)
};

// The scalars exactly as the CPU reference forms them (torch.optim.AdamW single-tensor path).
inline AdamScalars adam_scalars(double lr, double beta1, double beta2, double eps,
                                double weight_decay, int64_t step, float grad_scale = 1.0f) {
  AdamScalars c;
  c.grad_scale = grad_scale;
  c.decay = float(1.0 - lr * weight_decay);
  c.w1 = float(1.0 - beta1);
  c.b2 = float(beta2);
  c.w2 = float(1.0 - beta2);
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  c.step_size = float(lr / bc1);
  c.bc2_sqrt = float(std::sqrt(bc2));
  c.eps = float(eps);
  return c;
}

// The AdamW update of one element from its stored values; returns the new parameter and writes
// the new moments to mi / vi. g is the gradient scaled by c.grad_scale: __fmul_rn rounds the
// product on its own (never contracted into the FMAs below), so it is bitwise a scale kernel's
// stored product followed by the unscaled update.
__device__ __forceinline__ float adamw_value(float param, float grad, float& mi, float& vi,
                                             const AdamScalars& c) {
  const float g = c.grad_scale == 1.0f ? grad : __fmul_rn(grad, c.grad_scale);
  const float p = param * c.decay;
  mi = mi + c.w1 * (g - mi);
  vi = vi * c.b2 + c.w2 * g * g;
  const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
  return p - c.step_size * (mi / denom);
}

// One AdamW element update in place.
__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v,
                                              int64_t i, const AdamScalars& c) {
  float mi = m[i], vi = v[i];
  param[i] = adamw_value(param[i], grad[i], mi, vi, c);
  m[i] = mi;
  v[i] = vi;
}

}  // namespace gyre::cuda::ew
