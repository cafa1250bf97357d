#include "gyre/core/tensor.h"

#include <cstring>

namespace gyre {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Storage::Storage(Allocator& alloc, size_t bytes)
    : data_(alloc.allocate(bytes)), bytes_(bytes), device_(alloc.device()), alloc_(&alloc) {}

Storage::Storage(void* data, size_t bytes, Device device, std::function<void()> release)
    : data_(data), bytes_(bytes), device_(device), release_(std::move(release)) {}

void Storage::defer_zero() {
  GYRE_CHECK(device_ != Device::cpu, "Storage::defer_zero: host storage is zeroed at once");
  zero_pending_.store(true, std::memory_order_release);
}

void Storage::write_pending_zero() const {
  // One thread writes the zeros: whoever clears the flag. The memset is stream-ordered like any
  // kernel, so whatever runs after data() returned sees zeros.
  if (!zero_pending_.exchange(false, std::memory_order_acq_rel) || bytes_ == 0) return;
  const DeviceHooks* h = device_hooks(device_);
  GYRE_CHECK(h && h->zero, "deferred zeros on {} without a zero hook", device_name(device_));
  h->zero(data_, bytes_);
}

Storage::~Storage() {
  if (alloc_) alloc_->deallocate(data_, bytes_);
  if (release_) release_();
}

namespace {
Allocator& allocator_for(Device d) {
  if (d == Device::cpu) return cpu_allocator();
  if (const DeviceHooks* h = device_hooks(d)) return *h->allocator;
  GYRE_THROW(unsupported,
             "device {} is not available in this build (no allocator registered): the CUDA "
             "backend was not compiled; rebuild with a CUDA toolkit (nvcc) and -DGYRE_CUDA=ON, or "
             "use --device cpu",
             device_name(d));
}

// Hooks for a non-CPU device (registered by its backend), or an error saying the build lacks it.
const DeviceHooks& hooks_for(Device d, const char* what) {
  const DeviceHooks* h = device_hooks(d);
  if (!h)
    GYRE_THROW(unsupported, "{} of a {} tensor: no {} backend in this build", what, device_name(d),
               device_name(d));
  return *h;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape) GYRE_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(allocator_for(device),
                                         size_t(shape_numel(shape)) * dtype_size(dtype));
  t.dtype_ = dtype;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero();
  return t;
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape, DType::f32);
  t.fill(value);
  return t;
}

template <typename T>
static Tensor from_vec(const std::vector<T>& v, const Shape& shape, DType dt) {
  GYRE_CHECK(int64_t(v.size()) == shape_numel(shape), "{} values for shape {}", v.size(),
             shape_str(shape));
  Tensor t = Tensor::empty(shape, dt);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}
Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s) {
  return from_vec(v, s, DType::f32);
}
Tensor Tensor::from_vector(const std::vector<int32_t>& v, const Shape& s) {
  return from_vec(v, s, DType::i32);
}
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s) {
  return from_vec(v, s, DType::i64);
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device,
                      std::shared_ptr<void> keepalive) {
  Tensor t;
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_ = std::make_shared<Storage>(data, bytes, device,
                                         [k = std::move(keepalive)]() mutable { k.reset(); });
  t.dtype_ = dtype;
  t.shape_ = shape;
  return t;
}

int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  GYRE_CHECK(d >= 0 && d < dim(), "dim {} out of range for shape {}", d, shape_str(shape_));
  return shape_[size_t(d)];
}

float* Tensor::f32() const {
  GYRE_CHECK(dtype_ == DType::f32, "expected f32 tensor, got {}", dtype_name(dtype_));
  return data<float>();
}
int32_t* Tensor::i32() const {
  GYRE_CHECK(dtype_ == DType::i32, "expected i32 tensor, got {}", dtype_name(dtype_));
  return data<int32_t>();
}
int64_t* Tensor::i64() const {
  GYRE_CHECK(dtype_ == DType::i64, "expected i64 tensor, got {}", dtype_name(dtype_));
  return data<int64_t>();
}

