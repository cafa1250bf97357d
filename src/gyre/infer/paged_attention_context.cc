// Paged KV attention context (see paged_attention_context.h).
#include "gyre/infer/paged_attention_context.h"

#include "gyre/backend/paged_ops.h"

namespace gyre::infer {

Tensor borrow_i32(const std::vector<int32_t>& v) {
  // A zero-length vector may have a null data(): point empty tensors at a static dummy instead.
  static int32_t dummy = 0;
  void* data = v.empty() ? &dummy : const_cast<int32_t*>(v.data());
  return Tensor::borrow(data, {int64_t(v.size())}, DType::i32, Device::cpu, nullptr);
}

PagedAttentionContext::PagedAttentionContext(KvStorage& kv, const StepBatch& b)
    : kv_(kv),
      // One host-to-device copy of each index array per step when the cache is on the GPU
      // (Tensor::to is a no-op on the CPU, where the step's vectors are borrowed as they are).
      slot_mapping_(borrow_i32(b.slot_mapping).to(kv.k(0).device())),
      cu_seqlens_q_(borrow_i32(b.cu_seqlens_q).to(kv.k(0).device())),
      kv_lens_(borrow_i32(b.kv_lens).to(kv.k(0).device())),
      page_indptr_(borrow_i32(b.page_indptr).to(kv.k(0).device())),
      page_indices_(borrow_i32(b.page_indices).to(kv.k(0).device())) {}

void PagedAttentionContext::attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                                   float scale, Tensor& out) {
  Tensor& kc = kv_.k(layer);
  Tensor& vc = kv_.v(layer);
  ops::paged_kv_write(k, v, slot_mapping_, kc, vc);
  ops::paged_attention(q, kc, vc, cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_, scale, out);
}

}  // namespace gyre::infer
