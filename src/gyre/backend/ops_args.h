// Argument checking shared by the gyre::ops dispatch (backend/ops.cc): the device of an op's
// tensors, the common float dtype, shape checks, output allocation on the op's device and range
// checks of index data (on a host copy for device tensors). Internal to gyre_backend.
//
// Invariants: every helper throws gyre::Error before any kernel runs — GYRE_CHECK (internal) for
// inconsistent shapes/dtypes, Error(invalid_argument) for bad data, Error(unsupported) for a
// device or dtype this build cannot run.
#pragma once
#include <algorithm>
#include <initializer_list>
#include <span>

#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/tensor.h"

namespace gyre::ops::detail {

struct Arg {
  const char* name;
  const Tensor* t;
};

#ifdef GYRE_HAVE_CUDA
constexpr bool kCuda = true;
#else
constexpr bool kCuda = false;  // ops.cc's `if constexpr (kCuda)` branches are discarded
#endif

// The device of the op's defined tensors. Tensors on two devices, or a CUDA tensor in a build
// without the CUDA backend, raise an error naming the tensor. (A span for argument lists built at
// run time: grouped ops name their members' tensors.)
inline Device op_device(const char* op, std::span<const Arg> args) {
  const Arg* first = nullptr;
  for (const Arg& a : args) {
    if (!a.t->defined()) continue;
    if (a.t->device() == Device::cuda && !kCuda)
      GYRE_THROW(unsupported,
                 "ops::{}: tensor '{}' is on {} but the CUDA backend is not built in this binary; "
                 "reconfigure with -DGYRE_CUDA=ON on a machine with the CUDA toolkit",
                 op, a.name, device_name(a.t->device()));
    if constexpr (kCuda)
      if (a.t->device() == Device::cuda && !cuda::device_available())
        GYRE_THROW(
            unsupported,
            "ops::{}: tensor '{}' is on {} but no CUDA device is visible to this process "
            "(the CUDA backend is built); run on a GPU machine or move the tensors to the CPU",
            op, a.name, device_name(a.t->device()));
    if (!first) first = &a;
    if (a.t->device() != first->t->device())
      GYRE_THROW(invalid_argument,
                 "ops::{}: tensor '{}' is on {} but '{}' is on {}; move the tensors of one op to "
                 "one device (Tensor::to)",
                 op, a.name, device_name(a.t->device()), first->name,
                 device_name(first->t->device()));
  }
  return first ? first->t->device() : Device::cpu;
}
inline Device op_device(const char* op, std::initializer_list<Arg> args) {
  return op_device(op, std::span<const Arg>(args.begin(), args.size()));
}

// The CUDA backend computes in f32; f64 is the CPU reference's finite-difference dtype only.
// Brackets one op for the op profiler (ops.h, GYRE_OP_PROFILE): CUDA events on the calling
// thread's stream around the outermost op of a nest; nothing unless profiling is on.
class OpScope {
 public:
  explicit OpScope(const char* op);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* op_;
  void* start_ = nullptr;
};

inline void require_cuda_f32(const char* op, DType dt) {
  if (dt != DType::f32)
    GYRE_THROW(unsupported,
               "ops::{}: the CUDA backend runs f32 tensors, got {}; use f32 on the GPU", op,
               dtype_name(dt));
}

// Index data read by the host-side checks: the tensor itself on the CPU, a host copy otherwise.
inline Tensor host_view(const Tensor& t) {
  return t.device() == Device::cpu ? t : t.to(Device::cpu);
}

// The common float dtype of the defined tensors (f32 or f64).
inline DType float_dtype(const char* op, std::span<const Arg> args) {
  const Arg* first = nullptr;
  for (const Arg& a : args) {
    if (!a.t->defined()) continue;
    GYRE_CHECK(a.t->dtype() == DType::f32 || a.t->dtype() == DType::f64,
               "ops::{}: tensor '{}' must be f32 (or f64), got {}", op, a.name,
               dtype_name(a.t->dtype()));
    if (!first) first = &a;
    GYRE_CHECK(a.t->dtype() == first->t->dtype(),
               "ops::{}: '{}' is {} but '{}' is {}; use one float dtype for the op's tensors", op,
               a.name, dtype_name(a.t->dtype()), first->name, dtype_name(first->t->dtype()));
  }
  GYRE_CHECK(first != nullptr, "ops::{}: no input tensor is defined", op);
  return first->t->dtype();
}
inline DType float_dtype(const char* op, std::initializer_list<Arg> args) {
  return float_dtype(op, std::span<const Arg>(args.begin(), args.size()));
}

inline void check_i32(const char* op, const char* name, const Tensor& t) {
  GYRE_CHECK(t.defined(), "ops::{}: index tensor '{}' is undefined", op, name);
  GYRE_CHECK(t.dtype() == DType::i32, "ops::{}: index tensor '{}' must be i32, got {}", op, name,
             dtype_name(t.dtype()));
}

inline void check_defined(const char* op, const char* name, const Tensor& t) {
  GYRE_CHECK(t.defined(), "ops::{}: tensor '{}' is undefined", op, name);
}

inline void check_all_defined(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args) check_defined(op, a.name, *a.t);
}

