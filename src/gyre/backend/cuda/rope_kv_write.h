// RoPE fused with the bf16 paged KV-cache write for the decode step (issue 7: one launch instead
// of rope_qk + paged_kv_write_bf16). ops::rope_qk_paged_kv_write_ (backend/fused_rope_ops.h) checks
// the arguments and calls it; implementation rope_kv_write.cu.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// q [T, Hq, D] f32 <- rope(q) in place; k_cache/v_cache (bf16 bits, [pages, page_size, Hkv, D])
// slot slot_mapping[t] (negative = skip, a padding row) <- bf16(rope(k[t])), bf16(v[t]); k and v
// [T, Hkv, D] f32 are only read (k is not rotated in memory). The forward rotation at
// positions[t] with the tables cos/sin [P, D/2]. Bitwise equal to rope_qk(q, k, ...) followed by
// paged_kv_write_bf16(k, v, ...): the same rotation expression (rope_rotate.cuh) and the same
// rounding (bf16_bits.cuh). D even; q must not overlap k, v or the caches; positions in [0, P)
// and slots below pages * page_size (the caller checks). Launches on cuda::stream(), no host sync.
void rope_qk_paged_kv_write_bf16(float* q, int64_t Hq, const float* k, const float* v, int64_t Hkv,
                                 int64_t T, int64_t D, const int32_t* positions, const float* cos,
                                 const float* sin, const int32_t* slot_mapping, uint16_t* k_cache,
                                 uint16_t* v_cache);

}  // namespace gyre::cuda
