// gyre::ops::linear / linear_backward (ops.h): argument checks and dispatch — the CPU kernels, the
// CUDA f32 GEMM, or under ops::Bf16Autocast the bf16 paths of backend/cuda/autocast.cc (a bf16 y:
// the autocast MLP's gate/up; a bf16 x: the bf16 attention output; bf16 dy / x in the backward:
// operands their producers already rounded). Same invariants as ops.cc.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops.h"
#include "gyre/backend/ops_args.h"

namespace gyre::ops {

using namespace detail;  // argument checking (ops_args.h)

namespace {
// A bf16 y of ops::linear: only the CUDA backend under Bf16Autocast writes one (the autocast MLP's
// gate/up, docs/cuda.md); anywhere else a clear error before anything runs.
void check_bf16_linear_output(Device dev, DType dt) {
  const char* fix =
      "pass an f32 y (or an undefined one to have it allocated); a bf16 y is the autocast MLP's "
      "gate/up";
  if (dev != Device::cuda)
    GYRE_THROW(invalid_argument,
               "ops::linear: output 'y' is bf16 but the tensors are on {}: only the CUDA backend "
               "under ops::Bf16Autocast writes a bf16 y; {}",
               device_name(dev), fix);
  if (!bf16_autocast())
    GYRE_THROW(invalid_argument,
               "ops::linear: output 'y' is bf16 outside an ops::Bf16Autocast scope: the f32 path "
               "writes f32; {}",
               fix);
  if (dt != DType::f32)
    GYRE_THROW(invalid_argument, "ops::linear: output 'y' is bf16 but 'x' is {}; {}",
               dtype_name(dt), fix);
}
// A bf16 x of ops::linear: only the CUDA backend under Bf16Autocast reads one (the attention
// output of ops::rope_attention_varlen, rope_attention_ops.h: the values the autocast GEMM would
// round an f32 x to), with f32 w and b; anywhere else a clear error before anything runs.
void check_bf16_linear_input(Device dev, DType dt) {
  const char* fix =
      "pass an f32 x (convert it first: ops::copy into an f32 tensor); a bf16 x is the autocast "
      "attention output";
  if (dev != Device::cuda)
    GYRE_THROW(invalid_argument,
               "ops::linear: input 'x' is bf16 but the tensors are on {}: only the CUDA backend "
               "under ops::Bf16Autocast reads a bf16 x; {}",
               device_name(dev), fix);
  if (!bf16_autocast())
    GYRE_THROW(invalid_argument,
               "ops::linear: input 'x' is bf16 outside an ops::Bf16Autocast scope: the f32 path "
               "reads f32; {}",
               fix);
  if (dt != DType::f32)
    GYRE_THROW(invalid_argument, "ops::linear: input 'x' is bf16 but 'w' is {}; {}", dtype_name(dt),
               fix);
}
}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  OpScope op_scope_("linear");
  const char* op = "linear";
  check_defined(op, "x", x);
  check_defined(op, "w", w);
  const Device dev = op_device(op, {{"x", &x}, {"w", &w}, {"b", &b}, {"y", &y}});
  // y may be bf16 (CUDA, autocast: the f32 result rounded once), and so may x (CUDA, autocast: the
  // bf16 attention output); the other tensors share one float dtype.
  const bool y_bf16 = y.defined() && y.dtype() == DType::bf16;
  const bool x_bf16 = x.dtype() == DType::bf16;
  const Tensor none;
  DType dt = float_dtype(
      op, {{"x", x_bf16 ? &none : &x}, {"w", &w}, {"b", &b}, {"y", y_bf16 ? &none : &y}});
  if (x_bf16) check_bf16_linear_input(dev, dt);
  if (y_bf16) check_bf16_linear_output(dev, dt);
  GYRE_CHECK(w.dim() == 2, "ops::linear: weight must be [N, K], got {}", shape_str(w.shape()));
  const int64_t N = w.size(0), K = w.size(1);
  GYRE_CHECK(x.dim() >= 1 && x.size(-1) == K,
             "ops::linear: x has shape {} but the weight {} expects last dim {}",
             shape_str(x.shape()), shape_str(w.shape()), K);
  const int64_t M = leading_rows(x);
  if (b.defined()) check_shape(op, "b", b, {N});
  Shape ys = x.shape();
  ys.back() = N;
  prepare_out(op, "y", y, ys, y_bf16 ? DType::bf16 : dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (x_bf16) {  // checked above: autocast is on
        const uint16_t* wc = nullptr;
        if (Bf16WeightCache* cache = bf16_weight_cache(); cache && M > 0 && N > 0 && K > 0)
          wc = cache->bf16(w);
        return cuda::linear_fwd_autocast_bf16_x(x.data<uint16_t>(), w.f32(), wc, ptr<float>(b), M,
                                                N, K, y_bf16 ? nullptr : y.f32(),
                                                y_bf16 ? y.data<uint16_t>() : nullptr);
      }
      if (y_bf16) {  // checked above: autocast is on
        uint16_t* yb = y.data<uint16_t>();
        if (Bf16WeightCache* cache = bf16_weight_cache(); cache && M > 0 && N > 0 && K > 0)
          return cuda::linear_fwd_autocast_bf16_weight_bf16_out(x.f32(), cache->bf16(w),
                                                                ptr<float>(b), M, N, K, yb);
        return cuda::linear_fwd_autocast_bf16_out(x.f32(), w.f32(), ptr<float>(b), M, N, K, yb);
      }
      if (bf16_autocast()) {
        if (Bf16WeightCache* cache = bf16_weight_cache(); cache && M > 0 && N > 0 && K > 0)
          return cuda::linear_fwd_autocast_bf16_weight(x.f32(), cache->bf16(w), ptr<float>(b), M, N,
                                                       K, y.f32());
        return cuda::linear_fwd_autocast(x.f32(), w.f32(), ptr<float>(b), M, N, K, y.f32());
      }
      return cuda::linear_fwd(x.f32(), w.f32(), ptr<float>(b), M, N, K, y.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::linear_fwd<T>(ptr<T>(x), ptr<T>(w), ptr<T>(b), M, N, K, ptr<T>(y));
  });
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                     Tensor& db, bool accumulate_dx) {
  OpScope op_scope_("linear_backward");
  const char* op = "linear_backward";
  check_defined(op, "dy", dy);
  check_defined(op, "x", x);
  check_defined(op, "w", w);
  const Device dev =
      op_device(op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"dx", &dx}, {"dw", &dw}, {"db", &db}});
  // dy and x may come rounded to bf16 by their producers (CUDA under autocast: the MLP's bf16
  // activation and gate/up gradients) — the values the autocast path would round them to, so the
  // GEMMs see the same operands; everything else shares one float dtype.
  // dx may be bf16 there too (rounded once from the f32 accumulation, for a bf16-reading consumer).
  const bool dy16 = dy.dtype() == DType::bf16, x16 = x.dtype() == DType::bf16;
  const bool dx16 = dx.defined() && dx.dtype() == DType::bf16;
  const Tensor none;
  DType dt = float_dtype(op, {{"dy", dy16 ? &none : &dy},
                              {"x", x16 ? &none : &x},
                              {"w", &w},
                              {"dx", dx16 ? &none : &dx},
                              {"dw", &dw},
                              {"db", &db}});
  if (dx16 && (dev != Device::cuda || !bf16_autocast() || dt != DType::f32 || accumulate_dx))
    GYRE_THROW(invalid_argument,
               "ops::linear_backward: 'dx' is bf16, which only the CUDA backend writes under "
               "ops::Bf16Autocast with f32 weights and without accumulate_dx (here: {}, autocast "
               "{}, {}, accumulate_dx {}); pass an f32 dx",
               device_name(dev), bf16_autocast() ? "on" : "off", dtype_name(dt), accumulate_dx);
  if (dy16 || x16) {
    const char* which = dy16 && x16 ? "'dy' and 'x' are" : dy16 ? "'dy' is" : "'x' is";
    if (dev != Device::cuda || !bf16_autocast() || dt != DType::f32)
      GYRE_THROW(invalid_argument,
                 "ops::linear_backward: {} bf16, which only the CUDA backend takes under "
                 "ops::Bf16Autocast with f32 weights and gradients (here: {}, autocast {}, {}); "
                 "pass f32 tensors",
                 which, device_name(dev), bf16_autocast() ? "on" : "off", dtype_name(dt));
    if (dy16 && db.defined())
      GYRE_THROW(invalid_argument,
                 "ops::linear_backward: 'dy' is bf16 but a bias gradient 'db' is requested: db "
                 "sums the f32 dy; pass dy in f32 for a linear with a bias");
  }
  GYRE_CHECK(w.dim() == 2, "ops::linear_backward: weight must be [N, K], got {}",
             shape_str(w.shape()));
  const int64_t N = w.size(0), K = w.size(1);
  GYRE_CHECK(x.dim() >= 1 && x.size(-1) == K, "ops::linear_backward: x {} vs weight {}",
             shape_str(x.shape()), shape_str(w.shape()));
  const int64_t M = leading_rows(x);
  check_rows(op, "dy", dy, M, N);
  if (dx.defined()) check_rows(op, "dx", dx, M, K);
  if (dw.defined()) check_shape(op, "dw", dw, {N, K});
  if (db.defined()) check_shape(op, "db", db, {N});
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (bf16_autocast()) {
        // An installed weight cache (model/step_weight_copies.h in training) serves dX's bf16 w.
        const uint16_t* w_bf16 = nullptr;
        if (Bf16WeightCache* cache = bf16_weight_cache();
            cache && dx.defined() && M > 0 && N > 0 && K > 0)
          w_bf16 = cache->bf16(w);
        if ((dy16 || x16 || dx16) && (M == 0 || N == 0 || K == 0)) {
          // Empty products: dx is overwritten with zeros (N = 0); nothing to add to dw; db gets
          // the column sums of an f32 dy (K = 0 leaves them defined).
          if (dx.defined() && !accumulate_dx) dx.zero();
          if (db.defined() && !dy16 && M > 0 && N > 0) {
            Tensor unused_dx, unused_dw;
            linear_backward(dy, x16 ? x.to(DType::f32) : x, w, unused_dx, unused_dw, db);
          }
          return;
        }
        // A gradient holding deferred zeros (Gradients::zero) is overwritten, not added to: the
        // GEMM's beta 0 instead of a memset and a read of C. Claimed before ptr() would write them.
        const bool dw_overwrite = M > 0 && N > 0 && K > 0 && dw.claim_pending_zero();
        return cuda::linear_bwd_autocast(
            dy16 ? nullptr : dy.f32(), x16 ? nullptr : x.f32(), w.f32(), M, N, K,
            dx16 ? nullptr : ptr<float>(dx), accumulate_dx, ptr<float>(dw), ptr<float>(db), w_bf16,
            dy16 ? dy.data<uint16_t>() : nullptr, x16 ? x.data<uint16_t>() : nullptr,
            dx16 ? dx.data<uint16_t>() : nullptr, dw_overwrite);
      }
      return cuda::linear_bwd(dy.f32(), x.f32(), w.f32(), M, N, K, ptr<float>(dx), accumulate_dx,
                              ptr<float>(dw), ptr<float>(db));
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::linear_bwd<T>(ptr<T>(dy), ptr<T>(x), ptr<T>(w), M, N, K, ptr<T>(dx), accumulate_dx,
                       ptr<T>(dw), ptr<T>(db));
  });
}

}  // namespace gyre::ops
