// Fused autocast linears past the decode GEMV's rows (fused_gemm.h): one bf16 activation per
// group, the residual in the GEMM's epilogue. Each piece is a call the unfused path makes too
// (autocast.cc's linear_fwd_autocast_bf16_weight[_bf16_out] — and, without a weight cache,
// linear_fwd_autocast's rounding of the f32 weight — ops::silu_mul, ops::add) on the same values
// — or a kernel that computes two of them at once with their expressions
// (rms_norm_fwd_bf16: rms_norm + the cast; silu_mul_fwd_bf16: silu_mul + the cast). The SwiGLU
// ops' gate and up are bf16 (the autocast MLP's policy, docs/cuda.md): linear_gemm_bf16_out, the
// function ops::linear calls for a bf16 y.
//
// Scratch lifetime as in autocast.cc: buffers return to the pool when these host functions return
// (a weight's bf16 scratch copy right after its GEMM is enqueued), while kernels may still be
// queued; the pool reuses a block on the same stream only.
#include "gyre/backend/cuda/fused_gemm.h"

#include <optional>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"

namespace gyre::cuda {

namespace {

// bf16 [M, N] scratch, or the caller's buffer when it keeps the values.
struct Bf16Out {
  std::optional<DeviceBuffer> buf;
  uint16_t* ptr;
  Bf16Out(int64_t M, int64_t N, uint16_t* keep) : ptr(keep) {
    if (!ptr) ptr = buf.emplace(size_t(M * N) * 2).as<uint16_t>();
  }
};

// x [M, K] rounded to bf16: f32_to_bf16 of x itself, or of rms_norm(x) written by the norm kernel
// (which also fills the norm's requested f32 outputs) — into `keep` when the caller keeps the
// operand (a saving forward: the backward's dW GEMMs read it), else into pool scratch.
struct Bf16Input {
  Bf16Out out;
  Bf16Input(const float* x, const RmsPrologue* norm, int64_t M, int64_t K, uint16_t* keep = nullptr)
      : out(M, K, keep) {
    if (norm)
      rms_norm_fwd_bf16(x, norm->w, M, K, norm->eps, out.ptr, norm->xn, norm->rstd);
    else
      f32_to_bf16(x, out.ptr, M * K);
  }
  uint16_t* p() const { return out.ptr; }
};

// The bf16 operand of one GEMM over a weight of n x K values: the cached copy, or the f32 weight
// rounded into pool scratch by f32_to_bf16 (autocast.cc's Bf16Copy in linear_fwd_autocast: the
// same kernel on the same values, so the same bits), held until this goes out of scope — one
// weight's copy at a time, as ops::linear without a cache.
class WeightOperand {
 public:
  WeightOperand(const GemmWeight& w, int64_t n, int64_t K) : p_(w.bf16) {
    if (p_) return;
    buf_.emplace(size_t(n * K) * 2);
    f32_to_bf16(w.f32, buf_->as<uint16_t>(), n * K);
    p_ = buf_->as<uint16_t>();
  }
  const uint16_t* p() const { return p_; }

