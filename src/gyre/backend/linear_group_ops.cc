// ops::linear_group_backward (linear_group_ops.h): every argument checked up front (so the
// composition cannot fail half-way), then either the packed autocast path
// (backend/cuda/pack_bf16.h: CUDA, f32, under ops::Bf16Autocast, a non-empty product) or the
// composition of linear_backward calls itself — bitwise by construction there.
#include "gyre/backend/linear_group_ops.h"

#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/pack_bf16.h"
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

constexpr const char* kOp = "linear_group_backward";

// A tensor of the call with its name in error messages ("x", "members[1].dw").
struct Named {
  std::string name;
  const Tensor* t;
};

// The device of the defined tensors: op_device's checks per tensor (the backend is built, a device
// is visible), then one device for all, naming the first tensor that differs.
Device group_device(const std::vector<Named>& all) {
  const Named* first = nullptr;
  for (const Named& a : all) {
    if (!a.t->defined()) continue;
    const Device d = op_device(kOp, {{a.name.c_str(), a.t}});
    if (!first) {
      first = &a;
      continue;
    }
    if (d != first->t->device())
      GYRE_THROW(invalid_argument,
                 "ops::{}: tensor '{}' is on {} but '{}' is on {}; move the tensors of one op to "
                 "one device (Tensor::to)",
                 kOp, a.name, device_name(d), first->name, device_name(first->t->device()));
  }
  return first ? first->t->device() : Device::cpu;
}

// The one float dtype (f32, or f64 on the CPU) of the defined tensors but a bf16 x, which the
// caller checks. A bf16 dy gets its own message: this op rounds dy itself.
DType group_dtype(const std::vector<Named>& all, const Tensor& x) {
  const Named* first = nullptr;
  for (const Named& a : all) {
    if (!a.t->defined() || (a.t == &x && x.dtype() == DType::bf16)) continue;
    const DType dt = a.t->dtype();
    if (dt == DType::bf16 && a.name.ends_with(".dy"))
      GYRE_THROW(invalid_argument,
                 "ops::{}: '{}' is bf16, but this op rounds the members' f32 dy to bf16 itself "
                 "(one packed operand); pass the f32 gradient, or call linear_backward for a "
                 "member whose dy is already bf16",
                 kOp, a.name);
    if (dt != DType::f32 && dt != DType::f64)
      GYRE_THROW(invalid_argument, "ops::{}: tensor '{}' is {}; expected f32 (or f64 on the CPU)",
                 kOp, a.name, dtype_name(dt));
    if (!first) {
      first = &a;
      continue;
    }
    if (dt != first->t->dtype())
      GYRE_THROW(invalid_argument, "ops::{}: tensor '{}' is {} but '{}' is {}; use one dtype", kOp,
                 a.name, dtype_name(dt), first->name, dtype_name(first->t->dtype()));
  }
  GYRE_CHECK(first != nullptr, "ops::{}: no float tensor is defined", kOp);
  return first->t->dtype();
}

}  // namespace

