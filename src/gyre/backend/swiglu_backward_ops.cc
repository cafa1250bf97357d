// ops::swiglu_gate_up_backward (swiglu_backward_ops.h): every argument checked up front (so the
// composition cannot fail half-way, after dx or dw_gate changed), then the packed path (CUDA, bf16
// gate/up, under autocast, a non-empty product) or the composition itself.
#include "gyre/backend/swiglu_backward_ops.h"

#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/pack_bf16.h"
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

constexpr const char* kOp = "swiglu_gate_up_backward";

}  // namespace

void swiglu_gate_up_backward(const Tensor& dact, const Tensor& gate, const Tensor& up,
                             const Tensor& x, const Tensor& w_gate, const Tensor& w_up, Tensor& dx,
                             Tensor& dw_gate, Tensor& dw_up) {
  OpScope op_scope_(kOp);
  for (const Arg& a : {Arg{"dact", &dact}, Arg{"gate", &gate}, Arg{"up", &up}, Arg{"x", &x},
                       Arg{"w_gate", &w_gate}, Arg{"w_up", &w_up}})
    if (!a.t->defined())
      GYRE_THROW(invalid_argument, "ops::{}: input '{}' is undefined", kOp, a.name);
  const Device dev = op_device(kOp, {{"dact", &dact},
                                     {"gate", &gate},
                                     {"up", &up},
                                     {"x", &x},
                                     {"w_gate", &w_gate},
                                     {"w_up", &w_up},
                                     {"dx", &dx},
                                     {"dw_gate", &dw_gate},
                                     {"dw_up", &dw_up}});

  // ---- dtypes: which tensors may be bf16, then one float dtype for the rest.
  const bool autocast = dev == Device::cuda && bf16_autocast();
  const bool act16 = gate.dtype() == DType::bf16;
  if (act16 != (up.dtype() == DType::bf16))
    GYRE_THROW(invalid_argument,
               "ops::{}: 'gate' is {} but 'up' is {}; pass both bf16 (the autocast MLP's saved "
               "pre-activations on CUDA) or both in the float dtype",
               kOp, dtype_name(gate.dtype()), dtype_name(up.dtype()));
  if (act16 && dev != Device::cuda)
    GYRE_THROW(invalid_argument,
               "ops::{}: bf16 'gate'/'up' on {}: only the CUDA backend reads bf16 pre-activations; "
               "pass f32 tensors",
               kOp, device_name(dev));
  // dgate / dup in bf16: the composition's silu_mul_backward output where its linear_backward
  // calls take a bf16 dy (autocast); the packed path's condition too.
  const bool grads16 = act16 && autocast;
  const bool dact16 = dact.dtype() == DType::bf16, x16 = x.dtype() == DType::bf16;
  if (dact16 && !grads16)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'dact' is bf16, which is read only with bf16 'gate'/'up' on CUDA under "
               "ops::Bf16Autocast (here: gate {}, {}, autocast {}); pass an f32 dact",
               kOp, dtype_name(gate.dtype()), device_name(dev), bf16_autocast() ? "on" : "off");
  if (x16 && !autocast)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'x' is bf16, which only the CUDA backend takes under ops::Bf16Autocast "
               "(here: {}, autocast {}); pass an f32 x",
               kOp, device_name(dev), bf16_autocast() ? "on" : "off");
  if (dx.defined() && dx.dtype() == DType::bf16)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'dx' is bf16, but the up projection's product is added into it; pass an "
               "f32 dx",
               kOp);
  const Tensor none;
  const DType dt = float_dtype(kOp, {{"dact", dact16 ? &none : &dact},
                                     {"gate", act16 ? &none : &gate},
                                     {"up", act16 ? &none : &up},
                                     {"x", x16 ? &none : &x},
                                     {"w_gate", &w_gate},
                                     {"w_up", &w_up},
                                     {"dx", &dx},
                                     {"dw_gate", &dw_gate},
                                     {"dw_up", &dw_up}});
  if (dev == Device::cuda) require_cuda_f32(kOp, dt);

  // ---- shapes: w_gate [I, H] fixes I and H, x's rows fix M.
  if (w_gate.dim() != 2)
    GYRE_THROW(invalid_argument, "ops::{}: 'w_gate' has shape {}, expected [I, H]", kOp,
               shape_str(w_gate.shape()));
  const int64_t I = w_gate.size(0), H = w_gate.size(1);
  if (w_up.shape() != w_gate.shape())
    GYRE_THROW(invalid_argument, "ops::{}: 'w_up' has shape {}, expected w_gate's {}", kOp,
               shape_str(w_up.shape()), shape_str(w_gate.shape()));
  if (x.dim() < 1 || x.size(-1) != H)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'x' has shape {}, expected [.., {}] (w_gate is [I, H] = {})", kOp,
               shape_str(x.shape()), H, shape_str(w_gate.shape()));
  const int64_t M = leading_rows(x);
  if (gate.dim() < 1 || gate.size(-1) != I || leading_rows(gate) != M)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'gate' has shape {}, expected {} rows (x's) of I = {} (w_gate's rows)",
               kOp, shape_str(gate.shape()), M, I);
  for (const Arg& a : {Arg{"up", &up}, Arg{"dact", &dact}})
    if (a.t->shape() != gate.shape())
      GYRE_THROW(invalid_argument, "ops::{}: '{}' has shape {}, expected gate's {}", kOp, a.name,
                 shape_str(a.t->shape()), shape_str(gate.shape()));
  if (dx.defined() && (dx.dim() < 1 || dx.size(-1) != H || leading_rows(dx) != M))
    GYRE_THROW(invalid_argument, "ops::{}: 'dx' has shape {}, expected x's rows and width ({})",
               kOp, shape_str(dx.shape()), shape_str(x.shape()));
  for (const Arg& a : {Arg{"dw_gate", &dw_gate}, Arg{"dw_up", &dw_up}})
    if (a.t->defined() && a.t->shape() != w_gate.shape())
      GYRE_THROW(invalid_argument, "ops::{}: '{}' has shape {}, expected the weights' {}", kOp,
                 a.name, shape_str(a.t->shape()), shape_str(w_gate.shape()));
  if (!dx.defined() && !dw_gate.defined() && !dw_up.defined()) return;  // nothing is computed

  if constexpr (kCuda)
    if (grads16 && M > 0 && H > 0 && I > 0) {
      // dgate | dup packed (pack_bf16.h's gate/up layout). A fresh pool block is 256-byte aligned,
      // so the slices at columns 0 and off (a multiple of 128 bf16) keep the alignment the
      // cuBLASLt plans assume; the kernel zeroes the padding columns.
      const cuda::GateUpPacking p = cuda::gate_up_packing(I);
      Tensor packed = Tensor::empty({M, p.ld}, DType::bf16, Device::cuda);
      cuda::silu_mul_bwd_bf16_packed(
          dact16 ? nullptr : dact.f32(), dact16 ? dact.data<uint16_t>() : nullptr,
          gate.data<uint16_t>(), up.data<uint16_t>(), M, I, packed.data<uint16_t>(), p.off, p.ld);
      Bf16WeightCache* cache = bf16_weight_cache();
      // The gate | up copies side by side (the forward's gate/up ops made them so, or this call
      // does when neither exists yet): the one dX GEMM reads them as its stacked [2I, H] weight
      // in place. Only without padding columns (I % 128 == 0, Qwen's 4864 / 8960): a gap would
      // need zero rows between the copies.
      const uint16_t* stacked =
          cache && dx.defined() && p.off == I ? cache->bf16_pair(w_gate, w_up) : nullptr;
      auto member = [&](const Tensor& w, Tensor& dw, int64_t col) {
        // As linear_backward: the installed cache serves dX's bf16 weight, and a gradient holding
        // deferred zeros (Tensor::zero_deferred) is overwritten by its dW GEMM (beta 0) instead
        // of being zeroed and added to — claimed here, after every check and before anything
        // touches dw's data (f32() would write the zeros).
        const bool overwrite = dw.defined() && dw.claim_pending_zero();
        return cuda::PackedBwdMember{w.f32(),
                                     cache && dx.defined() ? cache->bf16(w) : nullptr,
                                     I,
                                     col,
                                     dw.defined() ? dw.f32() : nullptr,
                                     overwrite};
      };
      const cuda::PackedBwdMember members[2] = {member(w_gate, dw_gate, 0),
                                                member(w_up, dw_up, p.off)};
      return cuda::linear_group_bwd_packed(packed.data<uint16_t>(), p.ld, members, 2,
                                           x16 ? nullptr : x.f32(),
                                           x16 ? x.data<uint16_t>() : nullptr, M, H,
                                           dx.defined() ? dx.f32() : nullptr, false, stacked);
    }
  // The composition (the CPU, f32 gate/up, autocast off, empty products).
  Tensor dgate = Tensor::empty(gate.shape(), grads16 ? DType::bf16 : dt, dev);
  Tensor dup = Tensor::empty(gate.shape(), grads16 ? DType::bf16 : dt, dev);
  silu_mul_backward(dact, gate, up, dgate, dup);
  Tensor no_db;
  linear_backward(dgate, x, w_gate, dx, dw_gate, no_db);
  linear_backward(dup, x, w_up, dx, dw_up, no_db, /*accumulate_dx=*/true);
}

}  // namespace gyre::ops
