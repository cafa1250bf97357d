// ops::prefetch_weights_l2 (l2_prefetch_ops.h) over backend/cuda/l2_prefetch.cu.
#include "gyre/backend/l2_prefetch_ops.h"

#include <atomic>

#include "gyre/backend/cuda/l2_prefetch.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/env.h"

namespace gyre::ops {

namespace {
std::atomic<uint64_t> g_launches{0};
}  // namespace

uint64_t l2_prefetch_launches() { return g_launches.load(); }

int decode_l2_prefetch_mode() { return int(env_int("GYRE_DECODE_L2_PREFETCH", 0, 0, 2)); }

void prefetch_weights_l2(std::initializer_list<const Tensor*> weights) {
  if constexpr (detail::kCuda) {
    Bf16WeightCache* cache = bf16_weight_cache();
    if (!cache || !bf16_autocast()) return;  // the GEMVs read the copies only under autocast
    const void* ptrs[cuda::kMaxL2PrefetchRanges];
    size_t bytes[cuda::kMaxL2PrefetchRanges];
    int n = 0;
    for (const Tensor* w : weights) {
      if (n == cuda::kMaxL2PrefetchRanges) break;
      if (!w || !w->defined() || w->device() != Device::cuda || w->dtype() != DType::f32) continue;
      // The copy the GEMV reads, only where it exists already: looked up, never converted here
      // (copy_to_write is the cache's no-conversion lookup; nothing is written through it), so
      // the prefetch cannot change which copies exist or where (bf16_pair's adjacency).
      const uint16_t* copy = cache->copy_to_write(*w);
      if (!copy) continue;
      ptrs[n] = copy;
      bytes[n] = size_t(w->numel()) * 2;
      ++n;
    }
    if (n) {
      cuda::l2_prefetch_side(ptrs, bytes, n);
      g_launches.fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    (void)weights;
  }
}

}  // namespace gyre::ops
