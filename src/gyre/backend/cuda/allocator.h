// The CUDA device allocator: cudaMalloc behind a caching pool, shared by trainer and rollout engine
// (one per process), with in-use and peak accounting, plus host<->device byte copies. Registered
// with core (register_device_hooks) so Tensor::empty(..., Device::cuda), Tensor::to(Device),
// clone(), zero() and copy_from() work on device tensors.
//
// Invariants: requests are rounded up to 512 bytes (small) or 2 MiB (large) size classes and freed
// blocks are kept per class for reuse, so a training step that allocates the same shapes each step
// stops calling cudaMalloc after the first. A block is reused on the stream it was freed on without
// waiting (stream order protects it); a different thread's stream first waits for that stream.
// bytes_in_use / peak_bytes count requested bytes of live tensors (what PyTorch calls
// memory_allocated), reserved_bytes what the pool holds from the driver.
#pragma once
#include <cstddef>
#include <map>
#include <vector>

#include "gyre/core/allocator.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace gyre::cuda {

// The process-wide device allocator (also registered as Device::cuda's allocator).
Allocator& device_allocator();
// Called by a thread's stream owner (runtime.cc) after draining the stream and before destroying
// it: cached blocks freed on it stop referring to it (they are idle).
void stream_retired(CUstream_st* s);  // a cudaStream_t
// Bytes obtained from cudaMalloc and not yet returned (live + cached).
size_t reserved_bytes();
// Returns every cached (free) block to the driver, e.g. before the rollout engine takes the memory
// the trainer released in colocated mode.
void empty_cache();
// Registers the allocator and copy/zero hooks with core; idempotent (runs at static init of
// runtime.cc too).
void register_hooks();

// Device memory owned by one CUDA graph (PyTorch's graph-private pool). While a GraphPoolScope is
// active on a thread, that thread's device allocations come from the pool and return to it when
// freed — wherever they are freed later. A captured graph bakes its buffers' addresses in, so no
// other work may ever be handed those blocks: the pool keeps them until it is destroyed (after its
// graph), then returns the free ones to the driver; blocks still held by live tensors then become
// ordinary pool-allocator blocks. Allocations under a scope must come from one stream (the
// capturing thread's).
class GraphPool {
 public:
  GraphPool() = default;
  ~GraphPool();
  GraphPool(const GraphPool&) = delete;
  GraphPool& operator=(const GraphPool&) = delete;
  size_t reserved_bytes() const { return reserved_; }

 private:
  friend class GraphPoolAccess;
  std::map<size_t, std::vector<void*>> free_;  // size class -> free blocks
  size_t reserved_ = 0;                        // bytes obtained from cudaMalloc
};
class GraphPoolScope {
 public:
  explicit GraphPoolScope(GraphPool* pool);
  ~GraphPoolScope();
  GraphPoolScope(const GraphPoolScope&) = delete;
  GraphPoolScope& operator=(const GraphPoolScope&) = delete;

 private:
  GraphPool* previous_;
};

// Scratch device memory for one op: taken from the pool, returned when the op's host code leaves
// scope. Safe without a sync because a reuse on the same stream is ordered after the kernels.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes), p_(device_allocator().allocate(bytes)) {}
  ~DeviceBuffer() { device_allocator().deallocate(p_, bytes_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  size_t bytes_;
  void* p_;
};

}  // namespace gyre::cuda
