// ops::rope_attention_varlen and its backward (rope_attention_ops.h): rope_'s and
// attention_varlen's checks (rope_args.h, attention_args.h: the same errors as the composition,
// named for this op), then the fused bf16 path (backend/cuda/rope_attention_bf16.h) or the
// composition itself on copies of q and k.
//
// Which path: the bf16 kernels exactly where the composition's attention would run them —
// CUDA tensors, f32, an ops::Bf16Autocast scope, head dim 64 or 128
// (cuda::attention_autocast_supported). There the fused kernels are bitwise the composition (the
// CUDA header's contract); everywhere else the composition runs, so equality is by construction.
#include "gyre/backend/rope_attention_ops.h"

#include <initializer_list>
#include <vector>

#include "gyre/backend/attention_args.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/rope_attention_bf16.h"
#include "gyre/backend/linear_group_ops.h"  // kPackedColumnAlign
#include "gyre/backend/ops_args.h"
#include "gyre/backend/rope_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

// Whether attention_varlen / its backward would run the bf16 kernels for these tensors.
bool bf16_kernels(Device dev, DType dt, int64_t D) {
  if constexpr (kCuda)
    return dev == Device::cuda && dt == DType::f32 && bf16_autocast() &&
           cuda::attention_autocast_supported(D);
  return false;
}

// Why a bf16 tensor cannot be taken here (the bf16 kernels' conditions, and what this call has).
[[noreturn]] void throw_bf16_misuse(const char* op, const char* name, bool output, Device dev,
                                    DType dt, int64_t D) {
  GYRE_THROW(invalid_argument,
             "ops::{}: '{}' is bf16, which only the CUDA backend {} under ops::Bf16Autocast with "
             "f32 tensors and head dim 64 or 128 (here: {}, autocast {}, {}, head dim {}); {}",
             op, name, output ? "writes" : "reads", device_name(dev),
             bf16_autocast() ? "on" : "off", dtype_name(dt), D,
             output ? "pass an f32 out (or an undefined one: ops::attention_out_dtype)"
                    : "pass f32 tensors (the forward saves bf16 operands only on that path)");
}

// A backward operand for the CUDA glue: bf16 values as they are, or f32 ones to round.
cuda::Bf16Operand operand(const Tensor& t) {
  cuda::Bf16Operand o;
  if (t.dtype() == DType::bf16)
    o.bf16 = t.data<uint16_t>();
  else
    o.f32 = t.f32();
  return o;
}

}  // namespace

bool attention_bf16_kernels(Device dev, int64_t D) { return bf16_kernels(dev, DType::f32, D); }

DType attention_out_dtype(const Tensor& q) {
  // cuda::kGemvMaxRows is kFusedGemvMaxRows (fused_linear_ops.h): the rows o_proj's GEMV takes.
  if (q.defined() && q.dim() == 3 && q.size(0) > cuda::kGemvMaxRows &&
      bf16_kernels(q.device(), q.dtype(), q.size(2)))
    return DType::bf16;
  return q.dtype();
}

