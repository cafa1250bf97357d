// ops::rope_qk_ and ops::rope_qk_paged_kv_write_ (fused_rope_ops.h): rope_'s checks for the
// rotated tensors (rope_args.h, shared with ops::rope_), then one CUDA launch
// (backend/cuda/rope_pair.h, backend/cuda/rope_kv_write.h) or the unfused ops.
#include "gyre/backend/fused_rope_ops.h"

#include "gyre/backend/cuda/paged_bf16.h"     // declarations only; linked when GYRE_HAVE_CUDA
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

bool rope_paged_attention_fuses(Device device, DType cache_dtype, int64_t Hq, int64_t Hkv,
                                int64_t D, int64_t B, int64_t T, int64_t max_q_len) {
  if constexpr (kCuda)
    return device == Device::cuda && cache_dtype == DType::bf16 && B >= 1 && T == B &&
           max_q_len == 1 && cuda::rope_paged_attention_bf16_supported(Hq, Hkv, D);
  return false;
}

void rope_paged_attention_(Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                           const Tensor& cos, const Tensor& sin, const Tensor& slot_mapping,
                           Tensor& k_cache, Tensor& v_cache, const Tensor& cu_seqlens_q,
                           const Tensor& kv_lens, const Tensor& page_indptr,
                           const Tensor& page_indices, float scale, Tensor& out,
                           bool slots_verified) {
  OpScope op_scope_("rope_paged_attention_");
  const char* op = "rope_paged_attention_";
  // Every check of the two ops, before anything changes.
  const RopeArgs ra = check_rope_args(op, {{"q", &q}, {"k", &k}}, positions, cos, sin);
  check_paged_kv_write(op, k, v, slot_mapping, k_cache, v_cache);
  const PagedLayoutStats st = check_paged_attention(op, q, k_cache, v_cache, cu_seqlens_q, kv_lens,
                                                    page_indptr, page_indices, out);
  const int64_t B = cu_seqlens_q.numel() - 1, Hq = q.size(1), Hkv = k.size(1);
  bool fuse =
      rope_paged_attention_fuses(ra.dev, k_cache.dtype(), Hq, Hkv, ra.D, B, ra.T, st.max_q_len);
  // A recorded layout vouches for the page tables only, not for slot_mapping: without the
  // caller's word, the two ops (no host copy inside a recorded step).
  if (fuse && !slots_verified && st.recorded) fuse = false;
  if (fuse && !slots_verified) {  // no recorded layout: check host copies
    const auto host = [](const Tensor& t) { return t.to(Device::cpu); };
    const Tensor cu_h = host(cu_seqlens_q), lens_h = host(kv_lens), ip_h = host(page_indptr);
    const Tensor pages_h = host(page_indices), slots_h = host(slot_mapping);
    fuse = decode_slots_match_pages(cu_h.i32(), lens_h.i32(), ip_h.i32(), pages_h.i32(),
                                    slots_h.i32(), B, k_cache.size(1));
  }
  if constexpr (kCuda)
    if (fuse) {
      require_cuda_f32(op, ra.dt);
      return cuda::rope_paged_attention_bf16_decode(
          q.f32(), k.f32(), v.f32(), positions.i32(), cos.f32(), sin.f32(), slot_mapping.i32(),
          k_cache.data<uint16_t>(), v_cache.data<uint16_t>(), cu_seqlens_q.i32(), kv_lens.i32(),
          page_indptr.i32(), page_indices.i32(), B, Hq, Hkv, ra.D, k_cache.size(1), scale,
          st.max_kv_len, out.f32());
    }
  rope_qk_paged_kv_write_(q, k, v, positions, cos, sin, slot_mapping, k_cache, v_cache);
  paged_attention(q, k_cache, v_cache, cu_seqlens_q, kv_lens, page_indptr, page_indices, scale,
                  out);
}

}  // namespace gyre::ops
