// Paged KV-cache ops of the rollout engine (ops::paged_kv_write, ops::paged_attention). They are
// declared in ops.h with the other ops (models call ops:: only); this header exists so rollout code
// can say what it uses. Implementation: paged_ops.cc (checks) over backend/cpu/paged_attention.cc.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// What validate_paged_layout proved, besides validity: the longest new-token run and the longest
// KV length of the batch (the CUDA kernels size their grid and KV splits from them).
struct PagedLayoutStats {
  int64_t max_q_len = 0;
  int64_t max_kv_len = 0;
  bool recorded = false;  // taken from a KnownIndices scope (check_paged_attention), not re-checked
};

// The checks ops::paged_kv_write runs before writing k, v [T, Hkv, D] f32 into the caches at
// slot_mapping (i32 [T]; negative = skip): dtypes and shapes, one device, every slot inside the
// cache (proven by a KnownIndices range or checked on a host copy). For ops that write the cache
// themselves (ops::rope_qk_paged_kv_write_). Throws Error(invalid_argument) "<op>: <message>".
void check_paged_kv_write(const char* op, const Tensor& k, const Tensor& v,
                          const Tensor& slot_mapping, const Tensor& k_cache, const Tensor& v_cache);

// The checks ops::paged_attention runs before attending (q [T, Hq, D] f32, the caches, out of q's
// shape, one device, the index arrays proven by a KnownIndices paged-layout entry or validated on
// host copies by validate_paged_layout); returns the batch's max_q_len / max_kv_len (the recorded
// bound when proven). For ops that attend themselves (ops::rope_paged_attention_). Throws
// Error(invalid_argument) "<op>: <message>".
PagedLayoutStats check_paged_attention(const char* op, const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, const Tensor& cu_seqlens_q,
                                       const Tensor& kv_lens, const Tensor& page_indptr,
                                       const Tensor& page_indices, const Tensor& out);

// Whether a step's index arrays (host copies of a layout validate_paged_layout accepted, B
// sequences) are a pure decode step whose new keys go where the attention reads them: every
// sequence has exactly one new token (cu_seqlens_q[b] = b), and slot_mapping[b] is negative (a
// padding row: nothing written) or the slot of sequence b's position kv_lens[b] - 1 through its
// page table, page_indices[page_indptr[b] + (kv_lens[b] - 1) / page_size] * page_size + (kv_lens[b]
// - 1) % page_size. What ops::rope_paged_attention_'s fused kernel needs of the indices besides the
// attention's own checks; O(B). False for B = 0.
bool decode_slots_match_pages(const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices,
                              const int32_t* slot_mapping, int64_t B, int64_t page_size);

// Checks one paged-attention index set on the host (the checks ops::paged_attention runs): B
// sequences whose T new tokens are delimited by cu_seqlens_q [B+1] (0 .. T), kv_lens[b] >= the
// sequence's new tokens, page_indptr [B+1] a CSR over page_indices (0 .. num_page_indices), enough
// pages for each kv_len, every page in [0, num_pages). Throws Error(invalid_argument) naming the
// first bad entry. The rollout engine runs it once per step and records the result in a
// KnownIndices scope, so the per-layer ops need no device-to-host copy.
// Whether the paged ops take a KV cache of this dtype on this device with this head dim: f32
// everywhere (CUDA in CUDA builds), bf16 on CUDA for the bf16 kernel's head dims (64, 128).
bool paged_kv_dtype_supported(DType dtype, Device device, int64_t head_dim);

// `op` names the op in the messages.
PagedLayoutStats validate_paged_layout(const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                                       const int32_t* page_indptr, const int32_t* page_indices,
                                       int64_t B, int64_t T, int64_t num_page_indices,
                                       int64_t num_pages, int64_t page_size,
                                       const char* op = "paged_attention");

}  // namespace gyre::ops
