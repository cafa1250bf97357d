// bf16 autocast kernels behind ops::Bf16Autocast (ops.h): f32 operands are rounded to bf16 into
// pool scratch (cuda::DeviceBuffer), the bf16 tensor-core kernels run (cuBLASLt bf16 GEMM with f32
// accumulate, FlashAttention-2 bf16), and results come back as f32 — or, for a linear whose caller
// asks for it (the *_bf16_out functions: the dense MLP's gate/up), as bf16, the f32 result rounded
// once (PyTorch's autocast returns bf16 from every linear; gyre keeps f32 elsewhere). This is
// PyTorch's torch.autocast(dtype=bfloat16) policy for matmuls and attention: the products see bf16
// inputs, accumulation stays f32, parameter gradients accumulate into f32 tensors.
//
// Error bound (what the GPU tests check): rounding an operand to bf16 changes it by at most 2^-8
// relative (8 significant bits, round to nearest: half a unit in the last place, the unit
// roundoff u = 2^-8), so each product term a·b moves by at most ~2^-7 |a||b|; a dot product over K
// terms therefore stays within ~2^-7 Σ|a_k||b_k| of the f32 result (f32 accumulation error is far
// below that). A bf16 output (the MLP's gate/up) adds one more rounding of the result: 2^-8 of it.
//
// Attention runs through cuDNN's fused SDPA (cudnn_attention.h) unless GYRE_ATTENTION_BACKEND=flash
// or cuDNN cannot run the call, in which case the FlashAttention-2 kernels do; both write the same
// bf16 output and the same lse (natural-log log-sum-exp of the scaled scores per row), so a forward
// of one backend may be differentiated by the other. That choice is made in one place,
// attention_fwd_bf16 / attention_bwd_bf16 (bf16 operands in), shared by the autocast attention and
// the fused RoPE + attention (rope_attention_bf16.h): equal operands give equal bits.
//
// A bf16 x (linear_fwd_autocast_bf16_x: the attention output under autocast) holds exactly the
// values the f32-x path rounds x to, so past the GEMV's rows the GEMM reads it instead of a rounded
// copy; up to kGemvMaxRows rows it is widened to f32 and the f32-x path runs.
//
// Scratch lifetime: buffers return to the pool when these host functions return, while kernels may
// still be queued; the pool reuses a block on the same stream only (stream order protects it).
#include <algorithm>
#include <cstdint>
#include <optional>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/cudnn_attention.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pdl.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

// p itself when null or 256-byte aligned, else a copy of its n bf16 values in pool scratch (held
// by `keep`).
const uint16_t* aligned_bf16(const uint16_t* p, int64_t n, std::optional<DeviceBuffer>& keep) {
  if (!p || reinterpret_cast<uintptr_t>(p) % 256 == 0) return p;
  keep.emplace(size_t(n) * 2);
  GYRE_CUDA_CHECK(
      cudaMemcpyAsync(keep->as<uint16_t>(), p, size_t(n) * 2, cudaMemcpyDeviceToDevice, stream()));
  return keep->as<uint16_t>();
}

// A bf16 copy of n f32 values in pool scratch.
struct Bf16Copy {
  DeviceBuffer buf;
  Bf16Copy(const float* src, int64_t n) : buf(size_t(std::max<int64_t>(n, 1)) * 2) {
    if (n > 0) f32_to_bf16(src, buf.as<uint16_t>(), n);
  }
  uint16_t* p() const { return buf.as<uint16_t>(); }
};

}  // namespace

void linear_fwd_autocast(const float* x, const float* w, const float* b, int64_t M, int64_t N,
                         int64_t K, float* y) {
  if (M == 0 || N == 0) return;
  if (K == 0) return linear_fwd(x, w, b, M, N, K, y);  // y = bias rows (or zeros): no product
  Bf16Copy wb(w, N * K);
  // The GEMV loads its first weights before waiting for the previous kernel (pdl.cuh), and that
  // kernel is the conversion just enqueued: put a barrier between them.
  if (linear_gemv_bf16_supported(x, wb.p(), M, N, K)) pdl_barrier();
  linear_fwd_autocast_bf16_weight(x, wb.p(), b, M, N, K, y);
}

void linear_fwd_autocast_bf16_weight(const float* x, const uint16_t* w_bf16, const float* b,
                                     int64_t M, int64_t N, int64_t K, float* y) {
  if (linear_gemv_bf16_supported(x, w_bf16, M, N, K))
    return linear_gemv_bf16(x, w_bf16, b, M, N, K, y);  // decode: weight-bandwidth bound
  Bf16Copy xb(x, M * K);
  linear_gemm_bf16(xb.p(), w_bf16, b, M, N, K, y);  // y = x w^T + b, bias fused into the GEMM
}

