// The fused log-prob head under bf16 autocast (logprob_head.h): the vocabulary loop of
// ops::linear_token_logprobs{,_backward} on bf16 operands converted once per call.
//
// Stream order: every launch goes to the calling thread's stream(), so chunk k's GEMM reading the
// logits buffer runs after chunk k-1's stats / backward kernel finished with it, and the dh / dw
// GEMMs of a chunk read its dz before the next chunk's backward kernel overwrites it. The scratch
// returns to the pool when these functions return, while kernels may still be queued; the pool
// reuses a block on the same stream only (allocator.h), so that is safe.
#include "gyre/backend/cuda/logprob_head.h"

#include <algorithm>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/pdl.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

// cuBLASLt's heuristic assumes 256-byte aligned operands (its default alignment preference, which
// gemm.cc does not lower), so a row offset into the cached bf16 weight is used only when its byte
// offset is a multiple of 256; pool blocks themselves are cudaMalloc'ed (>= 256-byte aligned).
constexpr int64_t kOperandAlign = 256;

void check_sizes(const char* fn, int64_t T, int64_t H, int64_t V, int64_t chunk) {
  GYRE_CHECK(T > 0 && H > 0 && V > 0 && chunk > 0 && chunk <= V,
             "cuda::{}: needs T, H, V > 0 and chunk in [1, V], got T {} H {} V {} chunk {}", fn, T,
             H, V, chunk);
}

// bf16 rows [v0, v0 + c) of w, [c, H] row-major: the cached copy (rows are contiguous, so the
// chunk is the copy offset by v0·H elements) when it is aligned, else w's rows rounded into
// `scratch` (the same round-to-nearest-even as the cache's conversion: identical values).
struct WeightRows {
  const float* w;
  const uint16_t* w_bf16;
  int64_t H, chunk;
  DeviceBuffer scratch;
  WeightRows(const float* w_, const uint16_t* w_bf16_, int64_t H_, int64_t chunk_)
      : w(w_),
        w_bf16(w_bf16_),
        H(H_),
        chunk(chunk_),
        // Offsets are multiples of chunk·H·2 bytes; when that is 256-aligned the scratch is never
        // needed (one pool block of the smallest class stands in).
        scratch(size_t(w_bf16 && (chunk * H * 2) % kOperandAlign == 0 ? 1 : chunk * H) * 2) {}
  const uint16_t* rows(int64_t v0, int64_t c) {
    if (w_bf16 && (v0 * H * 2) % kOperandAlign == 0) return w_bf16 + v0 * H;
    uint16_t* dst = scratch.as<uint16_t>();
    f32_to_bf16(w + v0 * H, dst, c * H);
    // A decode-sized T takes the GEMV, which loads weights before waiting for the previous kernel
    // (pdl.cuh): that would be this conversion. Only this unaligned fallback needs the barrier.
    pdl_barrier();
    return dst;
  }
};

// z [T, c] = h · w_c^T in f32 from bf16 operands — the product linear_fwd_autocast_bf16_weight
// computes for these arguments: its bf16 GEMV for a few rows (decode-sized T, where the GEMV
// rounds h in registers exactly as the conversion does), otherwise the cuBLASLt GEMM on bf16 h.
void chunk_logits(const float* h, const uint16_t* hb, const uint16_t* wc, int64_t T, int64_t c,
                  int64_t H, float* z) {
  if (linear_gemv_bf16_supported(h, wc, T, c, H))
    return linear_gemv_bf16(h, wc, nullptr, T, c, H, z);
  linear_gemm_bf16(hb, wc, nullptr, T, c, H, z);
}

}  // namespace

void linear_token_logprobs_autocast(const float* h, const float* w, const uint16_t* w_bf16,
                                    const int32_t* targets, int64_t T, int64_t H, int64_t V,
                                    int64_t chunk, float temperature, float* logp, float* entropy,
                                    float* lse) {
  check_sizes("linear_token_logprobs_autocast", T, H, V, chunk);
  DeviceBuffer hb(size_t(T * H) * 2), z(size_t(T * chunk) * 4), stats(size_t(T) * 16);
  f32_to_bf16(h, hb.as<uint16_t>(), T * H);  // once for all chunks
  WeightRows wr(w, w_bf16, H, chunk);
  for (int64_t v0 = 0; v0 < V; v0 += chunk) {
    const int64_t c = std::min(chunk, V - v0);
    // The chunk's logits fill the first T·c floats of the buffer (a [T, c] row-major matrix).
    chunk_logits(h, hb.as<uint16_t>(), wr.rows(v0, c), T, c, H, z.as<float>());
    logprob_chunk_stats(z.as<float>(), targets, T, c, v0, temperature, /*accumulate=*/v0 > 0,
                        stats.as<float>());
  }
  logprob_chunk_finish(stats.as<float>(), targets, T, logp, entropy, lse);
}

