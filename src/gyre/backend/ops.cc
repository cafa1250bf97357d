// gyre::ops: argument checking and device/dtype dispatch to the backend kernels.
//
// Invariants: every op validates shapes, dtypes and devices before any kernel runs (kernels never
// throw): inconsistent shapes or dtypes are programming errors (GYRE_CHECK, Error(internal) naming
// the op and tensor), bad data — token ids, target ids, positions, cu_seqlens, expert indices
// outside their range, non-positive temperature — are Error(invalid_argument) naming the value,
// its position and the valid range. Float tensors of one call share one dtype, f32 (the backend's
// working type) or f64 (used by the finite-difference tests). The tensors of one call live on one
// device: CPU tensors run the CPU kernels, CUDA tensors (f32 only — except the autocast MLP's bf16
// gate/up: linear's bf16 y under Bf16Autocast, silu_mul's and its backward's bf16 gate/up; and
// linear's bf16 x under Bf16Autocast, the bf16 attention output of rope_attention_ops.h) the CUDA
// kernels (backend/cuda/kernels.h; under a Bf16Autocast scope linear and attention run their bf16
// variants), validated the same way — index data is checked on a host copy. A CUDA
// tensor in a build without the CUDA backend raises Error(unsupported). An undefined
// overwrite-output is allocated on the op's device; an undefined gradient the op would accumulate
// into is skipped. The ops of ops.h live in this file except linear / linear_backward
// (linear_ops.cc), silu_mul / silu_mul_backward (swiglu_ops.cc) and attention (attention_ops.cc).
#include "gyre/backend/ops.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/backend/rope_args.h"

namespace gyre::ops {

using namespace detail;  // argument checking (ops_args.h)

// ---- dense algebra

void gemm(Device device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if constexpr (kCuda)
    if (device == Device::cuda && !cuda::device_available())
      GYRE_THROW(unsupported,
                 "ops::gemm: device cuda but no CUDA device is visible to this process (the CUDA "
                 "backend is built); run on a GPU machine or use Device::cpu");
  if (device != Device::cpu && !kCuda)
    GYRE_THROW(unsupported,
               "ops::gemm: device {} has no GEMM in this build (CUDA backend not built; "
               "reconfigure with -DGYRE_CUDA=ON)",
               device_name(device));
  GYRE_CHECK(M >= 0 && N >= 0 && K >= 0, "ops::gemm: negative size M={} N={} K={}", M, N, K);
  GYRE_CHECK(lda >= std::max<int64_t>(1, trans_a ? M : K) &&
                 ldb >= std::max<int64_t>(1, trans_b ? K : N) && ldc >= std::max<int64_t>(1, N),
             "ops::gemm: leading dimensions lda={} ldb={} ldc={} too small for M={} N={} K={}", lda,
             ldb, ldc, M, N, K);
  if constexpr (kCuda)
    if (device == Device::cuda)
      return cuda::gemm_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  cpu::gemm_parallel<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---- elementwise

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  OpScope op_scope_("add");
  const char* op = "add";
  check_defined(op, "a", a);
  check_defined(op, "b", b);
  const Device dev = op_device(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  DType dt = float_dtype(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  check_shape(op, "b", b, a.shape());
  prepare_out(op, "out", out, a.shape(), dt, dev);
  GYRE_CHECK(out.numel() == a.numel(), "ops::add: out {} vs a {}", shape_str(out.shape()),
             shape_str(a.shape()));
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::add(a.f32(), b.f32(), out.f32(), a.numel());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::add<T>(ptr<T>(a), ptr<T>(b), ptr<T>(out), a.numel());
  });
}

void add_(Tensor& a, const Tensor& b) { add(a, b, a); }

void scale_(Tensor& a, float s) {
  OpScope op_scope_("scale_");
  check_defined("scale_", "a", a);
  const Device dev = op_device("scale_", {{"a", &a}});
  DType dt = float_dtype("scale_", {{"a", &a}});
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32("scale_", dt);
      return cuda::scale(a.f32(), s, a.numel());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::scale<T>(ptr<T>(a), T(s), a.numel());
  });
}

