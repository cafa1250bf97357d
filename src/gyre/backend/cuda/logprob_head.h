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

// Rows per token chunk of linear_token_logprobs_with_grad_autocast: its scratch per chunk is the
// f32 logits [rows, V] and their bf16 dz [rows, V] (6 bytes an element), kept within 1/8 of an f32
// [T, V] tensor (the fused head's memory bound): T / 12 rounded down to a multiple of 64 (GEMM
// tiles), or min(T, 64) for a T too small for that.
int64_t logprob_grad_rows_per_chunk(int64_t T);

// Forward and backward of the fused head in one pass, for a loss gradient known before the forward
// (dlogp / dentropy given: d loss / d logp must not depend on logp — an SFT / cross-entropy loss).
// Same arguments as the two functions above (no vocabulary chunk: the chunks are of TOKENS, rows
// [r0, r0 + logprob_grad_rows_per_chunk(T)), each over all V columns); writes logp, lse and
// entropy (null: not kept; the backward's entropy lives in scratch then) and dh [T, H]
// (overwritten), dw += (dw_overwrite: =) Σ_t dz^T h. Each chunk's logits are computed once and feed
// its statistics and then its backward at once; the two-pass head recomputes every chunk's logits
// in its backward (one GEMM of the head's four), so this saves a quarter of the head's GEMM FLOPs
// (Qwen2.5-1.5B at 4 x 4096 tokens: 41.6 vs 52.0 ms, bench/RESULTS.md session 27). In exchange dw
// is read and written once per token chunk (the dW GEMMs' C) and each dh GEMM has only the chunk's
// rows. Numbers: logp / lse / entropy are the statistics of the same f32 logits reduced over one
// chunk of V columns instead of several (~1e-6 apart from the two-pass head's), so dz, dh and dw
// agree with the two-pass head to the bf16 rounding of dz and the GEMMs' f32 accumulation order.
void linear_token_logprobs_with_grad_autocast(const float* h, const float* w,
                                              const uint16_t* w_bf16, const int32_t* targets,
                                              int64_t T, int64_t H, int64_t V, float temperature,
                                              const float* dlogp, const float* dentropy,
                                              float* logp, float* entropy, float* lse, float* dh,
                                              float* dw, bool dw_overwrite = false);

}  // namespace gyre::cuda
