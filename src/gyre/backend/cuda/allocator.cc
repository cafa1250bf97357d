// CUDA caching allocator and the copy/zero hooks core uses for device tensors (see allocator.h).
#include "gyre/backend/cuda/allocator.h"

#include <cuda_runtime.h>

#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

// The allocator's window into GraphPool's private state.
class GraphPoolAccess {
 public:
  static std::map<size_t, std::vector<void*>>& free_list(GraphPool& p) { return p.free_; }
  static size_t& reserved(GraphPool& p) { return p.reserved_; }
};

namespace {

constexpr size_t kSmall = 1 << 20;  // below this, 512-byte classes
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = 2u << 20;  // 2 MiB classes above

size_t round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t r = bytes < kSmall ? kSmallRound : kLargeRound;
  return (bytes + r - 1) / r * r;
}

struct FreeBlock {
  void* p;
  cudaStream_t freed_on;
};

thread_local GraphPool* t_graph_pool = nullptr;

class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    const size_t cls = round_size(bytes);
    if (GraphPool* pool = t_graph_pool) return allocate_in(pool, cls, bytes);
    cudaStream_t s = stream();
    void* p = nullptr;
    cudaStream_t wait_for = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        FreeBlock b = it->second.back();
        it->second.pop_back();
        p = b.p;
        // Kernels of another thread's stream may still use the block: wait for that stream
        // (null: freed on a stream since retired, i.e. drained and destroyed — nothing to wait
        // for, and the handle must not be used again).
        if (b.freed_on && b.freed_on != s) wait_for = b.freed_on;
      }
    }
    // Outside the lock: a wait under it would stall every other thread's allocations (and frees)
    // behind this stream, which may itself be waiting for one of them.
    if (wait_for) GYRE_CUDA_CHECK(cudaStreamSynchronize(wait_for));
    if (!p) {
      cudaError_t err = cudaMalloc(&p, cls);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        empty_cache();  // give cached blocks of other sizes back and try once more
        err = cudaMalloc(&p, cls);
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        throw OutOfMemory(fmt::format(
            "CUDA out of memory allocating {} bytes ({} in use by gyre tensors, {} reserved, "
            "{} free of {} on the device): {}; lower the micro-batch size or enable "
            "activation recomputation",
            bytes, in_use_, reserved_, free_b, total_b, cudaGetErrorString(err)));
      }
      std::lock_guard<std::mutex> lock(mu_);
      reserved_ += cls;
    }
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += bytes;
    if (in_use_ > peak_) peak_ = in_use_;
    return p;
  }

  void deallocate(void* p, size_t bytes) override {
    if (!p) return;
    cudaStream_t s = nullptr;
    try {
      s = stream();
    } catch (...) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= bytes;
    if (auto it = graph_owned_.find(p); it != graph_owned_.end()) {
      GraphPoolAccess::free_list(*it->second)[round_size(bytes)].push_back(p);
      return;
    }
    free_[round_size(bytes)].push_back({p, s});
  }

  // A graph pool's allocation: its own free list first, else a new block that the pool owns.
  void* allocate_in(GraphPool* pool, size_t cls, size_t bytes) {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& list = GraphPoolAccess::free_list(*pool)[cls];
      if (!list.empty()) {
        p = list.back();
        list.pop_back();
      }
    }
    if (!p) {
      GYRE_CUDA_CHECK(cudaMalloc(&p, cls));
      std::lock_guard<std::mutex> lock(mu_);
      reserved_ += cls;
      GraphPoolAccess::reserved(*pool) += cls;
      graph_owned_[p] = pool;
    }
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += bytes;
    if (in_use_ > peak_) peak_ = in_use_;
    return p;
  }

  // ~GraphPool: free blocks go back to the driver; blocks still held by tensors become ordinary
  // blocks (their deallocate then feeds the shared free lists).
  void release_pool(GraphPool& pool) {
    std::vector<std::pair<void*, size_t>> to_free;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [cls, list] : GraphPoolAccess::free_list(pool))
        for (void* p : list) to_free.push_back({p, cls});
      for (auto it = graph_owned_.begin(); it != graph_owned_.end();)
        it = it->second == &pool ? graph_owned_.erase(it) : std::next(it);
      for (auto& [p, cls] : to_free) reserved_ -= cls;
    }
    if (!to_free.empty()) cudaStreamSynchronize(stream());  // a replay may still run
    for (auto& [p, cls] : to_free) cudaFree(p);
  }

  Device device() const override { return Device::cuda; }
  size_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_;
  }
  size_t peak_bytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
  }

  // A thread's stream is about to be destroyed (runtime.cc, after draining it): its freed blocks
  // are idle, so they forget the handle (a later cudaStreamSynchronize on a destroyed — or
  // recycled — handle would be undefined, e.g. wait on an unrelated stream or hang).
  void stream_retired(cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [cls, list] : free_)
      for (FreeBlock& b : list)
        if (b.freed_on == s) b.freed_on = nullptr;
  }

  size_t reserved() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reserved_;
  }

  void release_cached() {
    std::map<size_t, std::vector<FreeBlock>> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
    }
    size_t released = 0;
    for (auto& [cls, list] : blocks)
      for (FreeBlock& b : list) {
        if (b.freed_on) cudaStreamSynchronize(b.freed_on);
        cudaFree(b.p);
        released += cls;
      }
    std::lock_guard<std::mutex> lock(mu_);
    reserved_ -= released;
  }

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<FreeBlock>> free_;
  std::unordered_map<void*, GraphPool*> graph_owned_;  // blocks a GraphPool owns
  size_t in_use_ = 0, peak_ = 0, reserved_ = 0;
};

CudaAllocator& the_allocator() {
  static CudaAllocator* a = new CudaAllocator();  // never destroyed: tensors outlive statics
  return *a;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  cudaStream_t s = stream();
  cudaMemcpyKind kind =
      dst_device == Device::cuda
          ? (src_device == Device::cuda ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
          : cudaMemcpyDeviceToHost;
  GYRE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s));
  // A host destination must hold the data on return: wait for the copy. A host source needs no
  // wait: cudaMemcpyAsync from pageable memory returns only after the driver has consumed (staged)
  // the source bytes, and the device copy is stream-ordered before every later kernel — so an
  // upload (a step's index arrays) no longer drains the GPU's queue.
  if (kind == cudaMemcpyDeviceToHost) GYRE_CUDA_CHECK(cudaStreamSynchronize(s));
}

void zero_bytes(void* dst, size_t bytes) {
  GYRE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
}

}  // namespace

Allocator& device_allocator() { return the_allocator(); }

void stream_retired(CUstream_st* s) { the_allocator().stream_retired(s); }

GraphPool::~GraphPool() { the_allocator().release_pool(*this); }
GraphPoolScope::GraphPoolScope(GraphPool* pool) : previous_(t_graph_pool) { t_graph_pool = pool; }
GraphPoolScope::~GraphPoolScope() { t_graph_pool = previous_; }
size_t reserved_bytes() { return the_allocator().reserved(); }
void empty_cache() { the_allocator().release_cached(); }

void register_hooks() {
  DeviceHooks h;
  h.allocator = &the_allocator();
  h.copy = &copy_bytes;
  h.zero = &zero_bytes;
  register_device_hooks(Device::cuda, h);
}

}  // namespace gyre::cuda