// `t` has exactly `shape`.
inline void check_shape(const char* op, const char* name, const Tensor& t, const Shape& shape) {
  GYRE_CHECK(t.shape() == shape, "ops::{}: tensor '{}' has shape {}, expected {}", op, name,
             shape_str(t.shape()), shape_str(shape));
}

// `t` is `rows` rows of length `cols` (any leading shape, last dim = cols).
// Rows of a [..., K] operand: the product of its leading dims (x.numel() / K fails for K = 0).
inline int64_t leading_rows(const Tensor& x) {
  int64_t m = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) m *= x.size(d);
  return m;
}

inline void check_rows(const char* op, const char* name, const Tensor& t, int64_t rows,
                       int64_t cols) {
  GYRE_CHECK(t.dim() >= 1 && t.size(-1) == cols && t.numel() == rows * cols,
             "ops::{}: tensor '{}' has shape {}, expected {} rows of {} (last dim {})", op, name,
             shape_str(t.shape()), rows, cols, cols);
}

// Allocates an undefined overwrite-output like `shape`/`dtype`, otherwise checks its shape.
inline void prepare_out(const char* op, const char* name, Tensor& t, const Shape& shape,
                        DType dtype, Device device = Device::cpu) {
  if (!t.defined()) {
    t = Tensor::empty(shape, dtype, device);
    return;
  }
  GYRE_CHECK(t.numel() == shape_numel(shape) && t.dim() >= 1 && !shape.empty() &&
                 t.size(-1) == shape.back(),
             "ops::{}: output '{}' has shape {}, expected {}", op, name, shape_str(t.shape()),
             shape_str(shape));
  GYRE_CHECK(t.dtype() == dtype, "ops::{}: output '{}' is {}, expected {}", op, name,
             dtype_name(t.dtype()), dtype_name(dtype));
}

// Calls fn(T{}) with T = float or double for the dtype.
template <typename Fn>
void dispatch(DType dt, Fn&& fn) {
  if (dt == DType::f64) {
    fn(double{});
  } else {
    fn(float{});
  }
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Ids must index rows [0, n): bad ids are user data (a tokenizer/vocab mismatch), not a bug.
inline void check_index_range(const char* op, const char* what, const Tensor& ids, int64_t n,
                              const char* fix) {
  // Already proven on the host by the caller (ops.h, KnownIndices): no device-to-host copy.
  if (const auto* k = KnownIndices::find(ids, KnownIndices::Entry::range))
    if (k->lo >= 0 && k->hi <= n) return;
  const Tensor host = host_view(ids);
  const int32_t* p = host.i32();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (p[i] < 0 || p[i] >= n)
      GYRE_THROW(invalid_argument, "ops::{}: {} {} at position {} is outside [0, {}); {}", op, what,
                 p[i], i, n, fix);
  }
}

}  // namespace gyre::ops::detail