void copy(const Tensor& src, Tensor& dst) {
  OpScope op_scope_("copy");
  check_defined("copy", "src", src);
  check_defined("copy", "dst", dst);
  const Device dev = op_device("copy", {{"src", &src}, {"dst", &dst}});
  check_shape("copy", "dst", dst, src.shape());
  if constexpr (kCuda)
    if (dev == Device::cuda && src.dtype() != dst.dtype()) {
      if (src.dtype() == DType::f32 && dst.dtype() == DType::bf16)
        return cuda::f32_to_bf16(src.f32(), dst.data<uint16_t>(), src.numel());
      if (src.dtype() == DType::bf16 && dst.dtype() == DType::f32)
        return cuda::bf16_to_f32(src.data<uint16_t>(), dst.f32(), src.numel());
      GYRE_THROW(unsupported,
                 "ops::copy: the CUDA backend converts only f32 <-> bf16, not {} -> {}",
                 dtype_name(src.dtype()), dtype_name(dst.dtype()));
    }
  dst.copy_from(src);  // memcpy for equal dtypes (device-to-device on the GPU), else rounding
}

double sum_squares(const Tensor& a) {
  OpScope op_scope_("sum_squares");
  check_defined("sum_squares", "a", a);
  const Device dev = op_device("sum_squares", {{"a", &a}});
  DType dt = float_dtype("sum_squares", {{"a", &a}});
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32("sum_squares", dt);
      return cuda::sum_squares(a.f32(), a.numel());
    }
  double r = 0;
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    r = cpu::sum_squares<T>(ptr<T>(a), a.numel());
  });
  return r;
}

// ---- embedding

void embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  OpScope op_scope_("embedding");
  const char* op = "embedding";
  check_i32(op, "ids", ids);
  check_defined(op, "table", table);
  const Device dev = op_device(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  DType dt = float_dtype(op, {{"table", &table}, {"out", &out}});
  GYRE_CHECK(table.dim() == 2, "ops::embedding: table must be [V, H], got {}",
             shape_str(table.shape()));
  const int64_t V = table.size(0), H = table.size(1), n = ids.numel();
  check_index_range(op, "token id", ids, V,
                    "the ids do not match this model's vocabulary (check the tokenizer)");
  prepare_out(op, "out", out, {n, H}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::embedding_fwd(ids.i32(), n, table.f32(), H, out.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::embedding_fwd<T>(ids.i32(), n, ptr<T>(table), H, ptr<T>(out));
  });
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  OpScope op_scope_("embedding_backward");
  const char* op = "embedding_backward";
  check_i32(op, "ids", ids);
  check_defined(op, "dout", dout);
  const Device dev = op_device(op, {{"ids", &ids}, {"dout", &dout}, {"dtable", &dtable}});
  if (!dtable.defined()) return;
  DType dt = float_dtype(op, {{"dout", &dout}, {"dtable", &dtable}});
  GYRE_CHECK(dtable.dim() == 2, "ops::embedding_backward: dtable must be [V, H], got {}",
             shape_str(dtable.shape()));
  const int64_t V = dtable.size(0), H = dtable.size(1), n = ids.numel();
  check_rows(op, "dout", dout, n, H);
  check_index_range(op, "token id", ids, V,
                    "the ids do not match this model's vocabulary (check the tokenizer)");
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      // The kernel groups rows by id on the host: the caller's host copy when it recorded one
      // (no device-to-host copy, which would drain the stream at the end of every backward).
      if (const auto* k = KnownIndices::find(ids, KnownIndices::Entry::host_values))
        return cuda::embedding_bwd(k->host, n, dout.f32(), H, dtable.f32());
      return cuda::embedding_bwd(host_view(ids).i32(), n, dout.f32(), H, dtable.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::embedding_bwd<T>(ids.i32(), n, ptr<T>(dout), H, ptr<T>(dtable));
  });
}

// ---- RMSNorm

void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  OpScope op_scope_("rms_norm");
  const char* op = "rms_norm";
  check_defined(op, "x", x);
  check_defined(op, "w", w);
  const Device dev = op_device(op, {{"x", &x}, {"w", &w}, {"y", &y}, {"rstd", &rstd}});
  DType dt = float_dtype(op, {{"x", &x}, {"w", &w}, {"y", &y}, {"rstd", &rstd}});
  const int64_t H = w.numel();
  GYRE_CHECK(H > 0 && x.dim() >= 1 && x.size(-1) == H,
             "ops::rms_norm: x has shape {} but the weight has {} elements", shape_str(x.shape()),
             H);
  GYRE_CHECK(eps >= 0 && std::isfinite(eps), "ops::rms_norm: eps must be >= 0, got {}", eps);
  const int64_t R = x.numel() / H;
  prepare_out(op, "y", y, x.shape(), dt, dev);
  prepare_out(op, "rstd", rstd, {R}, dt, dev);
  GYRE_CHECK(rstd.numel() == R, "ops::rms_norm: rstd has {} elements for {} rows", rstd.numel(), R);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::rms_norm_fwd(x.f32(), w.f32(), R, H, double(eps), y.f32(), rstd.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::rms_norm_fwd<T>(ptr<T>(x), ptr<T>(w), R, H, double(eps), ptr<T>(y), ptr<T>(rstd));
  });
}

