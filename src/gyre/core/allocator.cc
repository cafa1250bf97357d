#include "gyre/core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "gyre/core/error.h"

namespace gyre {

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

namespace {
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw OutOfMemory(fmt::format("out of host memory allocating {} bytes", bytes));
    size_t now = in_use_.fetch_add(bytes) + bytes;
    size_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    std::free(p);
    in_use_.fetch_sub(bytes);
  }
  Device device() const override { return Device::cpu; }
  size_t bytes_in_use() const override { return in_use_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void reset_peak() override { peak_.store(in_use_.load()); }

 private:
  std::atomic<size_t> in_use_{0}, peak_{0};
};
}  // namespace

namespace {
DeviceHooks& cuda_hooks_slot() {
  static DeviceHooks h;  // function-local: safe to fill from other static initialisers
  return h;
}
}  // namespace

void register_device_hooks(Device device, const DeviceHooks& hooks) {
  GYRE_CHECK(device == Device::cuda, "only the cuda device takes registered hooks");
  cuda_hooks_slot() = hooks;
}

const DeviceHooks* device_hooks(Device device) {
  if (device != Device::cuda) return nullptr;
  const DeviceHooks& h = cuda_hooks_slot();
  return h.allocator ? &h : nullptr;
}

Allocator& cpu_allocator() {
  static CpuAllocator* a =
      new CpuAllocator();  // never destroyed: tensors may outlive static teardown
  return *a;
}

}  // namespace gyre
