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

}  // namespace gyre