void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       Tensor& dx, Tensor& dw) {
  OpScope op_scope_("rms_norm_backward");
  const char* op = "rms_norm_backward";
  check_all_defined(op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}});
  const Device dev =
      op_device(op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dx", &dx}, {"dw", &dw}});
  DType dt = float_dtype(
      op, {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dx", &dx}, {"dw", &dw}});
  const int64_t H = w.numel();
  GYRE_CHECK(H > 0 && x.dim() >= 1 && x.size(-1) == H,
             "ops::rms_norm_backward: x has shape {} but the weight has {} elements",
             shape_str(x.shape()), H);
  const int64_t R = x.numel() / H;
  check_rows(op, "dy", dy, R, H);
  GYRE_CHECK(rstd.numel() == R, "ops::rms_norm_backward: rstd has {} elements for {} rows",
             rstd.numel(), R);
  prepare_out(op, "dx", dx, x.shape(), dt, dev);
  if (dw.defined()) check_shape(op, "dw", dw, w.shape());
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::rms_norm_bwd(dy.f32(), x.f32(), w.f32(), rstd.f32(), R, H, dx.f32(),
                                ptr<float>(dw));
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::rms_norm_bwd<T>(ptr<T>(dy), ptr<T>(x), ptr<T>(w), ptr<T>(rstd), R, H, ptr<T>(dx),
                         ptr<T>(dw));
  });
}

// ---- RoPE

void rope_(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin, bool inverse) {
  OpScope op_scope_("rope_");
  const char* op = "rope_";
  const RopeArgs ra = check_rope_args(op, {{"x", &x}}, positions, cos, sin);
  const Device dev = ra.dev;
  const DType dt = ra.dt;
  const int64_t T_ = ra.T, H = x.size(1), D = ra.D;
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::rope(x.f32(), T_, H, D, positions.i32(), cos.f32(), sin.f32(), inverse);
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::rope<T>(ptr<T>(x), T_, H, D, positions.i32(), ptr<T>(cos), ptr<T>(sin), inverse);
  });
}

// ---- softmax family

namespace {
template <typename Kernel>
void rowwise(const char* op, const Tensor& x, Tensor& out, Kernel kernel, bool log_out) {
  check_defined(op, "x", x);
  const Device dev = op_device(op, {{"x", &x}, {"out", &out}});
  DType dt = float_dtype(op, {{"x", &x}, {"out", &out}});
  GYRE_CHECK(x.dim() >= 1 && x.size(-1) > 0, "ops::{}: x must have a non-empty last dim, got {}",
             op, shape_str(x.shape()));
  const int64_t C = x.size(-1), R = x.numel() / C;
  prepare_out(op, "out", out, x.shape(), dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (log_out) return cuda::log_softmax_rows(x.f32(), R, C, out.f32());
      return cuda::softmax_rows(x.f32(), R, C, out.f32());
    }
  dispatch(dt, [&](auto t) { kernel(t, ptr<decltype(t)>(x), R, C, ptr<decltype(t)>(out)); });
}

void check_logprob_args(const char* op, const Tensor& logits, const Tensor& targets,
                        float temperature, int64_t* n, int64_t* V) {
  check_defined(op, "logits", logits);
  check_i32(op, "targets", targets);
  GYRE_CHECK(logits.dim() >= 1 && logits.size(-1) > 0, "ops::{}: logits must be [T, V], got {}", op,
             shape_str(logits.shape()));
  *V = logits.size(-1);
  *n = logits.numel() / *V;
  GYRE_CHECK(targets.numel() == *n, "ops::{}: {} targets for {} rows of logits {}", op,
             targets.numel(), *n, shape_str(logits.shape()));
  if (!(temperature > 0) || !std::isfinite(temperature))
    GYRE_THROW(invalid_argument, "ops::{}: temperature {} must be a finite number > 0", op,
               temperature);
  if (const auto* k = KnownIndices::find(targets, KnownIndices::Entry::range))
    if (k->hi <= *V) return;  // proven by the caller (negative targets are allowed: skipped rows)
  const Tensor tg_host = host_view(targets);
  const int32_t* tg = tg_host.i32();
  for (int64_t i = 0; i < *n; ++i)
    if (tg[i] >= *V)
      GYRE_THROW(invalid_argument,
                 "ops::{}: target id {} at position {} is outside the vocabulary [0, {}); use a "
                 "negative target to skip a position",
                 op, tg[i], i, *V);
}
}  // namespace

