// Fused autocast linears past the decode GEMV's rows (fused_gemm.h): one bf16 activation per
// group, the residual in the GEMM's epilogue. Each piece is a call the unfused path makes too
// (autocast.cc's linear_fwd_autocast_bf16_weight, ops::silu_mul, ops::add), in the same order on
// the same values.
//
// Scratch lifetime as in autocast.cc: buffers return to the pool when these host functions return,
// while kernels may still be queued; the pool reuses a block on the same stream only.
#include "gyre/backend/cuda/fused_gemm.h"

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"

namespace gyre::cuda {

namespace {

// x [M, K] rounded to bf16 in pool scratch: f32_to_bf16 of x itself, or of rms_norm(x) written by
// the norm kernel (which also fills the norm's requested f32 outputs).
struct Bf16Input {
  DeviceBuffer buf;
  Bf16Input(const float* x, const RmsPrologue* norm, int64_t M, int64_t K)
      : buf(size_t(M * K) * 2) {
    if (norm)
      rms_norm_fwd_bf16(x, norm->w, M, K, norm->eps, p(), norm->xn, norm->rstd);
    else
      f32_to_bf16(x, p(), M * K);
  }
  uint16_t* p() const { return buf.as<uint16_t>(); }
};

}  // namespace

void linear_group_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmMember* members,
                            int64_t count, int64_t M, int64_t K) {
  const Bf16Input xb(x, norm, M, K);
  for (int64_t i = 0; i < count; ++i) {
    const GemmMember& m = members[i];
    linear_gemm_bf16(xb.p(), m.w, m.b, M, m.n, K, m.y);
  }
}

void linear_silu_mul_gemm_bf16(const float* x, const RmsPrologue* norm, const uint16_t* wg,
                               const float* bg, const uint16_t* wu, const float* bu, int64_t M,
                               int64_t N, int64_t K, float* out) {
  const Bf16Input xb(x, norm, M, K);
  DeviceBuffer gate(size_t(M * N) * 4), up(size_t(M * N) * 4);
  linear_gemm_bf16(xb.p(), wg, bg, M, N, K, gate.as<float>());
  linear_gemm_bf16(xb.p(), wu, bu, M, N, K, up.as<float>());
  silu_mul_fwd(gate.as<float>(), up.as<float>(), out, M * N);
}

void linear_residual_gemm_bf16(const float* x, const uint16_t* w, const float* r, int64_t M,
                               int64_t N, int64_t K, float* y) {
  const Bf16Input xb(x, nullptr, M, K);
  if (linear_gemm_bf16_add(xb.p(), w, r, M, N, K, y)) return;
  // The algorithm would not add r after the whole accumulation: ops::linear_add_residual's
  // unfused order (the product into a temporary when y is the residual, which it must not clobber
  // before the add reads it).
  if (y == r) {
    DeviceBuffer t(size_t(M * N) * 4);
    linear_gemm_bf16(xb.p(), w, nullptr, M, N, K, t.as<float>());
    return add(t.as<float>(), r, y, M * N);
  }
  linear_gemm_bf16(xb.p(), w, nullptr, M, N, K, y);
  add(y, r, y, M * N);
}

}  // namespace gyre::cuda
