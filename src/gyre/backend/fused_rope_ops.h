// RoPE fused with its neighbours in the decode step (issue 7: fewer kernels per decode step):
// q and k in one launch, and q, k plus the paged KV-cache write in one launch. Declared here
// rather than in ops.h; implementation: fused_rope_ops.cc over backend/cuda/rope_pair.cu and
// backend/cuda/rope_kv_write.cu.
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// rope_(q, positions, cos, sin) then rope_(k, positions, cos, sin) (the forward rotation), bitwise:
// q [T, Hq, D] and k [T, Hkv, D] share T, D, the positions and the tables. CUDA runs one kernel
// whose elements are rope_'s arithmetic; the CPU runs the two rope_ calls. Errors (before either
// tensor changes) name the argument: undefined tensors, q/k of different T, D or dtype, plus
// everything rope_ rejects (odd D, tables not [P, D/2], positions outside the table).
void rope_qk_(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& cos, const Tensor& sin);

// The decode step's RoPE and KV-cache write: q <- rope(q) in place and the caches' slots
// slot_mapping[t] <- rope(k[t]), v[t] — bitwise rope_qk_(q, k, ...) then paged_kv_write(k, v,
// slot_mapping, k_cache, v_cache), except that k itself is left unrotated (it is only read). With a
// bf16 cache on CUDA one kernel does it all; otherwise the two ops run on a copy of k. Errors
// (before anything changes) are those of rope_qk_ and paged_kv_write, prefixed with this op's name.
void rope_qk_paged_kv_write_(Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                             const Tensor& cos, const Tensor& sin, const Tensor& slot_mapping,
                             Tensor& k_cache, Tensor& v_cache);

// The decode step's RoPE, KV-cache write and paged attention: rope_qk_paged_kv_write_(q, k, v,
// positions, cos, sin, slot_mapping, k_cache, v_cache) then paged_attention(q, k_cache, v_cache,
// cu_seqlens_q, kv_lens, page_indptr, page_indices, scale, out) — bitwise in out, k_cache and
// v_cache. q's contents afterwards are unspecified (rotated by the two ops, left unrotated by the
// fused kernel); k and v are only read. Where rope_paged_attention_fuses(...) holds and the new
// keys go where the attention reads them (decode_slots_match_pages, paged_ops.h) CUDA runs one
// attention launch (plus the split combine when the keys are split) in which each CTA rotates the
// q rows it reads and the CTA holding a sequence's new key writes it (backend/cuda/paged_bf16.h:
// rope_paged_attention_bf16_decode); otherwise the two ops run. The slot condition: a caller that
// checked it on the host (infer::PagedAttentionContext, once per step) passes slots_verified =
// true; otherwise the op checks host copies — unless the index arrays are recorded in a
// KnownIndices paged-layout scope (which vouches for the layout, not for slot_mapping), where a
// host copy would synchronise inside a step: then the two ops run. Bitwise also needs that no row
// reads a slot another row writes (true of the engine's page tables; a padding row of a decode
// graph reads page 0's first slot — which a real row may be writing when its new token is the
// first of page 0 — and its output, which is discarded, may then differ). Errors (before anything
// changes) are those of rope_qk_paged_kv_write_ and paged_attention, prefixed with this op's name.
void rope_paged_attention_(Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                           const Tensor& cos, const Tensor& sin, const Tensor& slot_mapping,
                           Tensor& k_cache, Tensor& v_cache, const Tensor& cu_seqlens_q,
                           const Tensor& kv_lens, const Tensor& page_indptr,
                           const Tensor& page_indices, float scale, Tensor& out,
                           bool slots_verified = false);

// Whether rope_paged_attention_ can fuse for these sizes (host arithmetic only): a CUDA build, q
// and the cache on CUDA, a bf16 cache, head dim 64 or 128, Hq a multiple of Hkv with at most 16
// query heads per kv head, and a pure decode step (B >= 1 sequences of one new token each: T == B,
// max_q_len == 1). False everywhere else (prefill chunks, f32 caches, the CPU).
bool rope_paged_attention_fuses(Device device, DType cache_dtype, int64_t Hq, int64_t Hkv,
                                int64_t D, int64_t B, int64_t T, int64_t max_q_len);

}  // namespace gyre::ops
