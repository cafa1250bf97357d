// ops::Bf16WeightCache and ops::StreamFence (ops.h). The cache holds one bf16 device copy per f32
// CUDA weight, converted on first use and kept until clear(); keyed by the weight's first byte and
// element count, each entry keeping its source tensor (so the key's storage stays alive and is
// never reused by another tensor). The copies live in the CUDA pool allocator
// (cuda::DeviceBuffer), so clear() returns them to the pool; refresh() re-casts them in place with
// one multi-tensor launch (backend/cuda/multi_tensor.cu), so their addresses never change between
// clears. The fresh mark is set only by copies_written() covering every entry and consumed by
// take_fresh(); clear(), refresh() and mark_stale() drop it.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "gyre/backend/cuda/allocator.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/multi_tensor.h"
#include "gyre/backend/cuda/pdl.h"
#ifdef GYRE_HAVE_CUDA
#include <cuda_runtime.h>

#include "gyre/backend/cuda/runtime.h"
#endif
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre::ops {

namespace {

// What makes two tensors the same weight to the cache: storage, first byte, element count.
using SourceKey = std::tuple<const Storage*, const void*, int64_t>;
// Used only by the CUDA build's cache paths.
[[maybe_unused]] SourceKey source_key(const Tensor& t) {
  return {t.storage().get(), t.address(), t.numel()};
}

}  // namespace

struct Bf16WeightCache::Impl {
  mutable std::mutex mu;
#ifdef GYRE_HAVE_CUDA
  struct Entry {
    Tensor source;  // keeps the f32 storage (and so the key's address) alive
    // The buffer holding the copy (shared by the two entries of a bf16_pair) and the copy's first
    // element in it.
    std::shared_ptr<cuda::DeviceBuffer> buffer;
    uint16_t* copy = nullptr;
  };
  std::map<std::pair<const void*, int64_t>, Entry> copies;
  // The entry of w, or null (a different storage at the same address cannot exist while the entry
  // holds its source; the check guards views that only look alike).
  Entry* find(const Tensor& w) {
    auto it = copies.find({w.address(), w.numel()});
    if (it == copies.end() || it->second.source.storage() != w.storage()) return nullptr;
    return &it->second;
  }
#endif
  size_t bytes = 0;
  uint64_t generation = 0;  // clear()s so far
  uint64_t hits = 0;        // bf16() calls that found their copy
  bool fresh = false;
};

Bf16WeightCache::Bf16WeightCache() : impl_(new Impl) {}
Bf16WeightCache::~Bf16WeightCache() { delete impl_; }

void Bf16WeightCache::clear() {
  std::lock_guard<std::mutex> lk(impl_->mu);
#ifdef GYRE_HAVE_CUDA
  impl_->copies.clear();
#endif
  impl_->bytes = 0;
  impl_->fresh = false;
  ++impl_->generation;
}

size_t Bf16WeightCache::bytes() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->bytes;
}

uint64_t Bf16WeightCache::generation() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->generation;
}

uint64_t Bf16WeightCache::hits() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->hits;
}

size_t Bf16WeightCache::entries() const {
#ifdef GYRE_HAVE_CUDA
  std::lock_guard<std::mutex> lk(impl_->mu);
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
  std::lock_guard<std::mutex> lk(impl_->mu);
  auto& slot = impl_->copies[{w.address(), w.numel()}];
  if (slot.copy) ++impl_->hits;
  if (!slot.copy) {
    // The copies outlive any CUDA graph being captured: never from a graph's private pool.
    cuda::GraphPoolScope shared_memory(nullptr);
    const size_t bytes = size_t(std::max<int64_t>(w.numel(), 1)) * 2;
    slot.buffer = std::make_shared<cuda::DeviceBuffer>(bytes);
    slot.copy = slot.buffer->as<uint16_t>();
    slot.source = w;
    if (w.numel() > 0) {
      cuda::f32_to_bf16(w.f32(), slot.copy, w.numel());
      // The GEMV that asked for the copy loads it before waiting for its predecessor, this
      // conversion (backend/cuda/pdl.cuh, invariant 1).
      cuda::pdl_barrier();
    }
    impl_->bytes += bytes;
  }
  return slot.copy;
#else
  GYRE_THROW(unsupported, "Bf16WeightCache: this build has no CUDA backend");
#endif
}

