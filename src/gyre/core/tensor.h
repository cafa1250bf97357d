// Tensor: a typed, shaped, contiguous view into shared Storage.
//
// Invariants: data is always row-major contiguous (views are made by narrowing the leading
// dimension or by reshaping, both of which keep contiguity); `offset_` is in bytes from the storage
// start; copying a Tensor shares storage (like a shared_ptr) — use clone() for a deep copy. Storage
// may be owned (allocator) or borrowed (e.g. an mmap'ed safetensors file kept alive by its
// keepalive).
#pragma once
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

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  Allocator* alloc_ = nullptr;
  std::function<void()> release_;
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

  std::vector<float> to_vector() const;  // any float dtype -> f32 values
  const std::shared_ptr<Storage>& storage() const { return storage_; }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::f32;
  Shape shape_;
};

}  // namespace gyre