Tensor Tensor::narrow(int64_t start, int64_t length) const {
  GYRE_CHECK(dim() >= 1 && start >= 0 && length >= 0 && start + length <= shape_[0],
             "narrow({}, {}) of shape {}", start, length, shape_str(shape_));
  Tensor t = *this;
  int64_t row = shape_numel(shape_) / (shape_[0] ? shape_[0] : 1);
  t.offset_ += size_t(start * row) * dtype_size(dtype_);
  t.shape_[0] = length;
  return t;
}

Tensor Tensor::select(int64_t index) const {
  Tensor t = narrow(index, 1);
  t.shape_.erase(t.shape_.begin());
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      GYRE_CHECK(infer < 0, "two -1 in reshape {}", shape_str(shape));
      infer = int64_t(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[size_t(infer)] = known ? numel() / known : 0;
  GYRE_CHECK(shape_numel(s) == numel(), "reshape {} -> {}", shape_str(shape_), shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  if (device() != Device::cpu) {
    if (nbytes()) hooks_for(device(), "clone").copy(t.raw(), device(), raw(), device(), nbytes());
    return t;
  }
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  Device other = device == Device::cpu ? this->device() : device;
  if (nbytes()) hooks_for(other, "copy").copy(t.raw(), device, raw(), this->device(), nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  GYRE_CHECK(src.shape_ == shape_, "copy_from shape {} into {}", shape_str(src.shape_),
             shape_str(shape_));
  if (device() != Device::cpu || src.device() != Device::cpu) {
    GYRE_CHECK(src.dtype_ == dtype_,
               "copy_from {} {} into {} {}: dtype conversion runs on the host",
               device_name(src.device()), dtype_name(src.dtype_), device_name(device()),
               dtype_name(dtype_));
    Device other = device() != Device::cpu ? device() : src.device();
    if (nbytes()) hooks_for(other, "copy").copy(raw(), device(), src.raw(), src.device(), nbytes());
    return;
  }
  if (src.dtype_ == dtype_) {
    if (nbytes()) std::memmove(raw(), src.raw(), nbytes());
  } else if (dtype_ == DType::f32) {
    convert_to_f32(src.dtype_, src.raw(), f32(), size_t(numel()));
  } else if (src.dtype_ == DType::f32) {
    convert_from_f32(src.f32(), dtype_, raw(), size_t(numel()));
  } else {
    Tensor tmp = src.to(DType::f32);
    convert_from_f32(tmp.f32(), dtype_, raw(), size_t(numel()));
  }
}

void Tensor::fill(float value) {
  if (device() != Device::cpu) {  // fill a host copy and upload it (used for initialisation only)
    Tensor h = empty(shape_, dtype_);
    h.fill(value);
    copy_from(h);
    return;
  }
  size_t n = size_t(numel());
  if (dtype_ == DType::f32) {
    float* p = f32();
    for (size_t i = 0; i < n; ++i) p[i] = value;
  } else {
    std::vector<float> v(n, value);
    convert_from_f32(v.data(), dtype_, raw(), n);
  }
}

void Tensor::zero() {
  if (device() != Device::cpu) {
    if (spans_storage() && storage_->zero_pending()) return;  // reads as zeros already
    if (nbytes()) hooks_for(device(), "zero").zero(raw(), nbytes());
    return;
  }
  if (nbytes()) std::memset(raw(), 0, nbytes());
}

void Tensor::zero_deferred() {
  if (device() == Device::cpu || !spans_storage()) return zero();
  storage_->defer_zero();
}

bool Tensor::claim_pending_zero() {
  return defined() && spans_storage() && storage_->claim_pending_zero();
}

bool Tensor::spans_storage() const {
  return storage_ && offset_ == 0 && nbytes() == storage_->bytes();
}

std::vector<float> Tensor::to_vector() const {
  if (device() != Device::cpu) return to(Device::cpu).to_vector();
  std::vector<float> v(static_cast<size_t>(numel()));
  convert_to_f32(dtype_, raw(), v.data(), v.size());
  return v;
}

}  // namespace gyre