void softmax_rows(const Tensor& x, Tensor& out) {
  OpScope op_scope_("softmax_rows");
  rowwise(
      "softmax_rows", x, out,
      [](auto t, auto* px, int64_t R, int64_t C, auto* po) {
        cpu::softmax_rows<decltype(t)>(px, R, C, po);
      },
      false);
}

void log_softmax_rows(const Tensor& x, Tensor& out) {
  OpScope op_scope_("log_softmax_rows");
  rowwise(
      "log_softmax_rows", x, out,
      [](auto t, auto* px, int64_t R, int64_t C, auto* po) {
        cpu::log_softmax_rows<decltype(t)>(px, R, C, po);
      },
      true);
}

void token_logprobs(const Tensor& logits, const Tensor& targets, float temperature, Tensor& logp,
                    Tensor& entropy) {
  OpScope op_scope_("token_logprobs");
  const char* op = "token_logprobs";
  const Device dev = op_device(
      op, {{"logits", &logits}, {"targets", &targets}, {"logp", &logp}, {"entropy", &entropy}});
  int64_t n = 0, V = 0;
  check_logprob_args(op, logits, targets, temperature, &n, &V);
  DType dt = float_dtype(op, {{"logits", &logits}, {"logp", &logp}, {"entropy", &entropy}});
  prepare_out(op, "logp", logp, {n}, dt, dev);
  if (entropy.defined()) prepare_out(op, "entropy", entropy, {n}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::token_logprobs_fwd(logits.f32(), targets.i32(), n, V, temperature, logp.f32(),
                                      ptr<float>(entropy));
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::token_logprobs_fwd<T>(ptr<T>(logits), targets.i32(), n, V, T(temperature), ptr<T>(logp),
                               ptr<T>(entropy));
  });
}

void token_logprobs_backward(const Tensor& logits, const Tensor& targets, float temperature,
                             const Tensor& dlogp, const Tensor& dentropy, Tensor& dlogits) {
  OpScope op_scope_("token_logprobs_backward");
  const char* op = "token_logprobs_backward";
  const Device dev = op_device(op, {{"logits", &logits},
                                    {"targets", &targets},
                                    {"dlogp", &dlogp},
                                    {"dentropy", &dentropy},
                                    {"dlogits", &dlogits}});
  int64_t n = 0, V = 0;
  check_logprob_args(op, logits, targets, temperature, &n, &V);
  check_defined(op, "dlogp", dlogp);
  DType dt = float_dtype(
      op, {{"logits", &logits}, {"dlogp", &dlogp}, {"dentropy", &dentropy}, {"dlogits", &dlogits}});
  GYRE_CHECK(dlogp.numel() == n, "ops::{}: dlogp has {} elements for {} rows", op, dlogp.numel(),
             n);
  if (dentropy.defined())
    GYRE_CHECK(dentropy.numel() == n, "ops::{}: dentropy has {} elements for {} rows", op,
               dentropy.numel(), n);
  prepare_out(op, "dlogits", dlogits, logits.shape(), dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::token_logprobs_bwd(logits.f32(), targets.i32(), n, V, temperature, dlogp.f32(),
                                      ptr<float>(dentropy), dlogits.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::token_logprobs_bwd<T>(ptr<T>(logits), targets.i32(), n, V, T(temperature), ptr<T>(dlogp),
                               ptr<T>(dentropy), ptr<T>(dlogits));
  });
}

// ---- mixture of experts