void linear_group_backward(std::span<const LinearGroupMember> members, const Tensor& x, Tensor& dx,
                           bool accumulate_dx) {
  OpScope op_scope_(kOp);
  if (members.empty())
    GYRE_THROW(invalid_argument,
               "ops::{}: no members; pass at least one {{dy, w, dw, db}} (one per linear over x)",
               kOp);
  if (!x.defined()) GYRE_THROW(invalid_argument, "ops::{}: input 'x' is undefined", kOp);
  if (x.dim() < 1) GYRE_THROW(invalid_argument, "ops::{}: input 'x' is a scalar", kOp);
  std::vector<Named> all = {{"x", &x}, {"dx", &dx}};
  const Tensor none;
  for (size_t i = 0; i < members.size(); ++i) {
    const LinearGroupMember& m = members[i];
    struct Field {
      const char* name;
      const Tensor* t;
      bool required;  // dy and w; dw and db are optional
    };
    for (const Field& f : {Field{"dy", m.dy, true}, Field{"w", m.w, true}, Field{"dw", m.dw, false},
                           Field{"db", m.db, false}}) {
      std::string name = fmt::format("members[{}].{}", i, f.name);
      if (f.required && (!f.t || !f.t->defined()))
        GYRE_THROW(invalid_argument, "ops::{}: '{}' is {}; every member needs its dy and w", kOp,
                   name, f.t ? "undefined" : "a null pointer");
      all.push_back({std::move(name), f.t ? f.t : &none});
    }
  }
  const Device dev = group_device(all);
  const DType dt = group_dtype(all, x);
  const bool x16 = x.dtype() == DType::bf16;
  if (x16 && (dev != Device::cuda || !bf16_autocast() || dt != DType::f32))
    GYRE_THROW(invalid_argument,
               "ops::{}: 'x' is bf16, which only the CUDA backend takes under ops::Bf16Autocast "
               "with f32 weights and gradients (here: {}, autocast {}, {}); pass an f32 x",
               kOp, device_name(dev), bf16_autocast() ? "on" : "off", dtype_name(dt));
  if (dev == Device::cuda) require_cuda_f32(kOp, dt);

  // Shapes: all[0..1] are x, dx; member i's dy, w, dw, db are all[2 + 4i ..].
  const int64_t K = x.size(-1);
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
  if (dx.defined()) check_rows(kOp, "dx", dx, M, K);
  int64_t total_n = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const Named* n = &all[2 + 4 * i];
    const Tensor& w = *n[1].t;
    if (w.dim() != 2 || w.size(1) != K)
      GYRE_THROW(invalid_argument,
                 "ops::{}: '{}' has shape {}, expected [N, {}] (x is {}: its last dim is K)", kOp,
                 n[1].name, shape_str(w.shape()), K, shape_str(x.shape()));
    const int64_t N = w.size(0);
    total_n += N;
    check_rows(kOp, n[0].name.c_str(), *n[0].t, M, N);
    if (n[2].t->defined()) check_shape(kOp, n[2].name.c_str(), *n[2].t, {N, K});
    if (n[3].t->defined()) check_shape(kOp, n[3].name.c_str(), *n[3].t, {N});
  }

  if constexpr (kCuda)
    if (dev == Device::cuda && bf16_autocast() && M > 0 && K > 0 && total_n > 0) {
      Bf16WeightCache* cache = bf16_weight_cache();
      std::vector<cuda::LinearGroupBwdMember> cm(members.size());
      for (size_t i = 0; i < members.size(); ++i) {
        const LinearGroupMember& m = members[i];
        cuda::LinearGroupBwdMember& c = cm[i];
        c.dy = m.dy->f32();
        c.w = m.w->f32();
        c.n = m.w->size(0);
        // As linear_backward: the installed cache serves dX's bf16 weight.
        if (cache && dx.defined() && c.n > 0) c.w_bf16 = cache->bf16(*m.w);
        c.dw = m.dw && m.dw->defined() ? m.dw->f32() : nullptr;
        c.db = m.db && m.db->defined() ? m.db->f32() : nullptr;
      }
      return cuda::linear_group_bwd_autocast(cm.data(), int64_t(cm.size()), x16 ? nullptr : x.f32(),
                                             x16 ? x.data<uint16_t>() : nullptr, M, K,
                                             dx.defined() ? dx.f32() : nullptr, accumulate_dx);
    }
  // The composition (empty products under autocast too: linear_backward's own handling).
  for (size_t i = 0; i < members.size(); ++i) {
    const LinearGroupMember& m = members[i];
    Tensor no_dw, no_db;
    linear_backward(*m.dy, x, *m.w, dx, m.dw ? *m.dw : no_dw, m.db ? *m.db : no_db,
                    i == 0 ? accumulate_dx : true);
  }
}

}  // namespace gyre::ops
