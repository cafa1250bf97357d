// gyre::ops SwiGLU (ops.h): silu_mul and its backward — f32/f64 on either device, and on CUDA the
// autocast MLP's bf16 gate/up (read in f32 math; a bf16 out / dgate / dup is the f32 value rounded
// once). Same invariants as ops.cc.
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

// ---- SwiGLU

namespace {
// Whether gate/up are the bf16 pre-activations of an autocast MLP (CUDA only): both bf16, the
// other float tensors f32. Throws a clear error for any other use of bf16 here; false for f32/f64
// gate/up (the ordinary checks follow).
bool bf16_gate_up(const char* op, Device dev, const Tensor& gate, const Tensor& up,
                  std::initializer_list<Arg> f32_args) {
  const bool g16 = gate.dtype() == DType::bf16, u16 = up.dtype() == DType::bf16;
  if (!g16 && !u16) return false;
  if (g16 != u16)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'gate' is {} but 'up' is {}; pass both bf16 (the autocast MLP's gate/up "
               "on CUDA) or both f32",
               op, dtype_name(gate.dtype()), dtype_name(up.dtype()));
  if (dev != Device::cuda)
    GYRE_THROW(invalid_argument,
               "ops::{}: bf16 'gate'/'up' on {}: only the CUDA backend reads bf16 pre-activations "
               "(the autocast MLP's); pass f32 tensors",
               op, device_name(dev));
  for (const Arg& a : f32_args)
    if (a.t->defined() && a.t->dtype() != DType::f32)
      GYRE_THROW(invalid_argument,
                 "ops::{}: '{}' is {}; with bf16 'gate'/'up' it must be f32 (math and outputs "
                 "stay f32)",
                 op, a.name, dtype_name(a.t->dtype()));
  return true;
}
}  // namespace

void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  OpScope op_scope_("silu_mul");
  const char* op = "silu_mul";
  check_defined(op, "gate", gate);
  check_defined(op, "up", up);
  const Device dev = op_device(op, {{"gate", &gate}, {"up", &up}, {"out", &out}});
  // bf16 gate/up (CUDA): the autocast MLP's pre-activations, read in f32 math into an f32 out —
  // or a bf16 out (the f32 value rounded once: the down projection's bf16 operand, which the
  // autocast linear would round to the same bits).
  const bool out_bf16 = out.defined() && out.dtype() == DType::bf16;
  const Tensor no_out;
  const bool bf16_in = bf16_gate_up(op, dev, gate, up, {{"out", out_bf16 ? &no_out : &out}});
  if (out_bf16 && !bf16_in)
    GYRE_THROW(invalid_argument,
               "ops::silu_mul: 'out' is bf16 but 'gate'/'up' are {}: a bf16 out is only written "
               "from bf16 gate/up on CUDA (the autocast MLP); pass an f32 out",
               dtype_name(gate.dtype()));
  DType dt = bf16_in ? DType::f32 : float_dtype(op, {{"gate", &gate}, {"up", &up}, {"out", &out}});
  check_shape(op, "up", up, gate.shape());
  prepare_out(op, "out", out, gate.shape(), out_bf16 ? DType::bf16 : dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (out_bf16)
        return cuda::silu_mul_fwd_bf16(gate.data<uint16_t>(), up.data<uint16_t>(),
                                       out.data<uint16_t>(), gate.numel());
      if (bf16_in)
        return cuda::silu_mul_fwd_bf16in(gate.data<uint16_t>(), up.data<uint16_t>(), out.f32(),
                                         gate.numel());
      return cuda::silu_mul_fwd(gate.f32(), up.f32(), out.f32(), gate.numel());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::silu_mul_fwd<T>(ptr<T>(gate), ptr<T>(up), ptr<T>(out), gate.numel());
  });
}

void silu_mul_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) {
  OpScope op_scope_("silu_mul_backward");
  const char* op = "silu_mul_backward";
  check_all_defined(op, {{"dout", &dout}, {"gate", &gate}, {"up", &up}});
  const Device dev = op_device(
      op, {{"dout", &dout}, {"gate", &gate}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}});
  // bf16 gate/up (CUDA): the saved pre-activations of an autocast MLP; dout f32, the gradients
  // f32 — or both bf16 (each f32 value rounded once: the bias-free gate/up linears' bf16 dy,
  // which linear_backward would round to the same bits). With bf16 gradients dout may be bf16 too
  // (down_proj's dx rounded by its GEMM), read widened exactly.
  const bool grads_bf16 = dgate.defined() && dgate.dtype() == DType::bf16 && dup.defined() &&
                          dup.dtype() == DType::bf16;
  const bool dout_bf16 = dout.dtype() == DType::bf16;
  const Tensor none;
  const bool bf16_in = bf16_gate_up(op, dev, gate, up,
                                    {{"dout", dout_bf16 ? &none : &dout},
                                     {"dgate", grads_bf16 ? &none : &dgate},
                                     {"dup", grads_bf16 ? &none : &dup}});
  if (grads_bf16 && !bf16_in)
    GYRE_THROW(invalid_argument,
               "ops::silu_mul_backward: 'dgate'/'dup' are bf16 but 'gate'/'up' are {}: bf16 "
               "gradients are only written from bf16 gate/up on CUDA; pass f32 gradients",
               dtype_name(gate.dtype()));
  if (dout_bf16 && !(bf16_in && grads_bf16))
    GYRE_THROW(invalid_argument,
               "ops::silu_mul_backward: 'dout' is bf16, which is read only with bf16 'gate'/'up' "
               "and bf16 'dgate'/'dup' on CUDA (here gate {}, dgate {}); pass an f32 dout",
               dtype_name(gate.dtype()), dgate.defined() ? dtype_name(dgate.dtype()) : "undefined");
  DType dt =
      bf16_in
          ? DType::f32
          : float_dtype(
                op,
                {{"dout", &dout}, {"gate", &gate}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}});
  check_shape(op, "up", up, gate.shape());
  check_shape(op, "dout", dout, gate.shape());
  prepare_out(op, "dgate", dgate, gate.shape(), grads_bf16 ? DType::bf16 : dt, dev);
  prepare_out(op, "dup", dup, gate.shape(), grads_bf16 ? DType::bf16 : dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (dout_bf16)
        return cuda::silu_mul_bwd_bf16_dout(dout.data<uint16_t>(), gate.data<uint16_t>(),
                                            up.data<uint16_t>(), dgate.data<uint16_t>(),
                                            dup.data<uint16_t>(), gate.numel());
      if (grads_bf16)
        return cuda::silu_mul_bwd_bf16(dout.f32(), gate.data<uint16_t>(), up.data<uint16_t>(),
                                       dgate.data<uint16_t>(), dup.data<uint16_t>(), gate.numel());
      if (bf16_in)
        return cuda::silu_mul_bwd_bf16in(dout.f32(), gate.data<uint16_t>(), up.data<uint16_t>(),
                                         dgate.f32(), dup.f32(), gate.numel());
      return cuda::silu_mul_bwd(dout.f32(), gate.f32(), up.f32(), dgate.f32(), dup.f32(),
                                gate.numel());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::silu_mul_bwd<T>(ptr<T>(dout), ptr<T>(gate), ptr<T>(up), ptr<T>(dgate), ptr<T>(dup),
                         gate.numel());
  });
}

}  // namespace gyre::ops
