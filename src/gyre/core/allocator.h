// Allocator interface: every tensor's bytes come from one. The CPU allocator hands out 64-byte
// aligned blocks; the CUDA backend provides a device allocator behind the same interface, shared by
// trainer and rollout engine so colocated mode can release one's memory for the other.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gyre {

enum class Device : uint8_t { cpu, cuda };
const char* device_name(Device d);

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual Device device() const = 0;
  // Bytes currently handed out and the high-water mark since the last reset_peak().
  virtual size_t bytes_in_use() const = 0;
  virtual size_t peak_bytes() const = 0;
  virtual void reset_peak() = 0;
};

// Process-wide CPU allocator (thread-safe, 64-byte alignment, zero-size requests allowed).
Allocator& cpu_allocator();

// A device backend (backend/cuda) registers its allocator and byte movers here at start-up, so core
// code (Tensor) can allocate, copy and zero device memory without including a device runtime.
struct DeviceHooks {
  Allocator* allocator = nullptr;
  // Copies `bytes` from src (on src_device) to dst (on dst_device); one side may be the CPU.
  // Returns once dst may be read by the host (device->host) and src may be reused (host->device).
  void (*copy)(void* dst, Device dst_device, const void* src, Device src_device,
               size_t bytes) = nullptr;
  void (*zero)(void* dst, size_t bytes) = nullptr;  // on the device, stream-ordered
};
void register_device_hooks(Device device, const DeviceHooks& hooks);
// The hooks of `device`, or nullptr when no backend registered it (a CPU-only build).
const DeviceHooks* device_hooks(Device device);

}  // namespace gyre
