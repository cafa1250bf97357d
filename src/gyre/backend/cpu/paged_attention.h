// CPU kernels of the rollout engine's paged KV cache: plain functions over raw pointers (no Tensor,
// no request); the Tensor-level checks live in backend/paged_ops.cc.
//
// Layout (vLLM / FlashInfer paged KV): k_cache, v_cache [num_pages, page_size, Hkv, D]; the KV of
// sequence b's position p lives in page page_indices[page_indptr[b] + p / page_size], slot
// p % page_size. A batch packs B sequences' new tokens: sequence b's queries are rows
// [cu_seqlens_q[b], cu_seqlens_q[b+1]) of q [T, Hq, D] and sit at kv positions
// kv_lens[b] - q_len_b ... kv_lens[b] - 1 (prefix already cached, new tokens last), so prefill
// chunks and decode tokens mix freely in one call.
#pragma once
#include <cstdint>

namespace gyre::cpu {

// k_cache/v_cache slot slot_mapping[t] (= page * page_size + offset; negative = skip, a padding
// row) <- k[t], v[t] ([T, Hkv, D]).
void paged_kv_write(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                    int64_t Hkv, int64_t D, float* k_cache, float* v_cache);

// out[T, Hq, D] = causal softmax(scale q K^T) V over each sequence's paged keys/values; query head
// h reads kv head h / (Hq / Hkv) (GQA). All indices are assumed valid (checked by the caller).
void paged_attention_fwd(const float* q, const float* k_cache, const float* v_cache,
                         const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                         const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                         int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size, float scale,
                         float* out);

}  // namespace gyre::cpu
