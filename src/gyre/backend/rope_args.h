// The argument checks of the RoPE ops, written once: ops::rope_ (ops.cc), ops::rope_qk_ and
// ops::rope_qk_paged_kv_write_ (fused_rope_ops.cc). Internal to gyre_backend.
#pragma once
#include <initializer_list>

#include "gyre/backend/ops_args.h"

namespace gyre::ops::detail {

// What check_rope_args proved: the tensors' common device and float dtype, tokens T, head dim D.
struct RopeArgs {
  Device dev = Device::cpu;
  DType dt = DType::f32;
  int64_t T = 0, D = 0;
};

// The index and table tensors of a rotation of T tokens at head dim D (even): positions i32 [T],
// every entry a row of the tables; cos [P, D/2]; sin the shape of cos; on the device and in the
// float dtype of x0 (a tensor of the op, named in the errors). Throws before anything is modified.
// (check_rope_args' second half; alone for ops whose rotated tensors are not f32 tensors of their
// own, e.g. rope_attention_varlen_backward_packed.)
inline void check_rope_tables(const char* op, const Arg& x0, int64_t T, int64_t D,
                              const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  check_i32(op, "positions", positions);
  check_defined(op, "cos", cos);
  check_defined(op, "sin", sin);
  op_device(op, {x0, {"positions", &positions}, {"cos", &cos}, {"sin", &sin}});
  float_dtype(op, {x0, {"cos", &cos}, {"sin", &sin}});
  check_shape(op, "positions", positions, {T});
  if (!(cos.dim() == 2 && cos.size(1) == D / 2))
    GYRE_THROW(invalid_argument, "ops::{}: cos must be [P, D/2 = {}], got {}", op, D / 2,
               shape_str(cos.shape()));
  check_shape(op, "sin", sin, cos.shape());
  check_index_range(op, "position", positions, cos.size(0),
                    "the sequence is longer than the RoPE table; raise max_position_embeddings "
                    "or shorten the input");
}

// xs: the tensors to rotate (at least one), each [T, H_i, D] with the T and D of the first, D
// even; positions, cos and sin as check_rope_tables; all on one device with one float dtype.
// Throws (naming the tensor) before anything is modified.
inline RopeArgs check_rope_args(const char* op, std::initializer_list<Arg> xs,
                                const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  for (const Arg& a : xs) check_defined(op, a.name, *a.t);
  check_i32(op, "positions", positions);
  check_defined(op, "cos", cos);
  check_defined(op, "sin", sin);
  const Arg& x0 = *xs.begin();
  RopeArgs r;
  // Two passes because op_device / float_dtype take one list: the rotated tensors among
  // themselves, then the first of them against the index and table tensors (check_rope_tables
  // repeats these cheap checks; done here first to keep the order the errors come in).
  r.dev = op_device(op, xs);
  op_device(op, {x0, {"positions", &positions}, {"cos", &cos}, {"sin", &sin}});
  r.dt = float_dtype(op, xs);
  float_dtype(op, {x0, {"cos", &cos}, {"sin", &sin}});
  for (const Arg& a : xs)
    if (!(a.t->dim() == 3))
      GYRE_THROW(invalid_argument, "ops::{}: {} must be [T, H, D], got {}", op, a.name,
                 shape_str(a.t->shape()));
  r.T = x0.t->size(0);
  r.D = x0.t->size(2);
  for (const Arg& a : xs)
    if (!(a.t->size(0) == r.T && a.t->size(2) == r.D))
      GYRE_THROW(invalid_argument, "ops::{}: {} {} does not match {} {} in tokens and head dim", op,
                 a.name, shape_str(a.t->shape()), x0.name, shape_str(x0.t->shape()));
  if (!(r.D % 2 == 0)) GYRE_THROW(invalid_argument, "ops::{}: head dim {} must be even", op, r.D);
  check_rope_tables(op, x0, r.T, r.D, positions, cos, sin);
  return r;
}

}  // namespace gyre::ops::detail
