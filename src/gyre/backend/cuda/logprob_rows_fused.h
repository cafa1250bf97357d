// The one-pass log-prob row kernel of the one-pass head (logprob_head.h,
// linear_token_logprobs_with_grad_autocast; kernel in logprob_rows_fused.cu): for each of n rows of
// f32 logits z [n, V] over the WHOLE vocabulary, one launch reads every logit from HBM once and
// writes logp / entropy / lse and the bf16 dz of the row — what logprob_chunk_stats (C = V) +
// logprob_chunk_finish + logprob_chunk_bwd_bf16 compute in three launches and two reads of z.
// Each row is held on chip by a thread-block cluster of K CTAs (K = 1, 2, 4, 8 from V), each with
// a contiguous slice of the row in shared memory; the slices' partial statistics meet through
// distributed shared memory.
//
// Numbers (not bitwise the three kernels: the reduction order differs):
// - logp, lse, entropy: the same formulas as logprob_chunk_finish (log p_target = (z_t - m) -
//   log s, H = log s - w / s, lse = m + log s; logp = 0 for a negative target) on sums of the
//   same f32 terms exp(z - m) accumulated in f64 (per thread, then per CTA in a fixed order, then
//   across the cluster in rank order), without the f32 rounding of s and w between the stats and
//   finish kernels: they agree with stats + finish on the same z to |Δ| <= 2e-6 (1 + |value|).
// - dz: bit for bit logprob_chunk_bwd_bf16 on the same z given the lse and entropy this kernel
//   writes (the same f32 dz_value expression, logprob_row_math.cuh, then round to nearest even);
//   against the three kernels, whose lse / entropy differ in the last bits, within 1 bf16 ulp plus
//   the propagated change of lse and entropy (which exceeds 1 ulp only where dz's terms cancel).
// - Deterministic: no atomics, a fixed element-to-thread assignment and merge order; a row's
//   results depend only on its logits, its target, dlogp / dentropy and τ — not on n, on the other
//   rows of the launch, or on whether dz is written in place.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// Whether logprob_rows_fused handles rows of V logits: a cluster of <= 8 CTAs holds the row in
// shared memory (V <= 221,184 f32 logits; the Qwen2.5 vocabulary of 151,936 takes K = 8) and this
// process has not disabled the kernel (set_logprob_rows_fused_enabled). V > 0.
bool logprob_rows_fused_supported(int64_t V);

// For n rows of f32 logits z [n, V] (row-major, leading dimension V), targets i32 [n] (< V;
// negative: none), dlogp [n] and dentropy [n] (null: no entropy gradient), temperature τ > 0:
// logp [n], lse [n] and entropy [n] (null: not written) as logprob_chunk_stats (C = V, v0 = 0) +
// logprob_chunk_finish, and dz, bf16 bit patterns, row r at dz + r·ldz (ldz >= V), as
// logprob_chunk_bwd_bf16 given those lse / entropy. In place: dz = (uint16_t*)z with ldz = 2V —
// row r's bf16 dz over the first half of the bytes of its f32 logits (every CTA of a row's cluster
// has read its slice before any CTA of that cluster stores; other rows are other clusters' bytes).
// Otherwise dz must not overlap z. Needs logprob_rows_fused_supported(V); n >= 0.
void logprob_rows_fused(const float* z, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, const float* dlogp, const float* dentropy, float* logp,
                        float* entropy, float* lse, uint16_t* dz, int64_t ldz);

// The cluster size logprob_rows_fused uses for V (1, 2, 4, 8), or 0 when a row does not fit.
int logprob_rows_fused_cluster(int64_t V);

// Process-wide switch for tests and A/B benchmarks: false makes logprob_rows_fused_supported
// answer false, so the one-pass head takes its three-kernel fallback. Returns the previous value.
bool set_logprob_rows_fused_enabled(bool enabled);

}  // namespace gyre::cuda
