// ops::rope_qk_ (fused_rope_ops.h): rope_'s checks for both tensors, then one CUDA launch
// (backend/cuda/rope_pair.h) or the two CPU rope_ calls.
#include "gyre/backend/fused_rope_ops.h"

#include "gyre/backend/cuda/rope_pair.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

void rope_qk_(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  OpScope op_scope_("rope_qk_");
  const char* op = "rope_qk_";
  check_defined(op, "q", q);
  check_defined(op, "k", k);
  check_i32(op, "positions", positions);
  check_defined(op, "cos", cos);
  check_defined(op, "sin", sin);
  const Device dev = op_device(
      op, {{"q", &q}, {"k", &k}, {"positions", &positions}, {"cos", &cos}, {"sin", &sin}});
  const DType dt = float_dtype(op, {{"q", &q}, {"k", &k}, {"cos", &cos}, {"sin", &sin}});
  if (q.dim() != 3 || k.dim() != 3)
    GYRE_THROW(invalid_argument, "ops::{}: q and k must be [T, H, D], got q {} and k {}", op,
               shape_str(q.shape()), shape_str(k.shape()));
  const int64_t T = q.size(0), Hq = q.size(1), Hkv = k.size(1), D = q.size(2);
  if (k.size(0) != T || k.size(2) != D)
    GYRE_THROW(invalid_argument, "ops::{}: k {} does not match q {} in tokens and head dim", op,
               shape_str(k.shape()), shape_str(q.shape()));
  if (D % 2 != 0) GYRE_THROW(invalid_argument, "ops::{}: head dim {} must be even", op, D);
  check_shape(op, "positions", positions, {T});
  if (cos.dim() != 2 || cos.size(1) != D / 2)
    GYRE_THROW(invalid_argument, "ops::{}: cos must be [P, D/2 = {}], got {}", op, D / 2,
               shape_str(cos.shape()));
  check_shape(op, "sin", sin, cos.shape());
  check_index_range(op, "position", positions, cos.size(0),
                    "the sequence is longer than the RoPE table; raise max_position_embeddings "
                    "or shorten the input");
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::rope_qk(q.f32(), Hq, k.f32(), Hkv, T, D, positions.i32(), cos.f32(), sin.f32());
    }
  rope_(q, positions, cos, sin);
  rope_(k, positions, cos, sin);
}

}  // namespace gyre::ops