void linear_token_logprobs_bwd_autocast(const float* h, const float* w, const uint16_t* w_bf16,
                                        const int32_t* targets, int64_t T, int64_t H, int64_t V,
                                        int64_t chunk, float temperature, const float* lse,
                                        const float* entropy, const float* dlogp,
                                        const float* dentropy, float* dh, float* dw,
                                        bool dw_overwrite) {
  check_sizes("linear_token_logprobs_bwd_autocast", T, H, V, chunk);
  DeviceBuffer hb(size_t(T * H) * 2), z(size_t(T * chunk) * 4), dz(size_t(T * chunk) * 2);
  const uint16_t* h16 = hb.as<uint16_t>();
  f32_to_bf16(h, hb.as<uint16_t>(), T * H);
  WeightRows wr(w, w_bf16, H, chunk);
  for (int64_t v0 = 0; v0 < V; v0 += chunk) {
    const int64_t c = std::min(chunk, V - v0);
    const uint16_t* wc = wr.rows(v0, c);  // used by the recompute and the dh GEMM
    chunk_logits(h, h16, wc, T, c, H, z.as<float>());
    uint16_t* dzc = dz.as<uint16_t>();  // [T, c] row-major, leading dimension c
    logprob_chunk_bwd_bf16(z.as<float>(), targets, T, c, v0, temperature, lse, entropy, dlogp,
                           dentropy, dzc);
    // dh (+)= dz_c · W_c: overwrite on the first chunk, accumulate after (f32 C, beta 0 / 1).
    gemm_bf16(false, false, T, H, c, 1.0f, dzc, c, wc, H, v0 > 0 ? 1.0f : 0.0f, dh, H, false);
    // dW[v0 : v0 + c] += dz_c^T · h (beta 1: gradients accumulate across calls, as linear_bwd;
    // beta 0 when dw held deferred zeros — each chunk writes its own rows once).
    if (dw)
      gemm_bf16(true, false, c, H, T, 1.0f, dzc, c, h16, H, dw_overwrite ? 0.0f : 1.0f, dw + v0 * H,
                H, false);
  }
}

int64_t logprob_grad_rows_per_chunk(int64_t T) {
  const int64_t rows = T / 12 / 64 * 64;
  return rows >= 64 ? rows : std::min<int64_t>(T, 64);
}

void linear_token_logprobs_with_grad_autocast(const float* h, const float* w,
                                              const uint16_t* w_bf16, const int32_t* targets,
                                              int64_t T, int64_t H, int64_t V, float temperature,
                                              const float* dlogp, const float* dentropy,
                                              float* logp, float* entropy, float* lse, float* dh,
                                              float* dw, bool dw_overwrite) {
  check_sizes("linear_token_logprobs_with_grad_autocast", T, H, V, V);
  const int64_t rows = logprob_grad_rows_per_chunk(T);
  // The whole bf16 weight: the cached copy, else w rounded once (the cache's conversion's values).
  DeviceBuffer hb(size_t(T * H) * 2), wb(w_bf16 ? 1 : size_t(V * H) * 2), z(size_t(rows * V) * 4),
      dz(size_t(rows * V) * 2), stats(size_t(rows) * 16), ent_scratch(entropy ? 1 : size_t(T) * 4);
  f32_to_bf16(h, hb.as<uint16_t>(), T * H);
  if (!w_bf16) f32_to_bf16(w, wb.as<uint16_t>(), V * H);
  const uint16_t* w16 = w_bf16 ? w_bf16 : wb.as<uint16_t>();
  float* ent = entropy ? entropy : ent_scratch.as<float>();
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    const int64_t n = std::min(rows, T - r0);
    const uint16_t* h16 = hb.as<uint16_t>() + r0 * H;
    const int32_t* tg = targets + r0;
    // The chunk's logits [n, V] (one GEMM over every vocabulary row), then its statistics as one
    // vocabulary chunk, then its dz — before the next chunk's GEMM overwrites the logits.
    linear_gemm_bf16(h16, w16, nullptr, n, V, H, z.as<float>());
    logprob_chunk_stats(z.as<float>(), tg, n, V, 0, temperature, /*accumulate=*/false,
                        stats.as<float>());
    logprob_chunk_finish(stats.as<float>(), tg, n, logp + r0, ent + r0, lse + r0);
    logprob_chunk_bwd_bf16(z.as<float>(), tg, n, V, 0, temperature, lse + r0, ent + r0, dlogp + r0,
                           dentropy ? dentropy + r0 : nullptr, dz.as<uint16_t>());
    // dh rows = dz · W (K = V); dW (+)= dz^T · h rows (beta 0 only for the first chunk of an
    // overwrite: the later chunks add to it).
    gemm_bf16(false, false, n, H, V, 1.0f, dz.as<uint16_t>(), V, w16, H, 0.0f, dh + r0 * H, H,
              false);
    if (dw)
      gemm_bf16(true, false, V, H, n, 1.0f, dz.as<uint16_t>(), V, h16, H,
                dw_overwrite && r0 == 0 ? 0.0f : 1.0f, dw, H, false);
  }
}

}  // namespace gyre::cuda
