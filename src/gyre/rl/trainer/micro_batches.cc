#include "gyre/rl/trainer/micro_batches.h"

#include "gyre/core/error.h"

namespace gyre::rl {

std::vector<std::vector<int64_t>> make_micro_batches(const std::vector<int64_t>& lengths,
                                                     const MicroBatchOptions& o) {
  std::vector<std::vector<int64_t>> out;
  const int64_t n = int64_t(lengths.size());
  if (!o.dynamic) {
    if (o.micro_batch_size < 1)
      GYRE_THROW(invalid_argument, "--micro-batch-size must be >= 1, got {}", o.micro_batch_size);
    for (int64_t i = 0; i < n; i += o.micro_batch_size) {
      std::vector<int64_t> mb;
      for (int64_t j = i; j < std::min(n, i + o.micro_batch_size); ++j) mb.push_back(j);
      out.push_back(std::move(mb));
    }
    return out;
  }
  if (o.max_tokens_per_gpu <= 0)
    GYRE_THROW(invalid_argument,
               "--use-dynamic-batch-size needs --max-tokens-per-gpu > 0 (got {}); a good value is "
               "about --rollout-max-response-len plus the prompt length",
               o.max_tokens_per_gpu);
  // First fit (slime's get_seqlen_balanced / first-fit packing): each sample goes into the first
  // micro-batch with room; an oversize sample opens its own.
  std::vector<int64_t> used;
  for (int64_t i = 0; i < n; ++i) {
    size_t b = 0;
    for (; b < out.size(); ++b)
      if (used[b] + lengths[size_t(i)] <= o.max_tokens_per_gpu) break;
    if (b == out.size()) {
      out.emplace_back();
      used.push_back(0);
    }
    out[b].push_back(i);
    used[b] += lengths[size_t(i)];
  }
  return out;
}

}  // namespace gyre::rl
