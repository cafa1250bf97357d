// The blocking of the deterministic column sums (column_sums_add, elementwise.cu), for kernels that
// produce the same partials inside a fused pass (rope_attention_bf16.cu's packed dq/dk/dv writes
// the q/k/v bias gradients' partials while it rounds the values) and then finish them here.
//
// column_sums_add(a [R, C], out [C]) is, for every column c:
//   part[k, c] = Σ_{r in chunk k, in row order} double(a[r, c]), from 0.0 (f64), where chunk k is
//                rows [k·kRowChunk, min(R, (k + 1)·kRowChunk)), k < chunks(R);
//   out[c]     = float(double(out[c]) + Σ_k part[k, c])   (k in order, from 0.0; R = 0: one
//                chunk of zeros, so out[c] + 0.0).
// A producer that computes part exactly so (its own thread per column of a chunk, rows in order)
// and calls finish_add gets column_sums_add's bits.
#pragma once
#include <algorithm>
#include <cstdint>

namespace gyre::cuda::colsum {

inline constexpr int64_t kRowChunk = 128;  // rows per partial

// Partials of R rows (at least one chunk, as column_sums_add allocates for R = 0).
inline int64_t chunks(int64_t R) { return std::max<int64_t>(1, (R + kRowChunk - 1) / kRowChunk); }

// The second stage: out[c] = float(double(out[c]) + Σ_k part[k, c]) for c < C, over the device
// partials part [n_chunks, C] (f64) — column_sums_add's own finishing kernel.
void finish_add(const double* part, int64_t n_chunks, int64_t C, float* out);

}  // namespace gyre::cuda::colsum
