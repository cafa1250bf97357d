// ops::linear_group_backward (linear_group_ops.h): every argument checked up front (so the
// composition cannot fail half-way), then either the packed autocast path
// (backend/cuda/pack_bf16.h: CUDA, f32, under ops::Bf16Autocast, a non-empty product) or the
// composition of linear_backward calls itself — bitwise by construction there.
// ops::linear_group_backward_packed: the same checks for a bf16 dy that comes packed, then the
// packed path's GEMMs (cuda::linear_group_bwd_packed) on it.
#include "gyre/backend/linear_group_ops.h"

#include <fmt/format.h>

#include <string>
#include <string_view>
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

// The group's tensors as op arguments (the names stay owned by `all`).
std::vector<Arg> as_args(const std::vector<Named>& all) {
  std::vector<Arg> args;
  args.reserve(all.size());
  for (const Named& a : all) args.push_back({a.name.c_str(), a.t});
  return args;
}

// The device of the defined tensors (op_device over the whole group).
Device group_device(const char* op, const std::vector<Named>& all) {
  return op_device(op, as_args(all));
}

// The one float dtype (float_dtype) of the defined tensors but a bf16 x, which the caller checks.
// A bf16 dy gets its own message: this op rounds dy itself.
DType group_dtype(const char* op, const std::vector<Named>& all, const Tensor& x) {
  const Tensor none;
  std::vector<Arg> args = as_args(all);
  for (Arg& a : args) {
    if (a.t == &x && x.dtype() == DType::bf16) a.t = &none;
    if (a.t->defined() && a.t->dtype() == DType::bf16 && std::string_view(a.name).ends_with(".dy"))
      GYRE_THROW(invalid_argument,
                 "ops::{}: '{}' is bf16, but this op rounds the members' f32 dy to bf16 itself "
                 "(one packed operand); pass the f32 gradient, or call linear_backward for a "
                 "member whose dy is already bf16",
                 op, a.name);
  }
  return float_dtype(op, args);
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
  const Device dev = group_device(kOp, all);
  const DType dt = group_dtype(kOp, all, x);
  const bool x16 = x.dtype() == DType::bf16;
  if (x16 && (dev != Device::cuda || !bf16_autocast() || dt != DType::f32))
    GYRE_THROW(invalid_argument,
               "ops::{}: 'x' is bf16, which only the CUDA backend takes under ops::Bf16Autocast "
               "with f32 weights and gradients (here: {}, autocast {}, {}); pass an f32 x",
               kOp, device_name(dev), bf16_autocast() ? "on" : "off", dtype_name(dt));
  if (dev == Device::cuda) require_cuda_f32(kOp, dt);

  // Shapes: all[0..1] are x, dx; member i's dy, w, dw, db are all[2 + 4i ..].
  const int64_t K = x.size(-1);
  const int64_t M = leading_rows(x);
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
        // Deferred zeros (Gradients::zero) are claimed, not written: the dW GEMM overwrites.
        c.dw_overwrite = c.n > 0 && m.dw && m.dw->claim_pending_zero();
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

void linear_group_backward_packed(const Tensor& dy_packed,
                                  std::span<const LinearGroupPackedMember> members, const Tensor& x,
                                  Tensor& dx, bool accumulate_dx) {
  static_assert(kPackedColumnAlign == cuda::kPackAlign);
  constexpr const char* op = "linear_group_backward_packed";
  OpScope op_scope_(op);
  if (members.empty())
    GYRE_THROW(invalid_argument,
               "ops::{}: no members; pass at least one {{w, dw, db, col}} (one per linear over x)",
               op);
  for (const auto& [name, t] : {std::pair{"dy_packed", &dy_packed}, std::pair{"x", &x}})
    if (!t->defined()) GYRE_THROW(invalid_argument, "ops::{}: input '{}' is undefined", op, name);
  if (x.dim() < 1) GYRE_THROW(invalid_argument, "ops::{}: input 'x' is a scalar", op);
  // all: x, dx, then member i's w, dw at [2 + 2i ..]; dy_packed is checked on its own (bf16).
  std::vector<Named> all = {{"x", &x}, {"dx", &dx}};
  const Tensor none;
  for (size_t i = 0; i < members.size(); ++i) {
    const LinearGroupPackedMember& m = members[i];
    if (!m.w || !m.w->defined())
      GYRE_THROW(invalid_argument, "ops::{}: 'members[{}].w' is {}; every member needs its w", op,
                 i, m.w ? "undefined" : "a null pointer");
    if (m.db && m.db->defined())
      GYRE_THROW(invalid_argument,
                 "ops::{}: 'members[{}].db' is requested, but a bias gradient sums the f32 dy and "
                 "this op only has its bf16 rounding; call linear_group_backward with the f32 dy "
                 "for a group with biases",
                 op, i);
    all.push_back({fmt::format("members[{}].w", i), m.w});
    all.push_back({fmt::format("members[{}].dw", i), m.dw ? m.dw : &none});
  }
  all.push_back({"dy_packed", &dy_packed});
  const Device dev = group_device(op, all);
  all.pop_back();
  if (dev != Device::cuda || !bf16_autocast())
    GYRE_THROW(invalid_argument,
               "ops::{}: runs only on CUDA under ops::Bf16Autocast, where a bf16 dy is autocast's "
               "GEMM operand (here: {}, autocast {}); call linear_group_backward with the f32 dy",
               op, device_name(dev), bf16_autocast() ? "on" : "off");
  if (dy_packed.dtype() != DType::bf16)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'dy_packed' is {}, expected bf16 (for an f32 dy call "
               "linear_group_backward, which packs it)",
               op, dtype_name(dy_packed.dtype()));
  require_cuda_f32(op, group_dtype(op, all, x));  // f32 weights and gradients; x f32 or bf16

  const int64_t K = x.size(-1);
  const int64_t rows = leading_rows(x);  // M
  const int64_t ld = dy_packed.dim() >= 1 ? dy_packed.size(-1) : 0;
  check_rows(op, "dy_packed", dy_packed, rows, ld);
  if (ld % kPackedColumnAlign != 0)
    GYRE_THROW(invalid_argument,
               "ops::{}: 'dy_packed' is {} wide; the packed width must be a multiple of {} (256 "
               "bytes: every member's column slice stays aligned)",
               op, ld, kPackedColumnAlign);
  if (dx.defined()) check_rows(op, "dx", dx, rows, K);
  std::vector<cuda::PackedBwdMember> cm(members.size());
  int64_t end = 0;   // the previous member's last column + 1
  bool any = false;  // a member with N > 0
  for (size_t i = 0; i < members.size(); ++i) {
    const LinearGroupPackedMember& m = members[i];
    const Tensor& w = *m.w;
    if (w.dim() != 2 || w.size(1) != K)
      GYRE_THROW(invalid_argument,
                 "ops::{}: 'members[{}].w' has shape {}, expected [N, {}] (x is {}: its last dim "
                 "is K)",
                 op, i, shape_str(w.shape()), K, shape_str(x.shape()));
    const int64_t N = w.size(0);
    const bool has_dw = m.dw && m.dw->defined();
    if (has_dw) check_shape(op, all[2 + 2 * i + 1].name.c_str(), *m.dw, {N, K});
    if (m.col < 0 || m.col % kPackedColumnAlign != 0 || m.col < end || m.col + N > ld)
      GYRE_THROW(invalid_argument,
                 "ops::{}: 'members[{}].col' is {} (N {}): it must be a multiple of {}, at or "
                 "past the previous member's columns (which end at {}; members go in increasing "
                 "col) and leave room for N columns in dy_packed's {}",
                 op, i, m.col, N, kPackedColumnAlign, end, ld);
    if (N > 0) end = m.col + N, any = true;
    cm[i] = {nullptr, nullptr, N, m.col, nullptr, false};
  }

  // Empty products: dx is overwritten with zeros (no member has columns), dw gets nothing — as
  // the per-member linear_backward calls on bf16 dy slices would do.
  if (rows == 0 || K == 0 || !any) {
    if (dx.defined() && !accumulate_dx) dx.zero();
    return;
  }
  if constexpr (kCuda) {
    Bf16WeightCache* cache = bf16_weight_cache();
    for (size_t i = 0; i < members.size(); ++i) {
      // dW after the empty-product return (a claimed gradient must be written): deferred zeros
      // (Gradients::zero) are claimed and the GEMM overwrites; f32() would write them first.
      const LinearGroupPackedMember& m = members[i];
      if (m.dw && m.dw->defined()) {
        cm[i].dw_overwrite = cm[i].n > 0 && m.dw->claim_pending_zero();
        cm[i].dw = m.dw->f32();
      }
      cm[i].w = members[i].w->f32();
      // As linear_backward: the installed cache serves dX's bf16 weight.
      if (cache && dx.defined() && cm[i].n > 0) cm[i].w_bf16 = cache->bf16(*members[i].w);
    }
    const bool x16 = x.dtype() == DType::bf16;
    cuda::linear_group_bwd_packed(dy_packed.data<uint16_t>(), ld, cm.data(), int64_t(cm.size()),
                                  x16 ? nullptr : x.f32(), x16 ? x.data<uint16_t>() : nullptr, rows,
                                  K, dx.defined() ? dx.f32() : nullptr, accumulate_dx);
  }
}

}  // namespace gyre::ops
