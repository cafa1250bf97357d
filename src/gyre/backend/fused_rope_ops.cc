// ops::rope_qk_ and ops::rope_qk_paged_kv_write_ (fused_rope_ops.h): rope_'s checks for the
// rotated tensors (rope_args.h, shared with ops::rope_), then one CUDA launch
// (backend/cuda/rope_pair.h, backend/cuda/rope_kv_write.h) or the unfused ops.
#include "gyre/backend/fused_rope_ops.h"

#include "gyre/backend/cuda/rope_kv_write.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/rope_pair.h"
#include "gyre/backend/ops_args.h"
#include "gyre/backend/paged_ops.h"
#include "gyre/backend/rope_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

void rope_qk_(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  OpScope op_scope_("rope_qk_");
  const char* op = "rope_qk_";
  const RopeArgs ra = check_rope_args(op, {{"q", &q}, {"k", &k}}, positions, cos, sin);
  if constexpr (kCuda)
    if (ra.dev == Device::cuda) {
      require_cuda_f32(op, ra.dt);
      return cuda::rope_qk(q.f32(), q.size(1), k.f32(), k.size(1), ra.T, ra.D, positions.i32(),
                           cos.f32(), sin.f32());
    }
  rope_(q, positions, cos, sin);
  rope_(k, positions, cos, sin);
}

void rope_qk_paged_kv_write_(Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                             const Tensor& cos, const Tensor& sin, const Tensor& slot_mapping,
                             Tensor& k_cache, Tensor& v_cache) {
  OpScope op_scope_("rope_qk_paged_kv_write_");
  const char* op = "rope_qk_paged_kv_write_";
  const RopeArgs ra = check_rope_args(op, {{"q", &q}, {"k", &k}}, positions, cos, sin);
  check_paged_kv_write(op, k, v, slot_mapping, k_cache, v_cache);
  if constexpr (kCuda)
    if (ra.dev == Device::cuda && k_cache.dtype() == DType::bf16) {
      require_cuda_f32(op, ra.dt);
      return cuda::rope_qk_paged_kv_write_bf16(
          q.f32(), q.size(1), k.f32(), v.f32(), k.size(1), ra.T, ra.D, positions.i32(), cos.f32(),
          sin.f32(), slot_mapping.i32(), k_cache.data<uint16_t>(), v_cache.data<uint16_t>());
    }
  // The unfused ops (CPU, or an f32 cache), on a copy of k: the caller's k stays as it was.
  Tensor k_rot = k.clone();
  rope_qk_(q, k_rot, positions, cos, sin);
  paged_kv_write(k_rot, v, slot_mapping, k_cache, v_cache);
}

}  // namespace gyre::ops
