// Top-k / top-p / min-p token sampling on the GPU (ops::sample_tokens_filtered, backend/
// sampling_ops.h), picking the token infer::Sampler picks on the host for the same logits, seed and
// step (no penalties, no masked ids). Kernels: sampling_filtered.cu.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gyre::cuda {

// Candidates one block sorts in shared memory; a row with more goes to the global-memory path.
constexpr int64_t kFilteredBlockCandidates = 4096;

// What the per-row kernel leaves for the host and the global-memory path (one per row).
struct FilteredRowInfo {
  int64_t n_cand = 0;   // candidates of a row the block could not sort, 0 once the row is done
  uint32_t cut = 0;     // float bits of the cut value c: candidates are e > c plus ties at c
  uint32_t mx = 0;      // float bits of the row's max logit
  int64_t take_eq = 0;  // how many ties at c (lowest ids first) are candidates
  double total = 0;     // Σ e over the row (f64), for the top-p mass limit
  double u = 0;         // the row's Philox uniform
  float inv_t = 0;      // 1 / temperature
  int32_t unused = 0;
};

// Pass 1, one block per row: greedy rows, plain rows (no top-k/top-p: id-order walk as
// sample_rows) and filtered rows whose candidate set fits kFilteredBlockCandidates write
// out_tokens[row] and info[row].n_cand = 0; the others write info[row] (n_cand > 0) and leave the
// token to sample_filtered_large_rows.
void sample_filtered_rows(const float* logits, int64_t n, int64_t V, const float* temperature,
                          const int32_t* top_k, const float* top_p, const uint64_t* seeds,
                          const int64_t* steps, float min_p, int32_t* out_tokens,
                          FilteredRowInfo* info);

// Device workspace bytes sample_filtered_large_rows needs for `total` candidates in n_rows rows
// (offsets: the device segment offsets it will get).
size_t sample_filtered_large_workspace_bytes(int64_t total, int64_t n_rows, const int32_t* offsets);
// The global-memory path for the n_rows rows pass 1 left (device rows[b], their candidate counts
// prefixed on the host from info[].n_cand into device offsets [n_rows + 1], offsets[n_rows] =
// total < 2^31): one block per row compacts its candidates into the workspace, a CUB segmented
// radix sort orders every segment, and one thread per row walks its segment as the CPU does.
// Stream-ordered after sample_filtered_rows.
void sample_filtered_large_rows(const float* logits, int64_t V, const int32_t* top_k,
                                const float* top_p, float min_p, const FilteredRowInfo* info,
                                const int32_t* rows, const int32_t* offsets, int64_t n_rows,
                                int64_t total, void* workspace, size_t workspace_bytes,
                                int32_t* out_tokens);

}  // namespace gyre::cuda
