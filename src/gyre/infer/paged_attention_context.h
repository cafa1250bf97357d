// The rollout engine's AttentionContext: for layer l, writes the step's new K/V into their pages
// (slot_mapping) and attends each chunk's new queries over its cached prefix plus the new tokens
// through the CSR page table (ops::paged_attention). Prefill chunks and decode tokens of many
// requests run in one forward. The StepBatch must outlive the forward (tensors borrow its arrays).
// The step's index arrays are validated once on the host when the context is built and recorded in
// an ops::KnownIndices scope, so the per-layer paged ops launch without device-to-host copies; the
// context must therefore live on the stack around the forward (scopes nest LIFO per thread).
#pragma once
#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"
#include "gyre/infer/kv_pool.h"
#include "gyre/infer/step_batch.h"
#include "gyre/model/attention_context.h"

namespace gyre::infer {

class PagedAttentionContext : public model::AttentionContext {
 public:
  PagedAttentionContext(KvStorage& kv, const StepBatch& batch);
  // The index arrays already on the cache's device (a CUDA graph's static buffers, filled by the
  // caller from `batch`, which may have more page_indices capacity than it uses); `batch` is only
  // validated. max_kv_len_bound (>= every kv_len) is what the attention kernel sizes its KV splits
  // for, so one captured graph serves every later step.
  struct DeviceIndices {
    Tensor slot_mapping, cu_seqlens_q, kv_lens, page_indptr, page_indices;
  };
  PagedAttentionContext(KvStorage& kv, const StepBatch& batch, const DeviceIndices& device,
                        int64_t max_kv_len_bound);
  void attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v, float scale,
              Tensor& out) override;
  // A pure decode step whose new keys go where the attention reads them (decode_step(), the
  // engine's decode steps and CUDA-graph buckets): ops::rope_paged_attention_ — on CUDA with a
  // bf16 cache one attention launch that also rotates q and k and writes the new K/V. Otherwise
  // (prefill chunks, mixed steps) one launch for RoPE and the KV write
  // (ops::rope_qk_paged_kv_write_), then the attention. Bitwise the same either way.
  void rope_attend(int64_t layer, Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions,
                   const Tensor& cos, const Tensor& sin, float scale, Tensor& out) override;
  // Whether the step is one new token per sequence with every slot_mapping entry the slot of its
  // sequence's last position or negative (ops::decode_slots_match_pages, checked on the host when
  // the context is built): rope_attend then takes ops::rope_paged_attention_.
  bool decode_step() const { return decode_step_; }
  // A decode step of one sequence (decode_step() and B == 1): the index arrays, the attention's
  // plan bound and the caches, for ops::decode_stack_.
  bool paged_decode_step(int64_t layers, ops::PagedDecodeStep* step, std::vector<Tensor*>* k_caches,
                         std::vector<Tensor*>* v_caches) override;

 private:
  KvStorage& kv_;
  Tensor slot_mapping_, cu_seqlens_q_, kv_lens_, page_indptr_, page_indices_;
  ops::KnownIndices known_;  // what the constructor proved about the arrays above
  bool decode_step_ = false;
  int64_t sequences_ = 0;        // B
  int64_t max_kv_len_plan_ = 0;  // the max_kv_len recorded for the attention's split plan
  void validate_and_record(const StepBatch& b, int64_t max_kv_len_bound);
};

// Borrows a vector's data as an i32 [n] tensor (no copy; the vector must outlive the tensor).
Tensor borrow_i32(const std::vector<int32_t>& v);

}  // namespace gyre::infer
