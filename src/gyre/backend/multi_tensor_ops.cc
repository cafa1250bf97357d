// Multi-tensor ops (multi_tensor_ops.h): argument checks, then one CUDA launch over all tensors or
// a loop over the per-tensor CPU kernels (so CPU results are bitwise the per-tensor ops').
#include "gyre/backend/multi_tensor_ops.h"

#include <cstring>
#include <initializer_list>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/multi_tensor.h"
#include "gyre/backend/cuda/pdl.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"  // detail::OpScope (op profiler), kCuda
#include "gyre/core/error.h"

namespace gyre::ops {

namespace {

using detail::kCuda;

struct List {
  const char* name;
  std::span<const Tensor* const> t;
};

// Checks every tensor of the lists (equal lengths; each defined, f32, one device; tensor i of
// every list shaped like tensor i of the first) and returns their device (CPU for empty lists).
Device check_lists(const char* op, std::initializer_list<List> lists) {
  const List& first = *lists.begin();
  for (const List& l : lists)
    if (l.t.size() != first.t.size())
      GYRE_THROW(invalid_argument, "ops::{}: {} has {} tensors but {} has {}", op, l.name,
                 l.t.size(), first.name, first.t.size());
  const Tensor* dev_of = nullptr;
  const char* dev_list = nullptr;
  size_t dev_index = 0;
  for (size_t i = 0; i < first.t.size(); ++i) {
    for (const List& l : lists) {
      const Tensor* t = l.t[i];
      if (t == nullptr || !t->defined())
        GYRE_THROW(invalid_argument, "ops::{}: {}[{}] is {}", op, l.name, i,
                   t ? "undefined" : "a null pointer");
      if (t->dtype() != DType::f32)
        GYRE_THROW(invalid_argument, "ops::{}: {}[{}] is {}, expected f32", op, l.name, i,
                   dtype_name(t->dtype()));
      if (t->shape() != first.t[i]->shape())
        GYRE_THROW(invalid_argument, "ops::{}: {}[{}] has shape {} but {}[{}] has shape {}", op,
                   l.name, i, shape_str(t->shape()), first.name, i, shape_str(first.t[i]->shape()));
      if (!dev_of) {
        dev_of = t;
        dev_list = l.name;
        dev_index = i;
      } else if (t->device() != dev_of->device()) {
        GYRE_THROW(invalid_argument,
                   "ops::{}: {}[{}] is on {} but {}[{}] is on {}; all tensors of one call must be "
                   "on one device",
                   op, l.name, i, device_name(t->device()), dev_list, dev_index,
                   device_name(dev_of->device()));
      }
    }
  }
  if (!dev_of) return Device::cpu;
  const Device dev = dev_of->device();
  if (dev == Device::cuda) {
    if constexpr (!kCuda)
      GYRE_THROW(unsupported,
                 "ops::{}: {}[{}] is on {} but the CUDA backend is not built in this binary; "
                 "reconfigure with -DGYRE_CUDA=ON on a machine with the CUDA toolkit",
                 op, dev_list, dev_index, device_name(dev));
    else if (!cuda::device_available())
      GYRE_THROW(unsupported,
                 "ops::{}: {}[{}] is on {} but no CUDA device is visible to this process", op,
                 dev_list, dev_index, device_name(dev));
  }
  return dev;
}

std::span<const Tensor* const> as_const(std::span<Tensor* const> a) {
  return {const_cast<const Tensor* const*>(a.data()), a.size()};
}

}  // namespace

std::vector<double> sum_squares_each(std::span<const Tensor* const> a) {
  detail::OpScope op_scope_("sum_squares_each");
  const Device dev = check_lists("sum_squares_each", {{"tensors", a}});
  std::vector<double> out(a.size(), 0.0);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      std::vector<const float*> ptr(a.size());
      std::vector<int64_t> n(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        ptr[i] = a[i]->f32();
        n[i] = a[i]->numel();
      }
      cuda::sum_squares_each(ptr.data(), n.data(), int64_t(a.size()), out.data());
      return out;
    }
  for (size_t i = 0; i < a.size(); ++i)
    out[i] = cpu::sum_squares<float>(a[i]->f32(), a[i]->numel());
  return out;
}

double sum_squares_many(std::span<const Tensor* const> a) {
  // Added on the host in list order, as a per-tensor loop `sq += ops::sum_squares(t)` does.
  double sq = 0;
  for (double s : sum_squares_each(a)) sq += s;
  return sq;
}

void scale_many(std::span<Tensor* const> a, float s) {
  detail::OpScope op_scope_("scale_many");
  const Device dev = check_lists("scale_many", {{"tensors", as_const(a)}});
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      std::vector<float*> ptr(a.size());
      std::vector<int64_t> n(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        ptr[i] = a[i]->f32();
        n[i] = a[i]->numel();
      }
      return cuda::scale_many(ptr.data(), n.data(), int64_t(a.size()), s);
    }
  for (Tensor* t : a) cpu::scale<float>(t->f32(), s, t->numel());
}

