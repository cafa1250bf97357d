// The fused log-prob head under bf16 autocast (ops::linear_token_logprobs{,_backward} on f32 CUDA
// tensors inside an ops::Bf16Autocast scope; logprob_head.cc, kernel in logprob_chunk.cu). Raw
// device pointers and the calling thread's stream, as kernels.h; the ops layer validates.
//
// Same numbers as the unfused composition it replaces (ops::linear under autocast + the chunk ops,
// + ops::linear_backward under autocast): h and each weight chunk are rounded to bf16 with the
// same round-to-nearest-even (once per call for h instead of once per chunk and GEMM), the chunk
// logits come from the same cuBLASLt call (or the same bf16 GEMV for T <= kGemvMaxRows) into an f32
// chunk, and the backward's dz is rounded to bf16 by the chunk kernel itself — the value autocast's
// conversion of the f32 dz would have produced — so dh and dw see the same bf16 operands in the
// same GEMM calls. Savings per chunk: the h conversions, and the f32 dz write + read-back + bf16
// write of autocast's dz conversion (the GEMMs only ever read bf16 dz).
//
// Scratch (pool, cuda::DeviceBuffer): bf16 h [T, H], f32 logits chunk [T, C], stats [T, 4], bf16
// weight rows [C, H] unless the cached copy is usable, and in the backward bf16 dz [T, C].
#pragma once
#include <cstdint>

namespace gyre::cuda {

// logprob_chunk_bwd (kernels.h) writing dz as bf16 bit patterns (round to nearest even) into dz
// [n, C]; dz must not alias x.
void logprob_chunk_bwd_bf16(const float* x, const int32_t* targets, int64_t n, int64_t C,
                            int64_t v0, float temperature, const float* lse, const float* entropy,
                            const float* dlogp, const float* dentropy, uint16_t* dz);

// ops::linear_token_logprobs under autocast: h f32 [T, H], w f32 [V, H], w_bf16 the bf16 copy of
// all of w (ops::Bf16WeightCache) or null (each chunk's rows are rounded into scratch), targets
// i32 [T] (< V; negative: skipped), chunk in [1, V]. Writes logp [T], lse [T], entropy [T] unless
// null. T, H, V > 0.
void linear_token_logprobs_autocast(const float* h, const float* w, const uint16_t* w_bf16,
                                    const int32_t* targets, int64_t T, int64_t H, int64_t V,
                                    int64_t chunk, float temperature, float* logp, float* entropy,
                                    float* lse);

// ops::linear_token_logprobs_backward under autocast (same arguments as the forward, lse/entropy
// from it; entropy needed when dentropy is non-null): dh [T, H] overwritten; dw [V, H] += Σ_t dz^T
// h unless null (no dw GEMM at all) — the accumulation of ops::linear_backward's dw; with
// dw_overwrite, dw = Σ_t dz^T h (beta 0: dw held deferred zeros, Tensor::claim_pending_zero).
void linear_token_logprobs_bwd_autocast(const float* h, const float* w, const uint16_t* w_bf16,
                                        const int32_t* targets, int64_t T, int64_t H, int64_t V,
                                        int64_t chunk, float temperature, const float* lse,
                                        const float* entropy, const float* dlogp,
                                        const float* dentropy, float* dh, float* dw,
                                        bool dw_overwrite = false);

}  // namespace gyre::cuda
