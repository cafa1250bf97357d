// ops::Bf16WeightCache (ops.h): one bf16 device copy per f32 CUDA weight, converted on first use
// and kept until clear(). Keyed by the weight's first byte and element count; the copies live in
// the CUDA pool allocator (cuda::DeviceBuffer), so clear() returns them to the pool.
#include <algorithm>
#include <map>
#include <memory>
#include <utility>

#include "gyre/backend/cuda/allocator.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre::ops {

struct Bf16WeightCache::Impl {
#ifdef GYRE_HAVE_CUDA
  std::map<std::pair<const void*, int64_t>, std::unique_ptr<cuda::DeviceBuffer>> copies;
#endif
  size_t bytes = 0;
};

Bf16WeightCache::Bf16WeightCache() : impl_(new Impl) {}
Bf16WeightCache::~Bf16WeightCache() { delete impl_; }

void Bf16WeightCache::clear() {
#ifdef GYRE_HAVE_CUDA
  impl_->copies.clear();
#endif
  impl_->bytes = 0;
}

size_t Bf16WeightCache::bytes() const { return impl_->bytes; }

size_t Bf16WeightCache::entries() const {
#ifdef GYRE_HAVE_CUDA
  return impl_->copies.size();
#else
  return 0;
#endif
}

const uint16_t* Bf16WeightCache::bf16(const Tensor& w) {
  GYRE_CHECK(w.defined() && w.dtype() == DType::f32 && w.device() == Device::cuda,
             "Bf16WeightCache: weights must be f32 CUDA tensors, got {} on {}",
             w.defined() ? dtype_name(w.dtype()) : "undefined", device_name(w.device()));
#ifdef GYRE_HAVE_CUDA
  auto& slot = impl_->copies[{w.raw(), w.numel()}];
  if (!slot) {
    // The copies outlive any CUDA graph being captured: never from a graph's private pool.
    cuda::GraphPoolScope shared_memory(nullptr);
    const size_t bytes = size_t(std::max<int64_t>(w.numel(), 1)) * 2;
    slot = std::make_unique<cuda::DeviceBuffer>(bytes);
    if (w.numel() > 0) cuda::f32_to_bf16(w.f32(), slot->as<uint16_t>(), w.numel());
    impl_->bytes += bytes;
  }
  return slot->as<uint16_t>();
#else
  GYRE_THROW(unsupported, "Bf16WeightCache: this build has no CUDA backend");
#endif
}

}  // namespace gyre::ops
