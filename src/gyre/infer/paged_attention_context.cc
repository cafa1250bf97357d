// Paged KV attention context (see paged_attention_context.h).
#include "gyre/infer/paged_attention_context.h"

#include <algorithm>

#include "gyre/backend/fused_rope_ops.h"
#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"

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
      page_indices_(borrow_i32(b.page_indices).to(kv.k(0).device())) {
  validate_and_record(b, 0);
}

PagedAttentionContext::PagedAttentionContext(KvStorage& kv, const StepBatch& b,
                                             const DeviceIndices& d, int64_t max_kv_len_bound)
    : kv_(kv),
      slot_mapping_(d.slot_mapping),
      cu_seqlens_q_(d.cu_seqlens_q),
      kv_lens_(d.kv_lens),
      page_indptr_(d.page_indptr),
      page_indices_(d.page_indices) {
  validate_and_record(b, max_kv_len_bound);
}

void PagedAttentionContext::validate_and_record(const StepBatch& b, int64_t max_kv_len_bound) {
  KvStorage& kv = kv_;
  // The checks ops::paged_kv_write / ops::paged_attention would run per layer, once, on the host.
  const Tensor& cache = kv.k(0);
  const int64_t num_pages = cache.size(0), page_size = cache.size(1);
  const int64_t slots = num_pages * page_size;
  int64_t lo = 0, hi = 0;
  for (size_t t = 0; t < b.slot_mapping.size(); ++t) {
    const int32_t s = b.slot_mapping[t];
    if (s >= slots)
      GYRE_THROW(invalid_argument,
                 "paged_kv_write: slot_mapping[{}] = {} outside the cache's {} slots", t, s, slots);
    lo = std::min<int64_t>(lo, s);
    hi = std::max<int64_t>(hi, int64_t(s) + 1);
  }
  known_.add_range(slot_mapping_, lo, hi);
  const int64_t B = int64_t(b.kv_lens.size());
  if (b.cu_seqlens_q.size() != size_t(B + 1) || b.page_indptr.size() != size_t(B + 1))
    GYRE_THROW(invalid_argument,
               "paged_attention: {} sequences need cu_seqlens_q and page_indptr of {} entries, got "
               "{} and {}",
               B, B + 1, b.cu_seqlens_q.size(), b.page_indptr.size());
  if (b.page_indptr.back() < 0 || size_t(b.page_indptr.back()) > b.page_indices.size() ||
      b.page_indptr.back() > page_indices_.numel())
    GYRE_THROW(invalid_argument,
               "paged_attention: page_indptr ends at {} but {} page indices are given ({} fit on "
               "the device)",
               b.page_indptr.back(), b.page_indices.size(), page_indices_.numel());
  const ops::PagedLayoutStats st = ops::validate_paged_layout(
      b.cu_seqlens_q.data(), b.kv_lens.data(), b.page_indptr.data(), b.page_indices.data(), B,
      int64_t(b.slot_mapping.size()), int64_t(b.page_indptr.back()), num_pages, page_size);
  max_kv_len_plan_ = std::max(st.max_kv_len, max_kv_len_bound);
  sequences_ = B;
  known_.add_paged_layout(cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_, num_pages,
                          page_size, st.max_q_len, max_kv_len_plan_);
  // What ops::rope_paged_attention_ needs beyond the layout (its recorder vouches for it; O(B)).
  decode_step_ =
      int64_t(b.slot_mapping.size()) == B &&
      ops::decode_slots_match_pages(b.cu_seqlens_q.data(), b.kv_lens.data(), b.page_indptr.data(),
                                    b.page_indices.data(), b.slot_mapping.data(), B, page_size);
}

bool PagedAttentionContext::paged_decode_step(int64_t layers, ops::PagedDecodeStep* step,
                                              std::vector<Tensor*>* k_caches,
                                              std::vector<Tensor*>* v_caches) {
  if (!decode_step_ || sequences_ != 1 || layers > kv_.num_layers()) return false;
  step->slot_mapping = slot_mapping_;
  step->cu_seqlens_q = cu_seqlens_q_;
  step->kv_lens = kv_lens_;
  step->page_indptr = page_indptr_;
  step->page_indices = page_indices_;
  step->max_kv_len = max_kv_len_plan_;
  k_caches->clear(), v_caches->clear();
  for (int64_t l = 0; l < layers; ++l)
    k_caches->push_back(&kv_.k(l)), v_caches->push_back(&kv_.v(l));
  return true;
}

void PagedAttentionContext::attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                                   float scale, Tensor& out) {
  Tensor& kc = kv_.k(layer);
  Tensor& vc = kv_.v(layer);
  ops::paged_kv_write(k, v, slot_mapping_, kc, vc);
  ops::paged_attention(q, kc, vc, cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_, scale, out);
}

void PagedAttentionContext::rope_attend(int64_t layer, Tensor& q, Tensor& k, const Tensor& v,
                                        const Tensor& positions, const Tensor& cos,
                                        const Tensor& sin, float scale, Tensor& out) {
  Tensor& kc = kv_.k(layer);
  Tensor& vc = kv_.v(layer);
  if (decode_step_)  // one kernel (plus the split combine) where the op fuses, else the two below
    return ops::rope_paged_attention_(q, k, v, positions, cos, sin, slot_mapping_, kc, vc,
                                      cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_, scale,
                                      out, /*slots_verified=*/true);  // decode_step_ checked them
  ops::rope_qk_paged_kv_write_(q, k, v, positions, cos, sin, slot_mapping_, kc, vc);
  ops::paged_attention(q, kc, vc, cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_, scale, out);
}

}  // namespace gyre::infer
