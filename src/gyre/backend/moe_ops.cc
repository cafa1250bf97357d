// MoE dispatch ops (moe_ops.h): argument checks, then the CPU reference (backend/cpu/
// moe_dispatch.h) or the CUDA kernels (backend/cuda/moe_dispatch.h). Index data is checked here
// once, on a host copy for device tensors, unless an ops::KnownIndices range already proves it.
#include "gyre/backend/moe_ops.h"

#include "gyre/backend/cpu/moe_dispatch.h"
#include "gyre/backend/cuda/moe_dispatch.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

// i32 output: allocated when undefined, else checked to hold `numel` i32 values on `dev`.
void prepare_index_out(const char* op, const char* name, Tensor& t, const Shape& shape,
                       Device dev) {
  if (!t.defined()) {
    t = Tensor::empty(shape, DType::i32, dev);
    return;
  }
  check_i32(op, name, t);
  GYRE_CHECK(t.numel() == shape_numel(shape), "ops::{}: output '{}' has shape {}, expected {}", op,
             name, shape_str(t.shape()), shape_str(shape));
}

// weights [T, k]: gives the token count and k of the unpermute ops.
void check_weights_2d(const char* op, const Tensor& w) {
  GYRE_CHECK(w.dim() == 2, "ops::{}: weights must be [T, k], got {}", op, shape_str(w.shape()));
}

}  // namespace

void moe_permute(const Tensor& indices, int64_t num_experts, Tensor& perm, Tensor& pos,
                 Tensor& rows, Tensor& offsets) {
  OpScope op_scope_("moe_permute");
  const char* op = "moe_permute";
  check_i32(op, "indices", indices);
  const Device dev = op_device(op, {{"indices", &indices},
                                    {"perm", &perm},
                                    {"pos", &pos},
                                    {"rows", &rows},
                                    {"offsets", &offsets}});
  if (indices.dim() != 2)
    GYRE_THROW(invalid_argument,
               "ops::moe_permute: indices must be the router's [T, k] expert indices, got shape {}",
               shape_str(indices.shape()));
  if (num_experts < 1 || num_experts > cuda::kMoeMaxExperts)
    GYRE_THROW(invalid_argument,
               "ops::moe_permute: num_experts = {} is outside [1, {}]; check num_experts in the "
               "model config",
               num_experts, cuda::kMoeMaxExperts);
  const int64_t T = indices.size(0), k = indices.size(1), N = T * k;
  if (k < 1)
    GYRE_THROW(invalid_argument, "ops::moe_permute: indices {} have no expert per token (k = 0)",
               shape_str(indices.shape()));
  if (N > int64_t(INT32_MAX))
    GYRE_THROW(invalid_argument,
               "ops::moe_permute: {} assignments do not fit the i32 positions; route fewer tokens "
               "per call",
               N);
  check_index_range(op, "expert index", indices, num_experts,
                    "pass the indices moe_route produced for this number of experts");
  prepare_index_out(op, "perm", perm, {N}, dev);
  prepare_index_out(op, "pos", pos, {T, k}, dev);
  prepare_index_out(op, "rows", rows, {N}, dev);
  prepare_index_out(op, "offsets", offsets, {num_experts + 1}, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda)
      return cuda::moe_permute(indices.i32(), N, k, num_experts, perm.i32(), pos.i32(), rows.i32(),
                               offsets.i32());
  cpu::moe_permute(indices.i32(), N, k, num_experts, perm.i32(), pos.i32(), rows.i32(),
                   offsets.i32());
}

void moe_unpermute(const Tensor& y, const Tensor& pos, const Tensor& weights, Tensor& out) {
  OpScope op_scope_("moe_unpermute");
  const char* op = "moe_unpermute";
  check_defined(op, "y", y);
  check_i32(op, "pos", pos);
  const Device dev =
      op_device(op, {{"y", &y}, {"pos", &pos}, {"weights", &weights}, {"out", &out}});
  DType dt = float_dtype(op, {{"y", &y}, {"weights", &weights}, {"out", &out}});
  GYRE_CHECK(pos.dim() == 2, "ops::{}: pos must be [T, k] (moe_permute's), got {}", op,
             shape_str(pos.shape()));
  const int64_t T = pos.size(0), k = pos.size(1), N = T * k;
  GYRE_CHECK(y.dim() == 2 && y.size(0) == N,
             "ops::{}: y has shape {}, expected [{}, H] (one row per assignment of pos {})", op,
             shape_str(y.shape()), N, shape_str(pos.shape()));
  const int64_t H = y.size(1);
  if (weights.defined()) check_shape(op, "weights", weights, {T, k});
  check_index_range(op, "position", pos, N, "pass the pos tensor moe_permute produced");
  prepare_out(op, "out", out, {T, H}, dt, dev);
  check_shape(op, "out", out, {T, H});
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::moe_unpermute(y.f32(), pos.i32(), ptr<float>(weights), T, k, H, out.f32());
    }
  dispatch(dt, [&](auto t) {
    using V = decltype(t);
    cpu::moe_unpermute<V>(ptr<V>(y), pos.i32(), ptr<V>(weights), T, k, H, ptr<V>(out));
  });
}

void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& perm,
                            const Tensor& weights, Tensor& dy, Tensor& dweights) {
  OpScope op_scope_("moe_unpermute_backward");
  const char* op = "moe_unpermute_backward";
  check_defined(op, "dout", dout);
  check_defined(op, "weights", weights);
  check_i32(op, "perm", perm);
  const Device dev = op_device(op, {{"dout", &dout},
                                    {"y", &y},
                                    {"perm", &perm},
                                    {"weights", &weights},
                                    {"dy", &dy},
                                    {"dweights", &dweights}});
  DType dt = float_dtype(
      op,
      {{"dout", &dout}, {"y", &y}, {"weights", &weights}, {"dy", &dy}, {"dweights", &dweights}});
  check_weights_2d(op, weights);
  const int64_t T = weights.size(0), k = weights.size(1), N = T * k;
  GYRE_CHECK(dout.dim() == 2 && dout.size(0) == T,
             "ops::{}: dout has shape {}, expected [{}, H] (one row per token of weights {})", op,
             shape_str(dout.shape()), T, shape_str(weights.shape()));
  const int64_t H = dout.size(1);
  GYRE_CHECK(perm.numel() == N, "ops::{}: perm has {} elements, expected T·k = {}", op,
             perm.numel(), N);
  if (dweights.defined()) {
    GYRE_CHECK(y.defined(), "ops::{}: dweights needs y (the expert outputs)", op);
    check_shape(op, "dweights", dweights, {T, k});
  }
  if (y.defined()) check_shape(op, "y", y, {N, H});
  if (dy.defined()) check_shape(op, "dy", dy, {N, H});
  check_index_range(op, "slot", perm, N, "pass the perm tensor moe_permute produced");
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::moe_unpermute_bwd(dout.f32(), ptr<float>(y), perm.i32(), weights.f32(), T, k, H,
                                     ptr<float>(dy), ptr<float>(dweights));
    }
  dispatch(dt, [&](auto t) {
    using V = decltype(t);
    cpu::moe_unpermute_bwd<V>(ptr<V>(dout), ptr<V>(y), perm.i32(), ptr<V>(weights), T, k, H,
                              ptr<V>(dy), ptr<V>(dweights));
  });
}

}  // namespace gyre::ops
