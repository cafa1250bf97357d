// bf16 paged KV cache for the rollout engine's decode on CUDA: the cache write (f32 -> bf16,
// round to nearest even) and paged causal GQA attention over bf16 keys/values with split-KV
// (flash-decoding) for batches too small to fill the GPU.
//
// Layout and semantics are those of the f32 kernels (backend/cpu/paged_attention.h): k_cache and
// v_cache are bf16 bit patterns (uint16_t) [num_pages, page_size, Hkv, D]; the KV of sequence b's
// position p lives in page page_indices[page_indptr[b] + p / page_size], slot p % page_size.
// Sequence b's queries are rows [cu_seqlens_q[b], cu_seqlens_q[b+1]) of q [T, Hq, D] and sit at kv
// positions kv_lens[b] - q_len_b ... kv_lens[b] - 1; a query at position p attends keys 0..p; query
// head h reads kv head h / (Hq / Hkv). Only the stored K/V are bf16: q, the scores, the softmax
// (online, max-subtracted) and the output are f32, so the result equals the f32 kernels run on a
// cache holding the bf16-rounded values up to f32 summation order (~1e-6 on O(1) data).
//
// Every function launches on cuda::stream(), never synchronises the host and never copies device
// data to the host, so a decode step that calls them can be captured in a CUDA graph (pass a
// caller-owned workspace then, see paged_attention_bf16_workspace_bytes). Index arrays live on the
// device and must already be valid (backend/paged_ops.cc checks them).
#pragma once
#include <cstddef>
#include <cstdint>

namespace gyre::cuda {

// k_cache/v_cache slot slot_mapping[t] (= page * page_size + offset; negative = skip, a padding
// row)
// <- bf16(k[t]), bf16(v[t]) ([T, Hkv, D] f32), rounded to nearest even exactly like
// core/dtype.h's f32_to_bf16 (NaN stays NaN). Any D.
void paged_kv_write_bf16(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                         int64_t Hkv, int64_t D, uint16_t* k_cache, uint16_t* v_cache);

// Head dims the attention kernel is built for: 64 and 128.
bool paged_attention_bf16_supported(int64_t D);

// Bytes of device scratch paged_attention_bf16_fwd needs for these sizes: 0 when the call does not
// split the keys (enough (sequence, kv head, query tile) work items to fill the GPU), otherwise the
// split-KV partials (splits x T x Hq x (D + 2) floats; at most a few MB, because splitting happens
// only when the batch is small). Depends only on host-known sizes and the device's SM count.
size_t paged_attention_bf16_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                            int64_t D, int64_t max_q_len, int64_t max_kv_len);

// out [T, Hq, D] f32 = causal softmax(scale q K^T) V over each sequence's paged bf16 keys/values;
// q f32 [T, Hq, D]; index arrays on the device (already validated by the caller). max_q_len and
// max_kv_len are host-known upper bounds of the batch's q_len_b and kv_lens[b] (an upper bound is
// correct, only slower; a value below the real maximum leaves rows unwritten): they size the grid
// and choose the KV split. Requirements (Error(invalid_argument) otherwise):
// paged_attention_bf16_supported(D), Hkv >= 1, Hq % Hkv == 0, page_size >= 1, q/out/k_cache/v_cache
// 16-byte aligned. Scratch comes from the device pool (cuda::DeviceBuffer, stream-ordered).
void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out);

// The same with caller-owned scratch of at least paged_attention_bf16_workspace_bytes(...) bytes
// (16-byte aligned; may be null when that is 0). For CUDA-graph capture, where pool scratch
// released after capture could be handed to another op while the graph still writes it.
void paged_attention_bf16_fwd(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                              const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                              float scale, int64_t max_q_len, int64_t max_kv_len, float* out,
                              void* workspace, size_t workspace_bytes);

// ---- the decode step's RoPE, KV write and attention in one launch (issue 7) ----
//
// Shapes the fused decode takes: paged_attention_bf16_supported(D) and Hq a multiple of Hkv with at
// most 16 query heads per kv head (they share one CTA, so exactly one CTA per (sequence, kv head,
// key chunk) holds the new key).
bool rope_paged_attention_bf16_supported(int64_t Hq, int64_t Hkv, int64_t D);

// A pure decode step — B sequences of exactly one new token each (row t of q/k/v is sequence t's
// token: cu_seqlens_q[t] = t, T = B) — in one attention launch (plus the split combine):
//   rope_qk_paged_kv_write_bf16(q, Hq, k, v, Hkv, B, D, positions, cos, sin, slot_mapping,
//                               k_cache, v_cache)  (rope_kv_write.h)
//   paged_attention_bf16_fwd(q, k_cache, v_cache, ..., max_q_len = 1, max_kv_len, out)
// bitwise: out, k_cache and v_cache end as the two calls leave them. q is only read (it stays
// unrotated; each CTA rotates the rows it reads), k and v only read. The CTA of (sequence t, kv
// head g) whose key range holds position kv_lens[t] - 1 writes slot slot_mapping[t] (nothing when
// it is negative: a padding row) before it loads that position. Preconditions besides those of the
// two calls (the caller's; the ops layer checks them, see ops::rope_paged_attention_): every
// sequence has one new token; slot_mapping[t] is negative or the slot of sequence t's position
// kv_lens[t] - 1 through its page table; no row reads a slot that another row writes (page tables
// do not share the new tokens' pages); rope_paged_attention_bf16_supported(Hq, Hkv, D); positions
// and slot_mapping, like the index arrays, are not written by a kernel of the programmatic-launch
// chain (they are read before its wait, pdl.cuh). Scratch as paged_attention_bf16_fwd's: pool
// scratch, or the caller's workspace of paged_attention_bf16_workspace_bytes(B, B, Hq, Hkv, D, 1,
// max_kv_len) bytes (CUDA-graph capture). Error(invalid_argument) for unsupported shapes.
void rope_paged_attention_bf16_decode(const float* q, const float* k, const float* v,
                                      const int32_t* positions, const float* cos, const float* sin,
                                      const int32_t* slot_mapping, uint16_t* k_cache,
                                      uint16_t* v_cache, const int32_t* cu_seqlens_q,
                                      const int32_t* kv_lens, const int32_t* page_indptr,
                                      const int32_t* page_indices, int64_t B, int64_t Hq,
                                      int64_t Hkv, int64_t D, int64_t page_size, float scale,
                                      int64_t max_kv_len, float* out);
void rope_paged_attention_bf16_decode(
    const float* q, const float* k, const float* v, const int32_t* positions, const float* cos,
    const float* sin, const int32_t* slot_mapping, uint16_t* k_cache, uint16_t* v_cache,
    const int32_t* cu_seqlens_q, const int32_t* kv_lens, const int32_t* page_indptr,
    const int32_t* page_indices, int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
    float scale, int64_t max_kv_len, float* out, void* workspace, size_t workspace_bytes);

}  // namespace gyre::cuda