void linear_fwd_autocast_bf16_out(const float* x, const float* w, const float* b, int64_t M,
                                  int64_t N, int64_t K, uint16_t* y) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // no product: the bias rows (or zeros), rounded once as any other y
    DeviceBuffer t(size_t(M * N) * 4);
    linear_fwd(x, w, b, M, N, K, t.as<float>());
    return f32_to_bf16(t.as<float>(), y, M * N);
  }
  Bf16Copy wb(w, N * K);
  if (linear_gemv_bf16_supported(x, wb.p(), M, N, K)) pdl_barrier();  // as linear_fwd_autocast
  linear_fwd_autocast_bf16_weight_bf16_out(x, wb.p(), b, M, N, K, y);
}

void linear_fwd_autocast_bf16_weight_bf16_out(const float* x, const uint16_t* w_bf16,
                                              const float* b, int64_t M, int64_t N, int64_t K,
                                              uint16_t* y) {
  if (linear_gemv_bf16_supported(x, w_bf16, M, N, K)) {
    // The GEMV's f32 columns (bias added), then f32_to_bf16: bitwise what the fused gate/up GEMV
    // (gemv_fused.cu) feeds its SiLU·mul after rounding the same column values in registers.
    DeviceBuffer t(size_t(M * N) * 4);
    linear_gemv_bf16(x, w_bf16, b, M, N, K, t.as<float>());
    return f32_to_bf16(t.as<float>(), y, M * N);
  }
  Bf16Copy xb(x, M * K);
  linear_gemm_bf16_out(xb.p(), w_bf16, b, M, N, K, y);  // fused_gemm.cc's gate/up GEMMs call it too
}

void linear_fwd_autocast_bf16_x(const uint16_t* x, const float* w, const uint16_t* w_bf16,
                                const float* b, int64_t M, int64_t N, int64_t K, float* y,
                                uint16_t* y_bf16) {
  if (M == 0 || N == 0) return;
  if (M <= kGemvMaxRows || K == 0) {
    // Where the f32-x path may run the GEMV (or has no product to run), run exactly that path on
    // x widened into f32 scratch: bf16 -> f32 is exact, so it sees the same values. The scratch is
    // a fresh pool block (cudaMalloc'ed, 256-byte aligned), as the f32 tensor of the reference
    // would be, so the GEMV predicate decides the same way.
    DeviceBuffer xf(size_t(std::max<int64_t>(M * K, 1)) * 4);
    if (M * K > 0) bf16_to_f32(x, xf.as<float>(), M * K);
    const float* x32 = xf.as<float>();
    if (w_bf16)
      return y_bf16 ? linear_fwd_autocast_bf16_weight_bf16_out(x32, w_bf16, b, M, N, K, y_bf16)
                    : linear_fwd_autocast_bf16_weight(x32, w_bf16, b, M, N, K, y);
    return y_bf16 ? linear_fwd_autocast_bf16_out(x32, w, b, M, N, K, y_bf16)
                  : linear_fwd_autocast(x32, w, b, M, N, K, y);
  }
  // Past the GEMV's rows the f32-x path rounds x into scratch and runs the GEMM on it; x already
  // holds those bf16 values (f32_to_bf16 of a widened bf16 is the same bf16, NaNs aside), so the
  // GEMM reads it directly: same call, same M, N, K, same plan.
  // The plan's algorithm was chosen for cuBLASLt's default 256-byte operand alignment, which the
  // reference's scratch copy has; a view of a bf16 tensor may not: copy it to scratch then (same
  // values, so the same result).
  std::optional<DeviceBuffer> xs;
  x = aligned_bf16(x, M * K, xs);
  std::optional<Bf16Copy> wb;
  if (!w_bf16) w_bf16 = wb.emplace(w, N * K).p();  // as linear_fwd_autocast rounds it
  if (y_bf16) return linear_gemm_bf16_out(x, w_bf16, b, M, N, K, y_bf16);
  linear_gemm_bf16(x, w_bf16, b, M, N, K, y);
}

