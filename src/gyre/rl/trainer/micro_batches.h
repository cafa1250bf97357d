// Splitting one optimizer step's samples into micro-batches, as slime's build_dp_schedule does for
// one data-parallel rank: fixed --micro-batch-size samples, or with --use-dynamic-batch-size
// first-fit packing by token count under --max-tokens-per-gpu (a sample longer than the budget is
// alone in its micro-batch). Micro-batches keep sample order inside each (packing order is stable),
// so the old-log-prob recompute and the training forward see identical packed batches — which is
// what makes the first micro-step's ratio exactly 1 (same shapes, same kernels, same bits).
#pragma once
#include <cstdint>
#include <vector>

namespace gyre::rl {

struct MicroBatchOptions {
  int64_t micro_batch_size = 1;    // --micro-batch-size
  bool dynamic = false;            // --use-dynamic-batch-size
  int64_t max_tokens_per_gpu = 0;  // --max-tokens-per-gpu (required when dynamic)
};

// `lengths[i]` = total tokens of sample i. Returns lists of sample indices (each list = one
// micro-batch); every index appears exactly once. Errors: dynamic without a positive token budget,
// micro_batch_size < 1.
std::vector<std::vector<int64_t>> make_micro_batches(const std::vector<int64_t>& lengths,
                                                     const MicroBatchOptions& options);

}  // namespace gyre::rl
