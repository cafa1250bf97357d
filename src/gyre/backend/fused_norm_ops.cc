// ops::rms_norm_backward_add (fused_norm_ops.h): every check of rms_norm_backward and add_ (plus
// the aliasing and bf16-output rules) before anything is written, then one CUDA call
// (backend/cuda/rms_bwd_fused.h) or, on the CPU, the two ops themselves.
#include "gyre/backend/fused_norm_ops.h"

#include "gyre/backend/cuda/rms_bwd_fused.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

// Whether two defined tensors share any byte (same device, intersecting address ranges).
bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.device() != b.device()) return false;
  const char* pa = static_cast<const char*>(a.address());
  const char* pb = static_cast<const char*>(b.address());
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// An output must not share memory with any of `others` (the kernels read those while writing it).
void check_disjoint(const char* op, const char* name, const Tensor& out,
                    std::initializer_list<Arg> others) {
  for (const Arg& o : others)
    GYRE_CHECK(!overlaps(out, *o.t),
               "ops::{}: output '{}' overlaps '{}' in memory; only dx may alias residual_grad "
               "(exactly, in place)",
               op, name, o.name);
}

}  // namespace

void rms_norm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& residual_grad, Tensor& dx, Tensor& dw, Tensor* dx_bf16) {
  OpScope op_scope_("rms_norm_backward_add");
  const char* op = "rms_norm_backward_add";
  const Tensor none;
  const Tensor& d16 = dx_bf16 ? *dx_bf16 : none;
  check_all_defined(
      op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"residual_grad", &residual_grad}});
  const Device dev = op_device(op, {{"dy", &dy},
                                    {"x", &x},
                                    {"w", &w},
                                    {"rstd", &rstd},
                                    {"residual_grad", &residual_grad},
                                    {"dx", &dx},
                                    {"dw", &dw},
                                    {"dx_bf16", &d16}});
  const DType dt = float_dtype(op, {{"dy", &dy},
                                    {"x", &x},
                                    {"w", &w},
                                    {"rstd", &rstd},
                                    {"residual_grad", &residual_grad},
                                    {"dx", &dx},
                                    {"dw", &dw}});
  if (dx_bf16 && dev != Device::cuda)
    GYRE_THROW(unsupported,
               "ops::{}: dx_bf16 was requested on {}, but only the CUDA backend writes a bf16 dx; "
               "pass dx_bf16 = nullptr and convert dx with ops::copy",
               op, device_name(dev));
  if (dev == Device::cuda) require_cuda_f32(op, dt);
  // rms_norm_backward's shape checks.
  const int64_t H = w.numel();
  GYRE_CHECK(H > 0 && x.dim() >= 1 && x.size(-1) == H,
             "ops::{}: x has shape {} but the weight has {} elements", op, shape_str(x.shape()), H);
  const int64_t R = x.numel() / H;
  check_rows(op, "dy", dy, R, H);
  GYRE_CHECK(rstd.numel() == R, "ops::{}: rstd has {} elements for {} rows", op, rstd.numel(), R);
  if (dx.defined()) prepare_out(op, "dx", dx, x.shape(), dt, dev);  // defined: checks only
  if (dw.defined()) check_shape(op, "dw", dw, w.shape());
  // add_'s: residual_grad has dx's shape.
  const Shape out_shape = dx.defined() ? dx.shape() : x.shape();
  check_shape(op, "residual_grad", residual_grad, out_shape);
  if (d16.defined()) {
    GYRE_CHECK(d16.dtype() == DType::bf16, "ops::{}: output 'dx_bf16' is {}, expected bf16", op,
               dtype_name(d16.dtype()));
    check_shape(op, "dx_bf16", d16, out_shape);
  }
  // Aliasing: dx may be residual_grad itself; nothing else written may share memory with a tensor
  // the op reads (or with another output).
  const bool in_place = dx.defined() && dx.address() == residual_grad.address() &&
                        dx.nbytes() == residual_grad.nbytes();
  check_disjoint(op, "dx", dx, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dw", &dw}});
  if (!in_place) check_disjoint(op, "dx", dx, {{"residual_grad", &residual_grad}});
  check_disjoint(
      op, "dw", dw,
      {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"residual_grad", &residual_grad}});
  check_disjoint(op, "dx_bf16", d16,
                 {{"dy", &dy},
                  {"x", &x},
                  {"w", &w},
                  {"rstd", &rstd},
                  {"residual_grad", &residual_grad},
                  {"dx", &dx},
                  {"dw", &dw}});

  if constexpr (kCuda)
    if (dev == Device::cuda) {
      if (!dx.defined()) dx = Tensor::empty(x.shape(), dt, dev);
      if (dx_bf16 && !dx_bf16->defined())
        *dx_bf16 = Tensor::empty(out_shape, DType::bf16, Device::cuda);
      return cuda::rms_norm_bwd_add(dy.f32(), x.f32(), w.f32(), rstd.f32(), residual_grad.f32(), R,
                                    H, dx.f32(), ptr<float>(dw),
                                    dx_bf16 ? dx_bf16->data<uint16_t>() : nullptr);
    }
  // The CPU: the composition itself (bitwise by definition). In place, the norm's gradient goes to
  // a temporary first (rms_norm_backward would overwrite the residual it must be added to); add
  // computes tmp + residual_grad, the same sum add_(dx, residual_grad) makes.
  if (in_place) {
    Tensor tmp = Tensor::empty(out_shape, dt, dev);
    rms_norm_backward(dy, x, w, rstd, tmp, dw);
    add(tmp, residual_grad, dx);
    return;
  }
  rms_norm_backward(dy, x, w, rstd, dx, dw);
  add_(dx, residual_grad);
}

}  // namespace gyre::ops