void linear_bwd_autocast(const float* dy, const float* x, const float* w, int64_t M, int64_t N,
                         int64_t K, float* dx, bool accumulate_dx, float* dw, float* db,
                         const uint16_t* w_bf16, const uint16_t* dy_bf16, const uint16_t* x_bf16,
                         uint16_t* dx_bf16, bool dw_overwrite) {
  GYRE_CHECK(!dw_overwrite || (M > 0 && N > 0 && K > 0),
             "linear_bwd_autocast: dw_overwrite needs a non-empty product (M {}, N {}, K {})", M, N,
             K);
  if (M == 0 || N == 0 || K == 0)
    return linear_bwd(dy, x, w, M, N, K, dx, accumulate_dx, dw, db);  // empty products
  // The per-call roundings, only for operands that do not come rounded already. An operand that
  // comes in bf16 but off cuBLASLt's default 256-byte alignment (which the plans assume and a
  // rounded scratch copy has) is copied into scratch first: same values, same result.
  std::optional<Bf16Copy> dyb, wb, xb;
  std::optional<DeviceBuffer> dys, xs;
  dy_bf16 = aligned_bf16(dy_bf16, M * N, dys);
  x_bf16 = aligned_bf16(x_bf16, M * K, xs);
  if (!dy_bf16) dy_bf16 = dyb.emplace(dy, M * N).p();
  if (dx || dx_bf16) {
    if (!w_bf16) w_bf16 = wb.emplace(w, N * K).p();
    if (dx_bf16)  // the f32 accumulation rounded once (gemm_bf16's bf16 C)
      gemm_bf16(false, false, M, K, N, 1.0f, dy_bf16, N, w_bf16, K, 0.0f, dx_bf16, K, true);
    else
      gemm_bf16(false, false, M, K, N, 1.0f, dy_bf16, N, w_bf16, K, accumulate_dx ? 1.0f : 0.0f, dx,
                K, false);
  }
  if (dw) {
    if (!x_bf16) x_bf16 = xb.emplace(x, M * K).p();
    gemm_bf16(true, false, N, K, M, 1.0f, dy_bf16, N, x_bf16, K, dw_overwrite ? 0.0f : 1.0f, dw, K,
              false);
  }
  if (db) column_sums_add(dy, M, N, db);  // f32 dy, as the f32 path
}

bool attention_autocast_supported(int64_t D) { return flash_bf16_supported(D); }

void attention_fwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                        int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                        float* lse) {
  if (T == 0) return;
  if (!cudnn_attention_fwd(q, k, v, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale, out, lse))
    flash_attention_bf16_fwd(q, k, v, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale, out, lse);
}

void attention_bwd_bf16(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                        const uint16_t* v, const uint16_t* out, const float* lse,
                        const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                        int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq, uint16_t* dk,
                        uint16_t* dv) {
  if (T == 0) return;
  if (cudnn_attention_bwd(dout, q, k, v, out, lse, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale,
                          dq, dk, dv))
    return;
  // partials: the flash backward's f32 scratch for split dK/dV partials (kernels.h).
  DeviceBuffer partials(size_t(T * Hq * D) * 4), delta(size_t(T * Hq) * 4);
  flash_attention_bf16_bwd(dout, q, k, v, out, lse, cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale,
                           dq, dk, dv, partials.as<float>(), delta.as<float>());
}

void attention_fwd_autocast(const float* q, const float* k, const float* v,
                            const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                            int64_t Hq, int64_t Hkv, int64_t D, float scale, float* out,
                            float* lse) {
  if (T == 0) return;
  Bf16Copy qb(q, T * Hq * D), kb(k, T * Hkv * D), vb(v, T * Hkv * D);
  DeviceBuffer ob(size_t(T * Hq * D) * 2);
  attention_fwd_bf16(qb.p(), kb.p(), vb.p(), cu_seqlens, B, max_seqlen, T, Hq, Hkv, D, scale,
                     ob.as<uint16_t>(), lse);
  bf16_to_f32(ob.as<uint16_t>(), out, T * Hq * D);
}

void attention_bwd_autocast(const float* dout, const float* q, const float* k, const float* v,
                            const float* out, const float* lse, const int32_t* cu_seqlens,
                            int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv,
                            int64_t D, float scale, float* dq, float* dk, float* dv) {
  if (T == 0) return;
  // q, k, v and out round to exactly the bf16 values the forward used (out was produced in bf16),
  // so the recomputed probabilities match the saved lse.
  Bf16Copy dob(dout, T * Hq * D), qb(q, T * Hq * D), kb(k, T * Hkv * D), vb(v, T * Hkv * D),
      ob(out, T * Hq * D);
  DeviceBuffer dqb(size_t(T * Hq * D) * 2), dkb(size_t(T * Hkv * D) * 2),
      dvb(size_t(T * Hkv * D) * 2);
  attention_bwd_bf16(dob.p(), qb.p(), kb.p(), vb.p(), ob.p(), lse, cu_seqlens, B, max_seqlen, T, Hq,
                     Hkv, D, scale, dqb.as<uint16_t>(), dkb.as<uint16_t>(), dvb.as<uint16_t>());
  bf16_to_f32(dqb.as<uint16_t>(), dq, T * Hq * D);
  bf16_to_f32(dkb.as<uint16_t>(), dk, T * Hkv * D);
  bf16_to_f32(dvb.as<uint16_t>(), dv, T * Hkv * D);
}

}  // namespace gyre::cuda