void moe_route(const Tensor& router_logits, int64_t k, bool norm_topk, Tensor& probs,
               Tensor& indices, Tensor& weights) {
  OpScope op_scope_("moe_route");
  const char* op = "moe_route";
  check_defined(op, "router_logits", router_logits);
  const Device dev = op_device(op, {{"router_logits", &router_logits},
                                    {"probs", &probs},
                                    {"indices", &indices},
                                    {"weights", &weights}});
  DType dt = float_dtype(
      op, {{"router_logits", &router_logits}, {"probs", &probs}, {"weights", &weights}});
  GYRE_CHECK(router_logits.dim() == 2, "ops::moe_route: router_logits must be [T, E], got {}",
             shape_str(router_logits.shape()));
  const int64_t n = router_logits.size(0), E = router_logits.size(1);
  if (k < 1 || k > E)
    GYRE_THROW(invalid_argument,
               "ops::moe_route: top-k = {} experts per token is outside [1, {}] (the router has "
               "{} experts); check num_experts_per_tok in the model config",
               k, E, E);
  prepare_out(op, "probs", probs, {n, E}, dt, dev);
  if (!indices.defined()) indices = Tensor::empty({n, k}, DType::i32, dev);
  check_i32(op, "indices", indices);
  check_shape(op, "indices", indices, {n, k});
  prepare_out(op, "weights", weights, {n, k}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::moe_route_fwd(router_logits.f32(), n, E, k, norm_topk, probs.f32(),
                                 indices.i32(), weights.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::moe_route_fwd<T>(ptr<T>(router_logits), n, E, k, norm_topk, ptr<T>(probs), indices.i32(),
                          ptr<T>(weights));
  });
}

void moe_route_backward(const Tensor& dweights, const Tensor& probs, const Tensor& indices,
                        bool norm_topk, Tensor& drouter_logits) {
  OpScope op_scope_("moe_route_backward");
  const char* op = "moe_route_backward";
  check_defined(op, "dweights", dweights);
  check_defined(op, "probs", probs);
  check_i32(op, "indices", indices);
  const Device dev = op_device(op, {{"dweights", &dweights},
                                    {"probs", &probs},
                                    {"indices", &indices},
                                    {"drouter_logits", &drouter_logits}});
  DType dt = float_dtype(
      op, {{"dweights", &dweights}, {"probs", &probs}, {"drouter_logits", &drouter_logits}});
  GYRE_CHECK(probs.dim() == 2, "ops::{}: probs must be [T, E], got {}", op,
             shape_str(probs.shape()));
  const int64_t n = probs.size(0), E = probs.size(1);
  GYRE_CHECK(indices.dim() == 2 && indices.size(0) == n,
             "ops::{}: indices {} do not match probs {}", op, shape_str(indices.shape()),
             shape_str(probs.shape()));
  const int64_t k = indices.size(1);
  check_shape(op, "dweights", dweights, {n, k});
  check_index_range(op, "expert index", indices, E, "pass the indices moe_route produced");
  prepare_out(op, "drouter_logits", drouter_logits, {n, E}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::moe_route_bwd(dweights.f32(), probs.f32(), indices.i32(), n, E, k, norm_topk,
                                 drouter_logits.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::moe_route_bwd<T>(ptr<T>(dweights), ptr<T>(probs), indices.i32(), n, E, k, norm_topk,
                          ptr<T>(drouter_logits));
  });
}

void gather_rows(const Tensor& src, const Tensor& idx, Tensor& out) {
  OpScope op_scope_("gather_rows");
  const char* op = "gather_rows";
  check_defined(op, "src", src);
  check_i32(op, "idx", idx);
  const Device dev = op_device(op, {{"src", &src}, {"idx", &idx}, {"out", &out}});
  DType dt = float_dtype(op, {{"src", &src}, {"out", &out}});
  GYRE_CHECK(src.dim() == 2, "ops::gather_rows: src must be [R, H], got {}",
             shape_str(src.shape()));
  const int64_t R = src.size(0), H = src.size(1), n = idx.numel();
  check_index_range(op, "row index", idx, R, "indices must address rows of src");
  prepare_out(op, "out", out, {n, H}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::gather_rows(src.f32(), H, idx.i32(), n, out.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::gather_rows<T>(ptr<T>(src), H, idx.i32(), n, ptr<T>(out));
  });
}

void scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& scale, Tensor& out) {
  OpScope op_scope_("scatter_add_rows");
  const char* op = "scatter_add_rows";
  check_defined(op, "src", src);
  check_i32(op, "idx", idx);
  check_defined(op, "out", out);
  const Device dev =
      op_device(op, {{"src", &src}, {"idx", &idx}, {"scale", &scale}, {"out", &out}});
  DType dt = float_dtype(op, {{"src", &src}, {"scale", &scale}, {"out", &out}});
  GYRE_CHECK(out.dim() == 2, "ops::scatter_add_rows: out must be [R, H], got {}",
             shape_str(out.shape()));
  const int64_t R = out.size(0), H = out.size(1), n = idx.numel();
  check_rows(op, "src", src, n, H);
  if (scale.defined())
    GYRE_CHECK(scale.numel() == n, "ops::scatter_add_rows: scale has {} elements for {} rows",
               scale.numel(), n);
  check_index_range(op, "row index", idx, R, "indices must address rows of out");
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::scatter_add_rows(src.f32(), H, host_view(idx).i32(), ptr<float>(scale), n,
                                    out.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::scatter_add_rows<T>(ptr<T>(src), H, idx.i32(), ptr<T>(scale), n, ptr<T>(out));
  });
}

void row_dot(const Tensor& a, const Tensor& b, Tensor& out) {
  OpScope op_scope_("row_dot");
  const char* op = "row_dot";
  check_defined(op, "a", a);
  check_defined(op, "b", b);
  const Device dev = op_device(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  DType dt = float_dtype(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  GYRE_CHECK(a.dim() >= 1, "ops::row_dot: a must be [n, H], got {}", shape_str(a.shape()));
  check_shape(op, "b", b, a.shape());
  const int64_t H = a.size(-1), n = H ? a.numel() / H : 0;
  prepare_out(op, "out", out, {n}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::row_dot(a.f32(), b.f32(), n, H, out.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::row_dot<T>(ptr<T>(a), ptr<T>(b), n, H, ptr<T>(out));
  });
}

// ---- optimizer

void sample_tokens(const Tensor& logits, const Tensor& temperature, const Tensor& seeds,
                   const Tensor& steps, float min_p, Tensor& tokens) {
  const char* op = "sample_tokens";
  check_defined(op, "logits", logits);
  const Device dev = op_device(op, {{"logits", &logits},
                                    {"temperature", &temperature},
                                    {"seeds", &seeds},
                                    {"steps", &steps},
                                    {"tokens", &tokens}});
  GYRE_CHECK(logits.dim() == 2 && logits.dtype() == DType::f32,
             "ops::sample_tokens: logits must be f32 [R, V], got {} {}", dtype_name(logits.dtype()),
             shape_str(logits.shape()));
  const int64_t R = logits.size(0), V = logits.size(1);
  check_shape(op, "temperature", temperature, {R});
  check_shape(op, "seeds", seeds, {R});
  check_shape(op, "steps", steps, {R});
  GYRE_CHECK(temperature.dtype() == DType::f32 && seeds.dtype() == DType::i64 &&
                 steps.dtype() == DType::i64,
             "ops::sample_tokens: temperature f32, seeds and steps i64");
  prepare_out(op, "tokens", tokens, {R}, DType::i32, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      OpScope op_scope_("sample_tokens");
      return cuda::sample_rows(logits.f32(), R, V, temperature.f32(),
                               reinterpret_cast<const uint64_t*>(seeds.i64()), steps.i64(), min_p,
                               tokens.i32());
    }
  GYRE_THROW(unsupported,
             "ops::sample_tokens runs on CUDA tensors only; the CPU sampler (infer/sampler.h) "
             "samples host logits");
}

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  OpScope op_scope_("adamw_step");
  const char* op = "adamw_step";
  check_all_defined(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  const Device dev = op_device(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  DType dt = float_dtype(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  check_shape(op, "grad", grad, param.shape());
  check_shape(op, "m", m, param.shape());
  check_shape(op, "v", v, param.shape());
  GYRE_CHECK(p.step >= 1, "ops::adamw_step: step must be >= 1 (1-based), got {}", p.step);
  GYRE_CHECK(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1,
             "ops::adamw_step: betas ({}, {}) must lie in [0, 1)", p.beta1, p.beta2);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      return cuda::adamw(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), p.lr, p.beta1,
                         p.beta2, p.eps, p.weight_decay, p.step, p.grad_scale);
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::adamw<T>(ptr<T>(param), ptr<T>(grad), ptr<T>(m), ptr<T>(v), param.numel(), p.lr, p.beta1,
                  p.beta2, p.eps, p.weight_decay, p.step, T(p.grad_scale));
  });
}

}  // namespace gyre::ops