void adamw_step_many(std::span<Tensor* const> params, std::span<const Tensor* const> grads,
                     std::span<Tensor* const> ms, std::span<Tensor* const> vs, const AdamWParams& p,
                     std::span<uint16_t* const> bf16_out) {
  detail::OpScope op_scope_("adamw_step_many");
  const char* op = "adamw_step_many";
  GYRE_CHECK(p.step >= 1, "ops::{}: step must be >= 1 (1-based), got {}", op, p.step);
  GYRE_CHECK(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1,
             "ops::{}: betas ({}, {}) must lie in [0, 1)", op, p.beta1, p.beta2);
  const Device dev = check_lists(
      op,
      {{"params", as_const(params)}, {"grads", grads}, {"ms", as_const(ms)}, {"vs", as_const(vs)}});
  if (!bf16_out.empty() && bf16_out.size() != params.size())
    GYRE_THROW(invalid_argument, "ops::{}: bf16_out has {} pointers but params has {} tensors", op,
               bf16_out.size(), params.size());
  // The per-tensor op reads the hyper-parameters as doubles from these floats; so do both paths.
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      const size_t k = params.size();
      std::vector<float*> pp(k), mp(k), vp(k);
      std::vector<const float*> gp(k);
      std::vector<int64_t> n(k);
      for (size_t i = 0; i < k; ++i) {
        pp[i] = params[i]->f32();
        gp[i] = grads[i]->f32();
        mp[i] = ms[i]->f32();
        vp[i] = vs[i]->f32();
        n[i] = params[i]->numel();
      }
      cuda::adamw_many(pp.data(), gp.data(), mp.data(), vp.data(), n.data(), int64_t(k), p.lr,
                       p.beta1, p.beta2, p.eps, p.weight_decay, p.step,
                       bf16_out.empty() ? nullptr : bf16_out.data(), p.grad_scale);
      // bf16 weights were written: a decode GEMV launched next may load them before waiting
      // for this kernel (backend/cuda/pdl.cuh, invariant 1).
      if (!bf16_out.empty()) cuda::pdl_barrier();
      return;
    }
  for (size_t i = 0; i < params.size(); ++i) {
    float* w = params[i]->f32();
    const int64_t n = params[i]->numel();
    cpu::adamw<float>(w, grads[i]->f32(), ms[i]->f32(), vs[i]->f32(), n, p.lr, p.beta1, p.beta2,
                      p.eps, p.weight_decay, p.step, p.grad_scale);
    if (uint16_t* out = bf16_out.empty() ? nullptr : bf16_out[i])
      for (int64_t j = 0; j < n; ++j) out[j] = f32_to_bf16(w[j]);
  }
}

void f32_to_bf16_many(std::span<const Tensor* const> src, std::span<uint16_t* const> dst) {
  detail::OpScope op_scope_("f32_to_bf16_many");
  const char* op = "f32_to_bf16_many";
  const Device dev = check_lists(op, {{"src", src}});
  if (dst.size() != src.size())
    GYRE_THROW(invalid_argument, "ops::{}: dst has {} pointers but src has {} tensors", op,
               dst.size(), src.size());
  for (size_t i = 0; i < src.size(); ++i)
    if (dst[i] == nullptr && src[i]->numel() > 0)
      GYRE_THROW(invalid_argument, "ops::{}: dst[{}] is null but src[{}] has {} elements", op, i, i,
                 src[i]->numel());
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      std::vector<const float*> sp(src.size());
      std::vector<int64_t> n(src.size());
      for (size_t i = 0; i < src.size(); ++i) {
        sp[i] = src[i]->f32();
        n[i] = src[i]->numel();
      }
      cuda::f32_to_bf16_many(sp.data(), dst.data(), n.data(), int64_t(src.size()));
      cuda::pdl_barrier();  // bf16 weights written, as adamw_step_many (pdl.cuh, invariant 1)
      return;
    }
  for (size_t i = 0; i < src.size(); ++i) {
    const float* s = src[i]->f32();
    for (int64_t j = 0; j < src[i]->numel(); ++j) dst[i][j] = f32_to_bf16(s[j]);
  }
}

void copy_many(std::span<const Tensor* const> src, std::span<Tensor* const> dst,
               std::span<uint16_t* const> bf16_out) {
  detail::OpScope op_scope_("copy_many");
  const char* op = "copy_many";
  const Device dev = check_lists(op, {{"src", src}, {"dst", as_const(dst)}});
  if (!bf16_out.empty() && bf16_out.size() != src.size())
    GYRE_THROW(invalid_argument, "ops::{}: bf16_out has {} pointers but src has {} tensors", op,
               bf16_out.size(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    const char* s = static_cast<const char*>(src[i]->address());
    const char* d = static_cast<const char*>(dst[i]->address());
    const size_t bytes = src[i]->nbytes();
    if (bytes > 0 && s < d + bytes && d < s + bytes)
      GYRE_THROW(invalid_argument, "ops::{}: src[{}] and dst[{}] overlap", op, i, i);
  }
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      const size_t k = src.size();
      std::vector<const float*> sp(k);
      std::vector<float*> dp(k);
      std::vector<int64_t> n(k);
      for (size_t i = 0; i < k; ++i) {
        sp[i] = src[i]->f32();
        dp[i] = dst[i]->f32();
        n[i] = src[i]->numel();
      }
      cuda::copy_many(sp.data(), dp.data(), n.data(), int64_t(k),
                      bf16_out.empty() ? nullptr : bf16_out.data());
      // bf16 weights written, as adamw_step_many (pdl.cuh, invariant 1).
      if (!bf16_out.empty()) cuda::pdl_barrier();
      return;
    }
  for (size_t i = 0; i < src.size(); ++i) {
    const float* s = src[i]->f32();
    float* d = dst[i]->f32();
    const int64_t n = src[i]->numel();
    if (n > 0) std::memcpy(d, s, size_t(n) * sizeof(float));
    if (uint16_t* out = bf16_out.empty() ? nullptr : bf16_out[i])
      for (int64_t j = 0; j < n; ++j) out[j] = f32_to_bf16(s[j]);
  }
}

}  // namespace gyre::ops
