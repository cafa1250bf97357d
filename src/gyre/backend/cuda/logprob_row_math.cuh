// The per-element arithmetic of the log-prob kernels, shared by the vocabulary-chunk kernels
// (logprob_chunk.cu) and the fused one-pass row kernel (logprob_rows_fused.cu), so that both
// evaluate the same f32 expressions: one element's softmax terms (exp_term) and its dlogit
// (dz_value), and the f32 / bf16 stores of dz. Every rounding is explicit (__f*_rn intrinsics: no
// contraction left to the compiler), so any two call sites given the same inputs produce the same
// bits — which is what lets the fused kernel's dz equal logprob_chunk_bwd_bf16's bit for bit when
// both see the same lse and entropy.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"

namespace gyre::cuda::logprob_detail {

__device__ __forceinline__ float max4(float4 v) { return fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)); }

// One element's terms relative to mz (>= its z, finite): e = exp(d), and e·d unless e = 0
// (z = -inf: the limit 0, not 0 · -inf). z = x·mul and d = z - mz are rounded separately, so the
// max element has d = 0 exactly.
__device__ __forceinline__ float exp_term(float x, float mul, float mz, float* wd) {
  const float d = __fsub_rn(__fmul_rn(x, mul), mz);
  const float e = expf(d);
  *wd = e > 0.0f ? __fmul_rn(e, d) : 0.0f;
  return e;
}

// The per-row constants of the backward: mul = 1/τ, L = lse (f32, as stored), g_lp = dlogp (0 for
// no target), g_h = dentropy (0 when null), h = entropy (f32, as stored; 0 when g_h = 0).
struct BwdRow {
  float mul, L, g_lp, g_h, h;
  int64_t tg;  // the target's column in the chunk; -1 (or out of range) for none
};

// dz_j = dlogp (1[j = target] - p_j) - dH p_j (log p_j + H), log p_j = z_j - lse; dx = dz / τ.
// Every rounding is explicit (no contraction choices left to the compiler), so each call site —
// float4 or scalar path, f32 or bf16 output, chunk or fused row kernel — computes the same f32
// bits.
__device__ __forceinline__ float dz_value(float x, int64_t j, const BwdRow& r) {
  const float lp = __fsub_rn(__fmul_rn(x, r.mul), r.L);
  const float p = expf(lp);
  const float hit = j == r.tg ? r.g_lp : 0.0f;
  // p = 0: the entropy term's limit 0, not 0 · -inf.
  const float ent = p > 0.0f ? __fmul_rn(__fmul_rn(r.g_h, p), __fadd_rn(lp, r.h)) : 0.0f;
  return __fmul_rn(__fsub_rn(__fsub_rn(hit, __fmul_rn(r.g_lp, p)), ent), r.mul);
}

// The value written for one dz element: f32 as computed (Out = float), or rounded to nearest-even
// bf16 (Out = uint16_t, the bf16 bit pattern) — exactly what cuda::f32_to_bf16 would make of the
// f32 value (bf16_bits.cuh's bf16_rn_*), so the bf16 variant equals the f32 kernel followed by
// that conversion.
__device__ __forceinline__ void store_dz(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_dz(uint16_t* p, float v) { *p = uint16_t(bf16_rn_bits(v)); }
// Four consecutive values at p: one 16-byte (f32) or 8-byte (bf16; little-endian, so the lower
// column in the low half) store; p aligned accordingly.
__device__ __forceinline__ void store_dz4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store_dz4(uint16_t* p, float a, float b, float c, float d) {
  *reinterpret_cast<uint2*>(p) = bf16_rn_pack4(a, b, c, d);
}

}  // namespace gyre::cuda::logprob_detail
