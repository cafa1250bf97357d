// StepBatch: the flat i32 arrays one engine step hands to the model and the paged attention kernel,
// built from the scheduler's StepPlan. Everything is a contiguous array (GPU-shaped: a device copy
// of each is the whole "upload" of a step):
//   ids, positions [T]            the new tokens, packed chunk after chunk
//   cu_seqlens_q [B+1]            query rows of each chunk
//   kv_lens [B]                   cached prefix + new tokens per chunk
//   page_indptr [B+1], page_indices [sum pages]   CSR page table (FlashInfer paged_kv layout)
//   slot_mapping [T]              where each new token's K/V goes (page * page_size + slot)
//   logits_rows [R]               rows whose logits are needed (sampling, prompt log-probs)
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/infer/scheduler.h"

namespace gyre::infer {

struct LogitsRow {
  int32_t chunk;  // index into plan.chunks
  int64_t pos;    // sequence position of the token whose next-token logits this row holds
  bool sample;    // the last known token: sample from it; else a prompt log-prob row
};

struct StepBatch {
  std::vector<int32_t> ids, positions, cu_seqlens_q, kv_lens, page_indptr, page_indices;
  std::vector<int32_t> slot_mapping, logits_rows;
  std::vector<LogitsRow> rows;  // parallel to logits_rows
  void clear();
};

// Fills `out` from `plan` (reusing its capacity). prompt_rows_from(req) returns the first position
// whose logits are wanted for prompt log-probs (-1: none); rows for positions in
// [that, prompt_len - 1) of the chunk are added before the sampling row.
template <typename PromptRowsFn>
void build_step_batch(const StepPlan& plan, int32_t page_size, PromptRowsFn prompt_rows_from,
                      StepBatch& out);

}  // namespace gyre::infer

#include "gyre/infer/step_batch_impl.h"