const uint16_t* Bf16WeightCache::bf16_pair(const Tensor& a, const Tensor& b) {
  for (const Tensor* w : {&a, &b})
    GYRE_CHECK(w->defined() && w->dtype() == DType::f32 && w->device() == Device::cuda,
               "Bf16WeightCache::bf16_pair: weights must be f32 CUDA tensors, got {} on {}",
               w->defined() ? dtype_name(w->dtype()) : "undefined", device_name(w->device()));
#ifdef GYRE_HAVE_CUDA
  const std::pair<const void*, int64_t> ka{a.address(), a.numel()}, kb{b.address(), b.numel()};
  GYRE_CHECK(ka != kb, "Bf16WeightCache::bf16_pair: a and b are the same weight");
  std::lock_guard<std::mutex> lk(impl_->mu);
  // Keyed as bf16() keys its lookups (first byte, element count).
  auto ia = impl_->copies.find(ka), ib = impl_->copies.find(kb);
  const Impl::Entry* ea = ia != impl_->copies.end() && ia->second.copy ? &ia->second : nullptr;
  const Impl::Entry* eb = ib != impl_->copies.end() && ib->second.copy ? &ib->second : nullptr;
  if (ea || eb) {
    // Already copied: adjacent only if an earlier bf16_pair(a, b) made them so.
    const bool adjacent = ea && eb && ea->buffer == eb->buffer && eb->copy == ea->copy + a.numel();
    return adjacent ? ea->copy : nullptr;
  }
  // Neither has a copy: one buffer, a's copy then b's, each converted as bf16() converts it.
  cuda::GraphPoolScope shared_memory(nullptr);  // as bf16(): never a graph's private pool
  const size_t bytes = size_t(std::max<int64_t>(a.numel() + b.numel(), 1)) * 2;
  auto buffer = std::make_shared<cuda::DeviceBuffer>(bytes);
  uint16_t* base = buffer->as<uint16_t>();
  Impl::Entry& sa = impl_->copies[ka];
  sa.buffer = buffer, sa.copy = base, sa.source = a;
  Impl::Entry& sb = impl_->copies[kb];
  sb.buffer = buffer, sb.copy = base + a.numel(), sb.source = b;
  if (a.numel() > 0) cuda::f32_to_bf16(a.f32(), sa.copy, a.numel());
  if (b.numel() > 0) cuda::f32_to_bf16(b.f32(), sb.copy, b.numel());
  if (a.numel() + b.numel() > 0) cuda::pdl_barrier();  // as after bf16()'s conversion
  impl_->bytes += bytes;
  return base;
#else
  GYRE_THROW(unsupported, "Bf16WeightCache: this build has no CUDA backend");
#endif
}

void Bf16WeightCache::refresh() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->fresh = false;
#ifdef GYRE_HAVE_CUDA
  const size_t k = impl_->copies.size();
  if (k == 0) return;
  std::vector<const float*> src;
  std::vector<uint16_t*> dst;
  std::vector<int64_t> n;
  src.reserve(k), dst.reserve(k), n.reserve(k);
  for (auto& [key, e] : impl_->copies) {
    src.push_back(e.source.f32());
    dst.push_back(e.copy);
    n.push_back(e.source.numel());
  }
  cuda::f32_to_bf16_many(src.data(), dst.data(), n.data(), int64_t(k));
  cuda::pdl_barrier();  // as after a conversion in bf16(): the next GEMV may read them early
#endif
}

bool Bf16WeightCache::sources_within(const std::vector<Tensor>& params) const {
  std::lock_guard<std::mutex> lk(impl_->mu);
#ifdef GYRE_HAVE_CUDA
  if (impl_->copies.empty()) return true;
  std::set<SourceKey> keys;
  for (const Tensor& p : params)
    if (p.defined()) keys.insert(source_key(p));
  for (const auto& [key, e] : impl_->copies)
    if (!keys.count(source_key(e.source))) return false;
#else
  (void)params;
#endif
  return true;
}

uint16_t* Bf16WeightCache::copy_to_write(const Tensor& w) {
  if (!w.defined() || w.dtype() != DType::f32 || w.device() != Device::cuda) return nullptr;
#ifdef GYRE_HAVE_CUDA
  std::lock_guard<std::mutex> lk(impl_->mu);
  Impl::Entry* e = impl_->find(w);
  return e ? e->copy : nullptr;
#else
  return nullptr;
#endif
}

void Bf16WeightCache::copies_written(const std::vector<const Tensor*>& sources) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  bool all = true;
#ifdef GYRE_HAVE_CUDA
  std::set<SourceKey> keys;
  for (const Tensor* s : sources)
    if (s && s->defined()) keys.insert(source_key(*s));
  for (const auto& [key, e] : impl_->copies)
    if (!keys.count(source_key(e.source))) {
      all = false;
      break;
    }
#else
  (void)sources;
#endif
  impl_->fresh = all;
}

void Bf16WeightCache::mark_stale() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->fresh = false;
}

bool Bf16WeightCache::take_fresh() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  const bool fresh = impl_->fresh;
  impl_->fresh = false;
  return fresh;
}

// ---- StreamFence

StreamFence::StreamFence() = default;

StreamFence::~StreamFence() {
#ifdef GYRE_HAVE_CUDA
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
#endif
}

void StreamFence::record() {
#ifdef GYRE_HAVE_CUDA
  if (!cuda::available()) return;
  if (!event_) {
    cudaEvent_t e = nullptr;
    GYRE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
  }
  cudaStream_t s = cuda::stream();
  GYRE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), s));
  stream_ = s;
#endif
}

void StreamFence::wait() const {
#ifdef GYRE_HAVE_CUDA
  if (!event_) return;
  cudaStream_t s = cuda::stream();
  if (s == stream_) return;  // the same thread: already in order
  GYRE_CUDA_CHECK(cudaStreamWaitEvent(s, static_cast<cudaEvent_t>(event_), 0));
#endif
}

}  // namespace gyre::ops
