// Tensor-parallel helper ops (tp_ops.h): argument checks, then the CUDA kernels of
// backend/cuda/tp_rows.cu or the CPU loops below.
#include "gyre/backend/tp_ops.h"

#include <cstring>

#include "gyre/backend/cuda/tp_rows.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using detail::kCuda;

void embedding_shard(const Tensor& ids, const Tensor& table, int64_t begin, Tensor& out) {
  detail::OpScope op_scope_("embedding_shard");
  const char* op = "embedding_shard";
  detail::check_i32(op, "ids", ids);
  detail::check_defined(op, "table", table);
  const Device dev = detail::op_device(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  GYRE_CHECK(table.dim() == 2 && table.dtype() == DType::f32,
             "ops::embedding_shard: table must be f32 [V_local, H], got {} {}",
             dtype_name(table.dtype()), shape_str(table.shape()));
  const int64_t T = ids.numel(), V = table.size(0), H = table.size(1);
  detail::prepare_out(op, "out", out, {T, H}, DType::f32, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda)
      return cuda::embedding_shard(ids.i32(), T, table.f32(), V, H, begin, out.f32());
  const int32_t* id = ids.i32();
  const float* w = table.f32();
  float* o = out.f32();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t local = int64_t(id[t]) - begin;
    if (local >= 0 && local < V)
      for (int64_t h = 0; h < H; ++h) o[t * H + h] = w[local * H + h] + 0.0f;
    else
      std::memset(o + t * H, 0, size_t(H) * sizeof(float));
  }
}

void interleave_blocks(const Tensor& blocks, Tensor& out) {
  detail::OpScope op_scope_("interleave_blocks");
  const char* op = "interleave_blocks";
  detail::check_defined(op, "blocks", blocks);
  const Device dev = detail::op_device(op, {{"blocks", &blocks}, {"out", &out}});
  GYRE_CHECK(blocks.dim() == 3 && blocks.dtype() == DType::f32,
             "ops::interleave_blocks: blocks must be f32 [n, R, c], got {} {}",
             dtype_name(blocks.dtype()), shape_str(blocks.shape()));
  const int64_t n = blocks.size(0), R = blocks.size(1), c = blocks.size(2);
  detail::prepare_out(op, "out", out, {R, n * c}, DType::f32, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) return cuda::interleave_blocks(blocks.f32(), n, R, c, out.f32());
  const float* src = blocks.f32();
  float* dst = out.f32();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < R; ++i)
      std::memcpy(dst + (i * n + r) * c, src + (r * R + i) * c, size_t(c) * sizeof(float));
}

}  // namespace gyre::ops