 private:
  std::optional<DeviceBuffer> buf_;
  const uint16_t* p_;
};

// y [M, n] = xb · w^T + b: linear_gemm_bf16 on the weight's bf16 operand.
void weight_gemm(const uint16_t* xb, const GemmWeight& w, const float* b, int64_t M, int64_t n,
                 int64_t K, float* y) {
  const WeightOperand wb(w, n, K);
  linear_gemm_bf16(xb, wb.p(), b, M, n, K, y);
}

// gate, up [M, N] bf16 = xb · wg^T + bg, xb · wu^T + bu rounded once to bf16: the autocast MLP's
// bf16 pre-activations. linear_gemm_bf16_out on the weight's bf16 operand — the call ops::linear
// makes into a bf16 y past the GEMV's rows (linear_fwd_autocast[_bf16_weight]_bf16_out), same
// operands and M, N, K, so the same cuBLASLt plan and algorithm: the same bits.
void gate_up_gemms(const uint16_t* xb, const GemmWeight& wg, const float* bg, const GemmWeight& wu,
                   const float* bu, int64_t M, int64_t N, int64_t K, uint16_t* gate, uint16_t* up) {
  {
    const WeightOperand wb(wg, N, K);
    linear_gemm_bf16_out(xb, wb.p(), bg, M, N, K, gate);
  }
  const WeightOperand wb(wu, N, K);
  linear_gemm_bf16_out(xb, wb.p(), bu, M, N, K, up);
}

// y [M, N] = xb · w^T + r over a bf16 input: the residual as the GEMM's C where that is bitwise
// the GEMM then add; otherwise ops::linear_add_residual's unfused order (the product into a
// temporary when y is the residual, which it must not clobber before the add reads it).
void residual_gemm(const uint16_t* xb, const GemmWeight& w, const float* r, int64_t M, int64_t N,
                   int64_t K, float* y) {
  const WeightOperand wb(w, N, K);
  if (linear_gemm_bf16_add(xb, wb.p(), r, M, N, K, y)) return;
  if (y == r) {
    DeviceBuffer t(size_t(M * N) * 4);
    linear_gemm_bf16(xb, wb.p(), nullptr, M, N, K, t.as<float>());
    return add(t.as<float>(), r, y, M * N);
  }
  linear_gemm_bf16(xb, wb.p(), nullptr, M, N, K, y);
  add(y, r, y, M * N);
}

}  // namespace

void linear_group_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmMember* members,
                            int64_t count, int64_t M, int64_t K, uint16_t* xb_out) {
  const Bf16Input xb(x, norm, M, K, xb_out);
  for (int64_t i = 0; i < count; ++i) {
    const GemmMember& m = members[i];
    weight_gemm(xb.p(), m.w, m.b, M, m.n, K, m.y);
  }
}

void linear_silu_mul_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmWeight& wg,
                               const float* bg, const GemmWeight& wu, const float* bu, int64_t M,
                               int64_t N, int64_t K, float* out) {
  const Bf16Input xb(x, norm, M, K);
  DeviceBuffer gate(size_t(M * N) * 2), up(size_t(M * N) * 2);
  gate_up_gemms(xb.p(), wg, bg, wu, bu, M, N, K, gate.as<uint16_t>(), up.as<uint16_t>());
  silu_mul_fwd_bf16in(gate.as<uint16_t>(), up.as<uint16_t>(), out, M * N);  // ops::silu_mul's
}

void linear_residual_gemm_bf16(const float* x, const GemmWeight& w, const float* r, int64_t M,
                               int64_t N, int64_t K, float* y) {
  const Bf16Input xb(x, nullptr, M, K);
  residual_gemm(xb.p(), w, r, M, N, K, y);
}

void linear_residual_gemm_bf16in(const uint16_t* xb, const GemmWeight& w, const float* r, int64_t M,
                                 int64_t N, int64_t K, float* y) {
  residual_gemm(xb, w, r, M, N, K, y);
}

void swiglu_mlp_residual_gemm_bf16(const float* x, const RmsPrologue* norm, const GemmWeight& wg,
                                   const float* bg, const GemmWeight& wu, const float* bu,
                                   const GemmWeight& wd, const float* r, int64_t M, int64_t K,
                                   int64_t I, int64_t N, float* y, const SwigluKeep& keep) {
  // linear_silu_mul_gemm_bf16's norm/cast and GEMMs, in its order on its values (the caller's
  // buffers receive the operands it keeps) ...
  const Bf16Input xb(x, norm, M, K, keep.xb);
  const Bf16Out gate(M, I, keep.gate), up(M, I, keep.up);
  gate_up_gemms(xb.p(), wg, bg, wu, bu, M, I, K, gate.ptr, up.ptr);
  // ... silu_mul_fwd_bf16in's value stored as the bf16 that Bf16Input would make of it in
  // linear_residual_gemm_bf16 (the f32 act is never written) ...
  const Bf16Out act(M, I, keep.act);
  silu_mul_fwd_bf16(gate.ptr, up.ptr, act.ptr, M * I);
  // ... and linear_residual_gemm_bf16's GEMM on it.
  residual_gemm(act.ptr, wd, r, M, N, I, y);
}

}  // namespace gyre::cuda