void rope_attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& positions, const Tensor& cos, const Tensor& sin,
                           const Tensor& cu_seqlens, float scale, Tensor& out, Tensor& lse,
                           RopeAttentionSaved* saved) {
  OpScope op_scope_("rope_attention_varlen");
  const char* op = "rope_attention_varlen";
  const Device dev = op_device(op, {{"q", &q},
                                    {"k", &k},
                                    {"v", &v},
                                    {"positions", &positions},
                                    {"cos", &cos},
                                    {"sin", &sin},
                                    {"cu_seqlens", &cu_seqlens},
                                    {"out", &out},
                                    {"lse", &lse}});
  // rope_'s checks on q and k (positions against the tables included), then attention_varlen's.
  check_rope_args(op, {{"q", &q}, {"k", &k}}, positions, cos, sin);
  const AttnDims a = check_attention(op, q, k, v, cu_seqlens, scale);
  const bool out16 = out.defined() && out.dtype() == DType::bf16;
  const Tensor none;
  const DType dt = float_dtype(
      op, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", out16 ? &none : &out}, {"lse", &lse}});
  const bool fused = bf16_kernels(dev, dt, a.D);
  if (out16 && !fused) throw_bf16_misuse(op, "out", true, dev, dt, a.D);
  if (dev == Device::cuda && !fused) {  // what the composition's ops would reject on the GPU
    require_cuda_f32(op, dt);
    require_cuda_head_dim(op, a.D);
  }
  prepare_out(op, "out", out, q.shape(), out16 ? DType::bf16 : dt, dev);
  prepare_out(op, "lse", lse, {a.T, a.Hq}, dt, dev);
  if constexpr (kCuda)
    if (fused) {
      uint16_t *qb = nullptr, *kb = nullptr, *vb = nullptr;  // null: the glue's scratch
      if (saved) {
        *saved = {Tensor::empty(q.shape(), DType::bf16, dev),
                  Tensor::empty(k.shape(), DType::bf16, dev),
                  Tensor::empty(v.shape(), DType::bf16, dev)};
        qb = saved->q.data<uint16_t>();
        kb = saved->k.data<uint16_t>();
        vb = saved->v.data<uint16_t>();
      }
      return cuda::rope_attention_fwd_bf16(
          q.f32(), k.f32(), v.f32(), positions.i32(), cos.f32(), sin.f32(), cu_seqlens.i32(), a.B,
          a.max_len, a.T, a.Hq, a.Hkv, a.D, scale, qb, kb, vb, out16 ? nullptr : out.f32(),
          out16 ? out.data<uint16_t>() : nullptr, lse.f32());
    }
  // The composition, on copies: the caller's q and k stay unrotated.
  Tensor qr = q.clone(), kr = k.clone();
  rope_(qr, positions, cos, sin);
  rope_(kr, positions, cos, sin);
  attention_varlen(qr, kr, v, cu_seqlens, scale, out, lse);
  if (saved) *saved = {qr, kr, v};
}

namespace {

// What check_backward proved: the device, the float dtype, the attention's dimensions, and whether
// the bf16 kernels run.
struct BackwardArgs {
  Device dev = Device::cpu;
  DType dt = DType::f32;
  AttnDims a;
  bool fused = false;
};

// rope_attention_varlen_backward's checks of its inputs, for it and its packed variant: one device
// over the inputs and `float_outputs` / `other_outputs`, every input defined, the saved operands'
// shapes and attention_varlen's checks on them, one float dtype over the float inputs and
// `float_outputs`, dout / out / lse shapes; bf16 inputs only on the bf16 kernels' path, and on
// CUDA only what the composition's ops take — except with `packed`, whose caller requires the bf16
// kernels' path itself (after its own argument checks).
BackwardArgs check_backward(const char* op, const Tensor& dout, const RopeAttentionSaved& saved,
                            const Tensor& out, const Tensor& lse, const Tensor& positions,
                            const Tensor& cos, const Tensor& sin, const Tensor& cu_seqlens,
                            float scale, std::initializer_list<Arg> float_outputs,
                            std::initializer_list<Arg> other_outputs, bool packed) {
  const Arg sq{"saved.q", &saved.q}, sk{"saved.k", &saved.k}, sv{"saved.v", &saved.v};
  const Arg a_dout{"dout", &dout}, a_out{"out", &out};
  std::vector<Arg> all = {a_dout,
                          sq,
                          sk,
                          sv,
                          a_out,
                          {"lse", &lse},
                          {"positions", &positions},
                          {"cos", &cos},
                          {"sin", &sin},
                          {"cu_seqlens", &cu_seqlens}};
  all.insert(all.end(), float_outputs);
  all.insert(all.end(), other_outputs);
  BackwardArgs b;
  b.dev = op_device(op, all);
  check_all_defined(op, {a_dout, sq, sk, sv, a_out, {"lse", &lse}});
  // The saved operands' shapes under their own names, then attention_varlen's checks on them.
  GYRE_CHECK(saved.q.dim() == 3, "ops::{}: 'saved.q' must be [T, Hq, D], got {}", op,
             shape_str(saved.q.shape()));
  GYRE_CHECK(saved.k.dim() == 3, "ops::{}: 'saved.k' must be [T, Hkv, D], got {}", op,
             shape_str(saved.k.shape()));
  check_shape(op, "saved.k", saved.k, {saved.q.size(0), saved.k.size(1), saved.q.size(2)});
  check_shape(op, "saved.v", saved.v, saved.k.shape());
  b.a = check_attention(op, saved.q, saved.k, saved.v, cu_seqlens, scale);
  // bf16 operands (the fused forward's saved ones, its bf16 out, o_proj's bf16 dx) only on the bf16
  // kernels' path; the float tensors share one dtype.
  const Tensor none;
  auto f = [&](const Arg& x) { return x.t->dtype() == DType::bf16 ? Arg{x.name, &none} : x; };
  std::vector<Arg> floats = {f(a_dout), f(sq), f(sk), f(sv), f(a_out), {"lse", &lse}};
  floats.insert(floats.end(), float_outputs);
  b.dt = float_dtype(op, floats);
  b.fused = bf16_kernels(b.dev, b.dt, b.a.D);
  if (!packed) {  // (the packed variant has its own error off the bf16 kernels' path)
    for (const Arg& x : {a_dout, sq, sk, sv, a_out})
      if (x.t->dtype() == DType::bf16 && !b.fused)
        throw_bf16_misuse(op, x.name, false, b.dev, b.dt, b.a.D);
    if (b.dev == Device::cuda && !b.fused) {
      require_cuda_f32(op, b.dt);
      require_cuda_head_dim(op, b.a.D);
    }
  }
  check_shape(op, "dout", dout, saved.q.shape());
  check_shape(op, "out", out, saved.q.shape());
  GYRE_CHECK(lse.numel() == b.a.T * b.a.Hq, "ops::{}: lse has shape {}, expected [{}, {}]", op,
             shape_str(lse.shape()), b.a.T, b.a.Hq);
  return b;
}

int64_t round_up_cols(int64_t n) {
  return (n + kPackedColumnAlign - 1) / kPackedColumnAlign * kPackedColumnAlign;
}

}  // namespace

void rope_attention_varlen_backward(const Tensor& dout, const RopeAttentionSaved& saved,
                                    const Tensor& out, const Tensor& lse, const Tensor& positions,
                                    const Tensor& cos, const Tensor& sin, const Tensor& cu_seqlens,
                                    float scale, Tensor& dq, Tensor& dk, Tensor& dv) {
  OpScope op_scope_("rope_attention_varlen_backward");
  const char* op = "rope_attention_varlen_backward";
  const BackwardArgs b =
      check_backward(op, dout, saved, out, lse, positions, cos, sin, cu_seqlens, scale,
                     {{"dq", &dq}, {"dk", &dk}, {"dv", &dv}}, {}, /*packed=*/false);
  const AttnDims& a = b.a;
  // The gradients in local handles until every check passed: a rejected call leaves the caller's
  // undefined dq / dk / dv undefined.
  Tensor gq = dq, gk = dk, gv = dv;
  prepare_out(op, "dq", gq, saved.q.shape(), b.dt, b.dev);
  prepare_out(op, "dk", gk, saved.k.shape(), b.dt, b.dev);
  prepare_out(op, "dv", gv, saved.v.shape(), b.dt, b.dev);
  // rope_'s checks for the two inverse rotations (positions against the tables included).
  check_rope_args(op, {{"dq", &gq}, {"dk", &gk}}, positions, cos, sin);
  dq = gq, dk = gk, dv = gv;
  if constexpr (kCuda)
    if (b.fused)
      return cuda::rope_attention_bwd_bf16(
          operand(dout), operand(saved.q), operand(saved.k), operand(saved.v), operand(out),
          lse.f32(), positions.i32(), cos.f32(), sin.f32(), cu_seqlens.i32(), a.B, a.max_len, a.T,
          a.Hq, a.Hkv, a.D, scale, dq.f32(), dk.f32(), dv.f32());
  attention_varlen_backward(dout, saved.q, saved.k, saved.v, out, lse, cu_seqlens, scale, dq, dk,
                            dv);
  rope_(dq, positions, cos, sin, /*inverse=*/true);
  rope_(dk, positions, cos, sin, /*inverse=*/true);
}

RopePackedLayout rope_packed_layout(int64_t Hq, int64_t Hkv, int64_t D) {
  GYRE_CHECK(Hq >= 0 && Hkv >= 0 && D >= 0,
             "ops::rope_packed_layout: negative size (Hq {}, Hkv {}, D {})", Hq, Hkv, D);
  RopePackedLayout l;
  l.col_q = 0;
  l.col_k = l.col_q + round_up_cols(Hq * D);
  l.col_v = l.col_k + round_up_cols(Hkv * D);
  l.ld = l.col_v + round_up_cols(Hkv * D);
  return l;
}

void rope_attention_varlen_backward_packed(const Tensor& dout, const RopeAttentionSaved& saved,
                                           const Tensor& out, const Tensor& lse,
                                           const Tensor& positions, const Tensor& cos,
                                           const Tensor& sin, const Tensor& cu_seqlens, float scale,
                                           const RopePackedLayout& layout, Tensor& dqkv,
                                           Tensor* dbq, Tensor* dbk, Tensor* dbv) {
  OpScope op_scope_("rope_attention_varlen_backward_packed");
  const char* op = "rope_attention_varlen_backward_packed";
  const Tensor none;
  Tensor* const db[3] = {dbq && dbq->defined() ? dbq : nullptr,
                         dbk && dbk->defined() ? dbk : nullptr,
                         dbv && dbv->defined() ? dbv : nullptr};
  const char* const db_name[3] = {"dbq", "dbk", "dbv"};
  const BackwardArgs b =
      check_backward(op, dout, saved, out, lse, positions, cos, sin, cu_seqlens, scale,
                     {{"dbq", db[0] ? db[0] : &none},
                      {"dbk", db[1] ? db[1] : &none},
                      {"dbv", db[2] ? db[2] : &none}},
                     {{"dqkv", &dqkv}}, /*packed=*/true);
  const AttnDims& a = b.a;
  // The inverse rotations' tables (rope_'s checks, positions against the tables included), against
  // lse: the f32 tensor of the call that is always there.
  check_rope_tables(op, {"lse", &lse}, a.T, a.D, positions, cos, sin);
  // The layout: 256-byte aligned member slices (linear_group_backward_packed's condition), inside
  // the row, no two members sharing a column.
  const char* const member[3] = {"q", "k", "v"};
  const int64_t col[3] = {layout.col_q, layout.col_k, layout.col_v};
  const int64_t n[3] = {a.Hq * a.D, a.Hkv * a.D, a.Hkv * a.D};
  if (layout.ld <= 0 || layout.ld % kPackedColumnAlign != 0)
    GYRE_THROW(invalid_argument,
               "ops::{}: layout.ld is {}; the packed width must be a positive multiple of {} (256 "
               "bytes: every member's column slice stays aligned; ops::rope_packed_layout gives "
               "linear_group_backward's layout)",
               op, layout.ld, kPackedColumnAlign);
  for (int i = 0; i < 3; ++i) {
    if (col[i] < 0 || col[i] % kPackedColumnAlign != 0 || col[i] + n[i] > layout.ld)
      GYRE_THROW(invalid_argument,
                 "ops::{}: layout.col_{} is {} ({} columns of {}): it must be a non-negative "
                 "multiple of {} with the member's columns inside ld {}",
                 op, member[i], col[i], n[i], member[i], kPackedColumnAlign, layout.ld);
    for (int j = 0; j < i; ++j)
      if (col[i] < col[j] + n[j] && col[j] < col[i] + n[i])
        GYRE_THROW(invalid_argument,
                   "ops::{}: layout.col_{} = {} ({} columns) overlaps layout.col_{} = {} ({} "
                   "columns); the members need columns of their own",
                   op, member[i], col[i], n[i], member[j], col[j], n[j]);
  }
  if (dqkv.defined()) {
    if (dqkv.dtype() != DType::bf16)
      GYRE_THROW(invalid_argument, "ops::{}: output 'dqkv' is {}, expected bf16", op,
                 dtype_name(dqkv.dtype()));
    check_rows(op, "dqkv", dqkv, a.T, layout.ld);
  }
  for (int i = 0; i < 3; ++i)
    if (db[i]) check_shape(op, db_name[i], *db[i], {n[i]});
  if (!b.fused)
    GYRE_THROW(invalid_argument,
               "ops::{}: runs only where the attention backward runs the bf16 kernels — CUDA, f32 "
               "tensors, ops::Bf16Autocast, head dim 64 or 128 (here: {}, autocast {}, {}, head "
               "dim {}); call rope_attention_varlen_backward, then linear_group_backward on its "
               "dq/dk/dv",
               op, device_name(b.dev), bf16_autocast() ? "on" : "off", dtype_name(b.dt), a.D);
  // Every check passed: the buffer (allocated when undefined), then the kernels.
  if (!dqkv.defined()) dqkv = Tensor::empty({a.T, layout.ld}, DType::bf16, b.dev);
  if constexpr (kCuda) {
    cuda::PackedDqkv p;
    p.dst = dqkv.data<uint16_t>();
    p.ld = layout.ld;
    for (int i = 0; i < 3; ++i) {
      p.col[i] = col[i];
      p.db[i] = db[i] ? db[i]->f32() : nullptr;
    }
    cuda::rope_attention_bwd_bf16_packed(operand(dout), operand(saved.q), operand(saved.k),
                                         operand(saved.v), operand(out), lse.f32(), positions.i32(),
                                         cos.f32(), sin.f32(), cu_seqlens.i32(), a.B, a.max_len,
                                         a.T, a.Hq, a.Hkv, a.D, scale, p);
  }
}

}  // namespace gyre::ops
