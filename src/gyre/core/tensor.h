// Tensor: a typed, shaped, contiguous view into shared Storage.
//
// Invariants: data is always row-major contiguous (views are made by narrowing the leading
// dimension or by reshaping, both of which keep contiguity); `offset_` is in bytes from the storage
// start; copying a Tensor shares storage (like a shared_ptr) — use clone() for a deep copy. Storage
// may be owned (allocator) or borrowed (e.g. an mmap'ed safetensors file kept alive by its
// keepalive).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/allocator.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"

namespace gyre {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  // Owned bytes from an allocator.
  Storage(Allocator& alloc, size_t bytes);
  // Borrowed bytes; `release` runs when the last tensor using them goes away (may be empty).
  Storage(void* data, size_t bytes, Device device, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // The bytes, for reading or writing: zeros deferred by defer_zero() are written first.
  void* data() const {
    if (zero_pending_.load(std::memory_order_acquire)) write_pending_zero();
    return data_;
  }
  // The address alone, for identity and overlap checks: never writes deferred zeros.
  const void* address() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  // Deferred zeros (device storage only; Tensor::zero_deferred). The storage reads as zeros from
  // here on, but no memset runs yet: the first data() writes them, unless an op first claims them
  // (claim_pending_zero() returns true once) and overwrites every byte instead of accumulating —
  // a parameter gradient's first dW GEMM then runs with beta 0 and the memset disappears.
  void defer_zero();
  bool claim_pending_zero() { return zero_pending_.exchange(false, std::memory_order_acq_rel); }
  bool zero_pending() const { return zero_pending_.load(std::memory_order_acquire); }

 private:
  void write_pending_zero() const;

  void* data_;
  size_t bytes_;
  Device device_;
  Allocator* alloc_ = nullptr;
  std::function<void()> release_;
  mutable std::atomic<bool> zero_pending_{false};
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() == false

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, float value);  // f32, CPU
  // Copies `values` into a new CPU tensor.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape);
  static Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
  // Wraps existing memory without copying; `keepalive` is held as long as any view lives.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device,
                       std::shared_ptr<void> keepalive);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // raw()'s address without touching the data (Storage::address): for identity and overlap checks.
  const void* address() const { return static_cast<const char*>(storage_->address()) + offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  // Typed access with a dtype check (f32 -> float, i32 -> int32_t, i64 -> int64_t ...).
  float* f32() const;
  int32_t* i32() const;
  int64_t* i64() const;

  // Views (share storage).
  Tensor narrow(int64_t start, int64_t length) const;  // along dim 0
  Tensor select(int64_t index) const;                  // drops dim 0
  Tensor reshape(const Shape& shape) const;            // same numel; one -1 allowed
  // Deep copies.
  Tensor clone() const;
  Tensor to(DType dtype) const;  // float dtypes only; returns *this if already that dtype
  // Same dtype and shape on `device` (through the registered device hooks); *this if already there.
  Tensor to(Device device) const;
  void copy_from(const Tensor& src);  // same shape; converts dtype
  void fill(float value);             // float dtypes
  void zero();
  // zero(), deferred where that can save the memset: a device tensor that spans its whole
  // storage reads as zeros from here on, written by the first op that touches it — or never, when
  // that op claims them (claim_pending_zero) and overwrites the tensor. Anything else (a CPU
  // tensor, a view of part of a storage) is zeroed now.
  void zero_deferred();
  // True once after zero_deferred() when this tensor spans its storage and nothing has read or
  // written it since: the caller must then overwrite every element (e.g. a GEMM with beta 0
  // instead of 1). False otherwise, and the data (deferred zeros included) is as it was. Call it
  // after every argument check, right before the kernel that writes the tensor.
  bool claim_pending_zero();

  std::vector<float> to_vector() const;  // any float dtype -> f32 values
  const std::shared_ptr<Storage>& storage() const { return storage_; }

 private:
  bool spans_storage() const;  // a view of the whole storage (offset 0, every byte)
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::f32;
  Shape shape_;
};

}  // namespace gyre
