// Template body of build_step_batch (step_batch.h); header-only so the engine and the scheduler
// benchmark inline the per-request callback.
#pragma once
#include <algorithm>

namespace gyre::infer {

inline void StepBatch::clear() {
  ids.clear();
  positions.clear();
  cu_seqlens_q.clear();
  kv_lens.clear();
  page_indptr.clear();
  page_indices.clear();
  slot_mapping.clear();
  logits_rows.clear();
  rows.clear();
}

template <typename PromptRowsFn>
void build_step_batch(const StepPlan& plan, int32_t page_size, PromptRowsFn prompt_rows_from,
                      StepBatch& out) {
  out.clear();
  out.cu_seqlens_q.push_back(0);
  out.page_indptr.push_back(0);
  int32_t t = 0;
  for (size_t c = 0; c < plan.chunks.size(); ++c) {
    const ScheduledChunk& ch = plan.chunks[c];
    const Request* r = ch.req;
    const int64_t end = ch.start + ch.num_tokens;
    const int64_t np = (end + page_size - 1) / page_size;
    const int64_t prompt_len = int64_t(r->prompt.size());
    int64_t first_lp = prompt_rows_from(r);
    for (int64_t p = ch.start; p < end; ++p, ++t) {
      out.ids.push_back(r->token_at(p));
      out.positions.push_back(int32_t(p));
      out.slot_mapping.push_back(r->pages[size_t(p / page_size)] * page_size +
                                 int32_t(p % page_size));
      if (first_lp >= 0 && p >= first_lp && p < prompt_len - 1) {
        out.logits_rows.push_back(t);
        out.rows.push_back({int32_t(c), p, false});
      }
    }
    if (ch.sample) {
      out.logits_rows.push_back(t - 1);
      out.rows.push_back({int32_t(c), end - 1, true});
    }
    out.cu_seqlens_q.push_back(t);
    out.kv_lens.push_back(int32_t(end));
    out.page_indices.insert(out.page_indices.end(), r->pages.begin(), r->pages.begin() + np);
    out.page_indptr.push_back(int32_t(out.page_indices.size()));
  }
}

}  // namespace gyre::infer
