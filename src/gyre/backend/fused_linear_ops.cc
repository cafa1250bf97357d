// Fused decode linears (fused_linear_ops.h): argument checks, then one fused GEMV launch
// (backend/cuda/gemv_fused.h), the shared-input cuBLASLt GEMMs (backend/cuda/fused_gemm.h) or the
// unfused ops in order. The GEMV launch is taken exactly when ops::linear would run every member on
// the bf16 GEMV (autocast, a weight cache, 1..8 rows, linear_gemv_bf16_supported), the GEMMs
// exactly when it would run every member on the cuBLASLt GEMM over a bf16 copy of its input
// (autocast, more than 8 rows; the weight's bf16 copy from the cache or, with none installed,
// rounded into scratch as linear rounds it) — which is what makes the paths bitwise equal.
// rms_norm_swiglu_mlp_residual takes its one-pass GEMM path exactly when both of its ops would take
// theirs (and the down projection has no bias), else it runs them in order. The SwiGLU ops' gate
// and up are bf16 wherever swiglu_gate_up_dtype says so (autocast on CUDA): the GEMV rounds them in
// registers, the GEMMs write them with linear_gemm_bf16_out, the unfused composition allocates
// them bf16 — in each case what ops::linear into a bf16 y computes.
#include "gyre/backend/fused_linear_ops.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "gyre/backend/cuda/fused_gemm.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/kernels.h"  // kGemvMaxRows, linear_gemv_bf16_supported
#include "gyre/backend/ops_args.h"      // detail::OpScope, kCuda, op_device, prepare_out
#include "gyre/core/error.h"

namespace gyre::ops {

static_assert(kFusedGemvMaxRows == cuda::kGemvMaxRows);

namespace {

using detail::kCuda;

// An argument's name for error messages: "w" or, in a list, "w[2]" (formatted only on error, so
// the checks allocate nothing on the decode path).
struct Name {
  const char* base;
  int64_t index = -1;
};
}  // namespace
}  // namespace gyre::ops

template <>
struct fmt::formatter<gyre::ops::Name> : fmt::formatter<std::string_view> {
  auto format(const gyre::ops::Name& n, fmt::format_context& ctx) const {
    return n.index < 0 ? fmt::format_to(ctx.out(), "{}", n.base)
                       : fmt::format_to(ctx.out(), "{}[{}]", n.base, n.index);
  }
};

namespace gyre::ops {
namespace {

// Checks x (defined, at least 1-D, f32 or f64; on a device this build can run) and returns its
// rows M and inner size K.
void check_input(const char* op, const Tensor& x, int64_t& M, int64_t& K) {
  if (!x.defined()) GYRE_THROW(invalid_argument, "ops::{}: input 'x' is undefined", op);
  if (x.dim() < 1) GYRE_THROW(invalid_argument, "ops::{}: input 'x' is a scalar", op);
  if (x.dtype() != DType::f32 && x.dtype() != DType::f64)
    GYRE_THROW(invalid_argument, "ops::{}: input 'x' is {}, expected f32 (or f64 on the CPU)", op,
               dtype_name(x.dtype()));
  detail::op_device(op, {{"x", &x}});  // CUDA tensors need the backend and a visible device
  K = x.size(-1);
  M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
}

// `t` (named `name`) is non-null, defined, and has x's dtype and device.
void check_like_x(const char* op, Name name, const Tensor* t, const Tensor& x) {
  if (t == nullptr) GYRE_THROW(invalid_argument, "ops::{}: '{}' is a null pointer", op, name);
  if (!t->defined()) GYRE_THROW(invalid_argument, "ops::{}: '{}' is undefined", op, name);
  if (t->dtype() != x.dtype())
    GYRE_THROW(invalid_argument, "ops::{}: '{}' is {} but 'x' is {}", op, name,
               dtype_name(t->dtype()), dtype_name(x.dtype()));
  if (t->device() != x.device())
    GYRE_THROW(invalid_argument,
               "ops::{}: '{}' is on {} but 'x' is on {}; move the tensors of one op to one device",
               op, name, device_name(t->device()), device_name(x.device()));
}

// A weight [N, K] (returns N) and its optional bias [N].
int64_t check_weight_bias(const char* op, Name wname, const Tensor* w, Name bname, const Tensor* b,
                          const Tensor& x, int64_t K) {
  check_like_x(op, wname, w, x);
  if (w->dim() != 2 || w->size(1) != K)
    GYRE_THROW(invalid_argument, "ops::{}: weight '{}' has shape {}, expected [N, {}] (x is {})",
               op, wname, shape_str(w->shape()), K, shape_str(x.shape()));
  const int64_t N = w->size(0);
  if (b == nullptr) GYRE_THROW(invalid_argument, "ops::{}: '{}' is a null pointer", op, bname);
  if (b->defined()) {
    check_like_x(op, bname, b, x);
    if (b->shape() != Shape{N})
      GYRE_THROW(invalid_argument, "ops::{}: bias '{}' has shape {}, expected [{}]", op, bname,
                 shape_str(b->shape()), N);
  }
  return N;
}

// Whether two defined tensors share any byte of storage (views made by narrow() included).
bool overlaps(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.device() != b.device() || a.nbytes() == 0 ||
      b.nbytes() == 0)
    return false;
  const auto* a0 = static_cast<const char*>(a.address());
  const auto* b0 = static_cast<const char*>(b.address());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// An output: null is an error, undefined is allocated later; a defined one must hold M rows of N
// in x's dtype on x's device (what ops::linear accepts) and must not overlap x: the fused kernels
// write outputs while other warps still read x (gemv_fused.h), the unfused ops would read what
// they just wrote.
void check_output(const char* op, Name name, const Tensor* y, const Tensor& x, int64_t M,
                  int64_t N) {
  if (y == nullptr)
    GYRE_THROW(invalid_argument, "ops::{}: output '{}' is a null pointer", op, name);
  if (!y->defined()) return;
  check_like_x(op, name, y, x);
  if (y->dim() < 1 || y->size(-1) != N || y->numel() != M * N)
    GYRE_THROW(invalid_argument, "ops::{}: output '{}' has shape {}, expected {} rows of {}", op,
               name, shape_str(y->shape()), M, N);
  if (overlaps(*y, x))
    GYRE_THROW(invalid_argument,
               "ops::{}: output '{}' shares memory with the input 'x'; pass a separate output "
               "tensor",
               op, name);
}

Shape out_shape(const Tensor& x, int64_t N) {
  Shape s = x.shape();
  s.back() = N;
  return s;
}

// The bf16 weight copy for a fused GEMV over x, or null where ops::linear would not take the GEMV
// for this weight (so the caller runs the unfused ops). Mirrors ops::linear's CUDA dispatch:
// autocast + an installed cache + M, N, K > 0 -> linear_fwd_autocast_bf16_weight, which takes the
// GEMV exactly when linear_gemv_bf16_supported.
const uint16_t* gemv_weight(const Tensor& x, const Tensor& w, int64_t M, int64_t K) {
  if constexpr (kCuda) {  // discarded without CUDA: nothing of gyre_cuda is referenced
    const int64_t N = w.size(0);
    if (x.device() != Device::cuda || x.dtype() != DType::f32 || !bf16_autocast() || M <= 0 ||
        M > cuda::kGemvMaxRows || N <= 0 || K <= 0)
      return nullptr;
    Bf16WeightCache* cache = bf16_weight_cache();
    if (!cache) return nullptr;
    const uint16_t* wb = cache->bf16(w);  // what ops::linear would look up too
    return cuda::linear_gemv_bf16_supported(x.f32(), wb, M, N, K) ? wb : nullptr;
  }
  return nullptr;
}

// The weight operand for the shared-input GEMMs (fused_gemm.h) in `out`, or false where ops::linear
// would not run this weight on linear_gemm_bf16 over a bf16 copy of x. Mirrors ops::linear's CUDA
// autocast dispatch past the GEMV's rows — M > kGemvMaxRows, where linear_gemv_bf16_supported is
// false whatever the pointers, and N, K > 0 — with its two weight sources: an installed cache ->
// linear_fwd_autocast_bf16_weight on the cached copy; none -> linear_fwd_autocast, which rounds the
// f32 weight to bf16 into pool scratch and runs that same GEMM branch on it (the GEMMs round it
// the same way: GemmWeight's f32). The rms_norm_* ops ask with x for rms_norm's output: same
// rows, dtype and device.
bool gemm_weight(const Tensor& x, const Tensor& w, int64_t M, int64_t K, cuda::GemmWeight& out) {
  if constexpr (kCuda) {
    if (x.device() != Device::cuda || x.dtype() != DType::f32 || !bf16_autocast() ||
        M <= cuda::kGemvMaxRows || w.size(0) <= 0 || K <= 0)
      return false;
    Bf16WeightCache* cache = bf16_weight_cache();
    out = cache ? cuda::GemmWeight{cache->bf16(w), nullptr} : cuda::GemmWeight{nullptr, w.f32()};
    return true;
  }
  return false;
}

// Before gemm_weight's lookups of gate and up: where it would serve both from the installed cache,
// the cache makes their copies side by side (Bf16WeightCache::bf16_pair; nothing changes for
// copies that exist already), so that the SwiGLU backward's one dX GEMM over dgate | dup
// (ops::swiglu_gate_up_backward) reads them stacked in place. Same values either way.
void pair_gate_up_copies(const Tensor& x, const Tensor& w_gate, const Tensor& w_up, int64_t M,
                         int64_t K) {
  if constexpr (kCuda) {
    if (x.device() != Device::cuda || x.dtype() != DType::f32 || !bf16_autocast() ||
        M <= cuda::kGemvMaxRows || K <= 0 || w_gate.size(0) <= 0 ||
        w_gate.shape() != w_up.shape() || w_gate.address() == w_up.address())
      return;
    if (Bf16WeightCache* cache = bf16_weight_cache()) cache->bf16_pair(w_gate, w_up);
  }
}

const float* bias_ptr(const Tensor& b) { return b.defined() ? b.f32() : nullptr; }

// The RMSNorm in front of a fused linear (rms_norm_linear_*): its weight and eps, where rms_norm's
// own outputs go (null: nowhere), and where the linears' input operand goes for a backward
// (operand: null, or assigned the bf16 GEMM operand / the f32 normed rows, see the header).
struct Norm {
  const Tensor& w;
  float eps;
  Tensor* xn;
  Tensor* rstd;
  Tensor* operand = nullptr;
};

// rms_norm's argument rules, checked up front (the fused path never calls rms_norm): a weight
// [K] like x, a finite eps >= 0, and outputs of rms_norm's shapes that do not overlap x or the
// norm weight (the fused kernel writes them while other blocks still read x).
void check_norm(const char* op, const Norm& nrm, const Tensor& x, int64_t M, int64_t K) {
  check_like_x(op, {"norm_w"}, &nrm.w, x);
  if (nrm.w.shape() != Shape{K})
    GYRE_THROW(invalid_argument,
               "ops::{}: norm weight 'norm_w' has shape {}, expected [{}] (x's last dim; x is {})",
               op, shape_str(nrm.w.shape()), K, shape_str(x.shape()));
  if (!(nrm.eps >= 0 && std::isfinite(nrm.eps)))
    GYRE_THROW(invalid_argument, "ops::{}: eps must be finite and >= 0, got {}", op, nrm.eps);
  if (nrm.operand && (nrm.operand == nrm.xn || nrm.operand == nrm.rstd))
    GYRE_THROW(invalid_argument,
               "ops::{}: 'xn_operand_out' is the same tensor as '{}'; pass a separate tensor (the "
               "operand may be bf16 where xn_out is f32)",
               op, nrm.operand == nrm.xn ? "xn_out" : "rstd_out");
  if (nrm.xn) {
    check_output(op, {"xn_out"}, nrm.xn, x, M, K);
    if (overlaps(*nrm.xn, nrm.w))
      GYRE_THROW(invalid_argument,
                 "ops::{}: output 'xn_out' shares memory with 'norm_w'; pass a separate tensor",
                 op);
  }
  if (nrm.rstd && nrm.rstd->defined()) {
    check_like_x(op, {"rstd_out"}, nrm.rstd, x);
    if (nrm.rstd->dim() < 1 || nrm.rstd->numel() != M || nrm.rstd->size(-1) != M)
      GYRE_THROW(invalid_argument, "ops::{}: output 'rstd_out' has shape {}, expected [{}]", op,
                 shape_str(nrm.rstd->shape()), M);
    if (overlaps(*nrm.rstd, x) || overlaps(*nrm.rstd, nrm.w) ||
        (nrm.xn && overlaps(*nrm.rstd, *nrm.xn)))
      GYRE_THROW(invalid_argument,
                 "ops::{}: output 'rstd_out' shares memory with 'x', 'norm_w' or 'xn_out'; pass a "
                 "separate tensor",
                 op);
  }
}

// An output of the linear part must not share memory with rms_norm's outputs either.
void check_apart_from_norm(const char* op, Name name, const Tensor* y, const Norm* nrm) {
  if (!nrm || !y) return;
  if ((nrm->xn && overlaps(*y, *nrm->xn)) || (nrm->rstd && overlaps(*y, *nrm->rstd)))
    GYRE_THROW(invalid_argument,
               "ops::{}: output '{}' shares memory with 'xn_out' or 'rstd_out'; pass separate "
               "tensors",
               op, name);
}

// Whether the fused kernels can take the norm: an f32 CUDA weight, 16-byte aligned (read as
// float4 vectors).
bool norm_fusable(const Norm& nrm) {
  if constexpr (kCuda)  // f32() only after the dtype check: f64 norms run on the CPU
    return nrm.w.device() == Device::cuda && nrm.w.dtype() == DType::f32 &&
           cuda::rms_prologue_supported(nrm.w.f32());
  return false;
}

// The prologue's arguments; rms_norm's outputs are allocated here when requested and undefined.
cuda::RmsPrologue prologue_of(const char* op, const Norm& nrm, const Tensor& x, int64_t M) {
  cuda::RmsPrologue p;
  p.w = nrm.w.f32();
  p.eps = double(nrm.eps);  // rms_norm passes double(eps) to its kernel too
  if (nrm.xn) {
    detail::prepare_out(op, "xn_out", *nrm.xn, x.shape(), DType::f32, Device::cuda);
    p.xn = nrm.xn->f32();
  }
  if (nrm.rstd) {
    detail::prepare_out(op, "rstd_out", *nrm.rstd, {M}, DType::f32, Device::cuda);
    p.rstd = nrm.rstd->f32();
  }
  return p;
}

// The unfused norm: rms_norm into the requested outputs or temporaries; returns its y.
Tensor run_norm(const Norm& nrm, const Tensor& x) {
  Tensor xn_tmp, rstd_tmp;
  Tensor& xn = nrm.xn ? *nrm.xn : xn_tmp;
  Tensor& rstd = nrm.rstd ? *nrm.rstd : rstd_tmp;
  rms_norm(x, nrm.w, nrm.eps, xn, rstd);
  return xn;
}

// linear_group, optionally behind an RMSNorm (nrm non-null): checks, then one fused launch per
// kGemvGroupMax members or the unfused ops (rms_norm, then linear_group on its output).
void group_impl(const char* op, const Tensor& x, const Norm* nrm, std::span<const Tensor* const> w,
                std::span<const Tensor* const> b, std::span<Tensor* const> y) {
  int64_t M = 0, K = 0;
  check_input(op, x, M, K);
  if (nrm) check_norm(op, *nrm, x, M, K);
  if (w.empty())
    GYRE_THROW(invalid_argument, "ops::{}: the group is empty ('w' has no weights)", op);
  if (b.size() != w.size() || y.size() != w.size())
    GYRE_THROW(invalid_argument,
               "ops::{}: 'w' has {} weights but 'b' has {} entries and 'y' {} (one per linear; an "
               "undefined tensor for no bias)",
               op, w.size(), b.size(), y.size());
  std::vector<int64_t> n(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    const int64_t idx = int64_t(i);
    n[i] = check_weight_bias(op, {"w", idx}, w[i], {"b", idx}, b[i], x, K);
    check_output(op, {"y", idx}, y[i], x, M, n[i]);
    check_apart_from_norm(op, {"y", idx}, y[i], nrm);
    for (size_t j = 0; j < i; ++j)
      if (y[i] && y[j] && overlaps(*y[i], *y[j]))
        GYRE_THROW(invalid_argument,
                   "ops::{}: outputs 'y[{}]' and 'y[{}]' share memory; each linear needs its own "
                   "output tensor",
                   op, j, i);
  }
  // The fused launch needs every member on the GEMV path (and the norm weight aligned).
  std::vector<const uint16_t*> wb(w.size(), nullptr);
  bool fused = !nrm || norm_fusable(*nrm);
  for (size_t i = 0; i < w.size() && fused; ++i)
    fused = (wb[i] = gemv_weight(x, *w[i], M, K)) != nullptr;
  if constexpr (kCuda)
    if (fused) {
      // rms_norm's outputs (when requested) are written by the first launch only. The GEMV reads
      // f32 rows: a requested operand is rms_norm's f32 y.
      Tensor xn_for_operand;
      Norm with_xn = nrm ? *nrm : Norm{x, 0, nullptr, nullptr};
      if (nrm && nrm->operand && !nrm->xn) with_xn.xn = &xn_for_operand;
      cuda::RmsPrologue p = nrm ? prologue_of(op, with_xn, x, M) : cuda::RmsPrologue{};
      if (nrm && nrm->operand) *nrm->operand = *with_xn.xn;
      for (size_t i = 0; i < w.size(); ++i)
        detail::prepare_out(op, "y", *y[i], out_shape(x, n[i]), DType::f32, Device::cuda);
      // Groups larger than the kernel's pointer table go in several launches.
      for (size_t i0 = 0; i0 < w.size(); i0 += size_t(cuda::kGemvGroupMax)) {
        cuda::GemvGroup g;
        for (size_t i = i0; i < w.size() && g.count < cuda::kGemvGroupMax; ++i, ++g.count) {
          g.w[g.count] = wb[i];
          g.b[g.count] = bias_ptr(*b[i]);
          g.y[g.count] = y[i]->f32();
          g.n[g.count] = n[i];
        }
        if (nrm) {
          cuda::linear_gemv_bf16_group_rms(x.f32(), p, g, M, K);
          p.xn = nullptr, p.rstd = nullptr;
        } else {
          cuda::linear_gemv_bf16_group(x.f32(), g, M, K);
        }
      }
      return;
    }
  // Past the GEMV's rows: every member's GEMM over one bf16 copy of x (or of rms_norm(x)).
  std::vector<cuda::GemmMember> g(w.size());
  bool shared = true;
  for (size_t i = 0; i < w.size() && shared; ++i) shared = gemm_weight(x, *w[i], M, K, g[i].w);
  if constexpr (kCuda)
    if (shared) {
      const cuda::RmsPrologue p = nrm ? prologue_of(op, *nrm, x, M) : cuda::RmsPrologue{};
      for (size_t i = 0; i < w.size(); ++i) {
        detail::prepare_out(op, "y", *y[i], out_shape(x, n[i]), DType::f32, Device::cuda);
        g[i].b = bias_ptr(*b[i]);
        g[i].y = y[i]->f32();
        g[i].n = n[i];
      }
      // A requested operand is the GEMMs' own bf16 input, kept instead of scratch.
      uint16_t* keep = nullptr;
      if (nrm && nrm->operand) {
        *nrm->operand = Tensor::empty(x.shape(), DType::bf16, Device::cuda);
        keep = nrm->operand->data<uint16_t>();
      }
      return cuda::linear_group_gemm_bf16(x.f32(), nrm ? &p : nullptr, g.data(), int64_t(g.size()),
                                          M, K, keep);
    }
  if (nrm) {
    Tensor xn = run_norm(*nrm, x);
    if (nrm->operand) *nrm->operand = xn;
    return linear_group(xn, w, b, y);
  }
  for (size_t i = 0; i < w.size(); ++i) linear(x, *w[i], *b[i], *y[i]);
}

// linear_silu_mul, optionally behind an RMSNorm (nrm non-null).
void silu_mul_impl(const char* op, const Tensor& x, const Norm* nrm, const Tensor& w_gate,
                   const Tensor& b_gate, const Tensor& w_up, const Tensor& b_up, Tensor& out) {
  int64_t M = 0, K = 0;
  check_input(op, x, M, K);
  if (nrm) check_norm(op, *nrm, x, M, K);
  const int64_t N = check_weight_bias(op, {"w_gate"}, &w_gate, {"b_gate"}, &b_gate, x, K);
  const int64_t Nu = check_weight_bias(op, {"w_up"}, &w_up, {"b_up"}, &b_up, x, K);
  if (Nu != N)
    GYRE_THROW(invalid_argument, "ops::{}: 'w_up' has {} rows but 'w_gate' has {}", op, Nu, N);
  check_output(op, {"out"}, &out, x, M, N);
  check_apart_from_norm(op, {"out"}, &out, nrm);
  if constexpr (kCuda) {
    const bool norm_ok = !nrm || norm_fusable(*nrm);
    const uint16_t* wg = norm_ok ? gemv_weight(x, w_gate, M, K) : nullptr;
    const uint16_t* wu = wg ? gemv_weight(x, w_up, M, K) : nullptr;
    if (wg && wu) {
      const cuda::RmsPrologue p = nrm ? prologue_of(op, *nrm, x, M) : cuda::RmsPrologue{};
      detail::prepare_out(op, "out", out, out_shape(x, N), DType::f32, Device::cuda);
      if (nrm)
        return cuda::linear_gemv_bf16_silu_mul_rms(x.f32(), p, wg, bias_ptr(b_gate), wu,
                                                   bias_ptr(b_up), M, N, K, out.f32());
      return cuda::linear_gemv_bf16_silu_mul(x.f32(), wg, bias_ptr(b_gate), wu, bias_ptr(b_up), M,
                                             N, K, out.f32());
    }
  }
  if constexpr (kCuda) {
    // Past the GEMV's rows: both GEMMs over one bf16 copy of x (or of rms_norm(x)).
    cuda::GemmWeight wg, wu;
    pair_gate_up_copies(x, w_gate, w_up, M, K);
    if (gemm_weight(x, w_gate, M, K, wg) && gemm_weight(x, w_up, M, K, wu)) {
      const cuda::RmsPrologue p = nrm ? prologue_of(op, *nrm, x, M) : cuda::RmsPrologue{};
      detail::prepare_out(op, "out", out, out_shape(x, N), DType::f32, Device::cuda);
      return cuda::linear_silu_mul_gemm_bf16(x.f32(), nrm ? &p : nullptr, wg, bias_ptr(b_gate), wu,
                                             bias_ptr(b_up), M, N, K, out.f32());
    }
  }
  if (nrm) return linear_silu_mul(run_norm(*nrm, x), w_gate, b_gate, w_up, b_up, out);
  // The definition: gate/up in the MLP's pre-activation dtype (bf16 under autocast on CUDA, as
  // the decoder layer's unfused path allocates them), then silu_mul.
  const DType act = swiglu_gate_up_dtype(x);
  Tensor gate, up;
  if (act != x.dtype()) {
    gate = Tensor::empty(out_shape(x, N), act, x.device());
    up = Tensor::empty(out_shape(x, N), act, x.device());
  }
  linear(x, w_gate, b_gate, gate);
  linear(x, w_up, b_up, up);
  silu_mul(gate, up, out);
}

}  // namespace

DType swiglu_gate_up_dtype(const Tensor& x) {
  return x.device() == Device::cuda && x.dtype() == DType::f32 && bf16_autocast() ? DType::bf16
                                                                                  : x.dtype();
}

void linear_group(const Tensor& x, std::span<const Tensor* const> w,
                  std::span<const Tensor* const> b, std::span<Tensor* const> y) {
  detail::OpScope op_scope_("linear_group");
  group_impl("linear_group", x, nullptr, w, b, y);
}

void linear_silu_mul(const Tensor& x, const Tensor& w_gate, const Tensor& b_gate,
                     const Tensor& w_up, const Tensor& b_up, Tensor& out) {
  detail::OpScope op_scope_("linear_silu_mul");
  silu_mul_impl("linear_silu_mul", x, nullptr, w_gate, b_gate, w_up, b_up, out);
}

void rms_norm_linear_group(const Tensor& x, const Tensor& norm_w, float eps,
                           std::span<const Tensor* const> w, std::span<const Tensor* const> b,
                           std::span<Tensor* const> y, Tensor* xn_out, Tensor* rstd_out,
                           Tensor* xn_operand_out) {
  detail::OpScope op_scope_("rms_norm_linear_group");
  const Norm nrm{norm_w, eps, xn_out, rstd_out, xn_operand_out};
  group_impl("rms_norm_linear_group", x, &nrm, w, b, y);
}

void rms_norm_linear_silu_mul(const Tensor& x, const Tensor& norm_w, float eps,
                              const Tensor& w_gate, const Tensor& b_gate, const Tensor& w_up,
                              const Tensor& b_up, Tensor& out, Tensor* xn_out, Tensor* rstd_out) {
  detail::OpScope op_scope_("rms_norm_linear_silu_mul");
  const Norm nrm{norm_w, eps, xn_out, rstd_out};
  silu_mul_impl("rms_norm_linear_silu_mul", x, &nrm, w_gate, b_gate, w_up, b_up, out);
}

namespace {
// linear_add_residual with a bf16 x (the attention's bf16 output feeding o_proj; CUDA under
// autocast only). Where the f32 op would run the bias-free residual GEMM over x rounded to bf16
// (more than 8 rows) and every other argument is what that path takes, the GEMM reads x directly:
// bf16 -> f32 -> bf16 is exact, so that is the operand the f32 op would build. Anything else —
// fewer rows (the GEMV reads f32), a bias, any argument the f32 op would reject — converts x to
// f32 (exactly) and runs the f32 op, which then also reports any error.
void linear_add_residual_bf16_x(const Tensor& x, const Tensor& w, const Tensor& b,
                                const Tensor& residual, Tensor& y) {
  const char* op = "linear_add_residual";
  if (x.device() != Device::cuda || !bf16_autocast())
    GYRE_THROW(invalid_argument,
               "ops::{}: input 'x' is bf16 {}; only the CUDA backend under ops::Bf16Autocast "
               "takes a bf16 x (the attention's bf16 output); pass an f32 x",
               op,
               x.device() == Device::cuda ? "outside an ops::Bf16Autocast scope" : "on the CPU");
  // The f32 op below checks a converted copy of x: an output sharing x's memory must be caught
  // here.
  if (y.defined() && overlaps(y, x))
    GYRE_THROW(invalid_argument,
               "ops::{}: output 'y' shares memory with the input 'x'; pass a separate output "
               "tensor (y may be the residual tensor itself)",
               op);
  if constexpr (kCuda) {
    const int64_t K = x.dim() >= 1 ? x.size(-1) : 0, M = K > 0 ? x.numel() / K : 0;
    // The GEMM plans assume cuBLASLt's default 256-byte operand alignment, which the f32 path's
    // scratch copy has: a view that lacks it takes the conversion path below.
    const bool args_ok =
        x.dim() >= 1 && reinterpret_cast<uintptr_t>(x.raw()) % 256 == 0 && !b.defined() &&
        w.defined() && w.device() == Device::cuda && w.dtype() == DType::f32 && w.dim() == 2 &&
        w.size(1) == K && w.size(0) > 0 && residual.defined() &&
        residual.device() == Device::cuda && residual.dtype() == DType::f32 &&
        residual.shape() == out_shape(x, w.size(0)) &&
        (!y.defined() ||
         (y.device() == Device::cuda && y.dtype() == DType::f32 && y.shape() == residual.shape() &&
          !overlaps(y, x) && (y.address() == residual.address() || !overlaps(y, residual))));
    cuda::GemmWeight wb;
    if (args_ok && M > cuda::kGemvMaxRows && K > 0) {
      // gemm_weight's lookup, asked with the f32 rows this x stands for (same rows and device).
      Bf16WeightCache* cache = bf16_weight_cache();
      wb = cache ? cuda::GemmWeight{cache->bf16(w), nullptr} : cuda::GemmWeight{nullptr, w.f32()};
      detail::prepare_out(op, "y", y, residual.shape(), DType::f32, Device::cuda);
      return cuda::linear_residual_gemm_bf16in(x.data<uint16_t>(), wb, residual.f32(), M, w.size(0),
                                               K, y.f32());
    }
  }
  Tensor xf = Tensor::empty(x.shape(), DType::f32, x.device());
  copy(x, xf);  // exact
  linear_add_residual(xf, w, b, residual, y);
}
}  // namespace

void linear_add_residual(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& residual,
                         Tensor& y) {
  detail::OpScope op_scope_("linear_add_residual");
  const char* op = "linear_add_residual";
  if (x.defined() && x.dtype() == DType::bf16)
    return linear_add_residual_bf16_x(x, w, b, residual, y);
  int64_t M = 0, K = 0;
  check_input(op, x, M, K);
  const int64_t N = check_weight_bias(op, {"w"}, &w, {"b"}, &b, x, K);
  const Shape ys = out_shape(x, N);
  check_like_x(op, {"residual"}, &residual, x);
  if (residual.shape() != ys)
    GYRE_THROW(invalid_argument, "ops::{}: 'residual' has shape {}, expected {} (x·wᵀ's shape)", op,
               shape_str(residual.shape()), shape_str(ys));
  if (y.defined()) {
    check_like_x(op, {"y"}, &y, x);
    if (y.shape() != ys)
      GYRE_THROW(invalid_argument, "ops::{}: output 'y' has shape {}, expected {}", op,
                 shape_str(y.shape()), shape_str(ys));
    if (overlaps(y, x))
      GYRE_THROW(invalid_argument,
                 "ops::{}: output 'y' shares memory with the input 'x'; pass a separate output "
                 "tensor (y may be the residual tensor itself)",
                 op);
  }
  const bool y_is_residual = y.defined() && y.address() == residual.address();
  // y may be exactly the residual (each element reads its residual before writing it), never a
  // partial overlap, where one element's write would land on another's unread residual.
  if (y.defined() && !y_is_residual && overlaps(y, residual))
    GYRE_THROW(invalid_argument,
               "ops::{}: output 'y' partly overlaps 'residual'; pass the residual tensor itself "
               "or a separate output",
               op);
  if constexpr (kCuda)
    if (const uint16_t* wb = gemv_weight(x, w, M, K)) {
      detail::prepare_out(op, "y", y, ys, DType::f32, Device::cuda);
      return cuda::linear_gemv_bf16_residual(x.f32(), wb, bias_ptr(b), residual.f32(), M, N, K,
                                             y.f32());
    }
  // Past the GEMV's rows without a bias: the residual as the GEMM's C operand. (A bias stays
  // unfused: cuBLASLt's bias epilogue would add it after the residual, not before.)
  if constexpr (kCuda)
    if (cuda::GemmWeight wb; !b.defined() && gemm_weight(x, w, M, K, wb)) {
      detail::prepare_out(op, "y", y, ys, DType::f32, Device::cuda);
      return cuda::linear_residual_gemm_bf16(x.f32(), wb, residual.f32(), M, N, K, y.f32());
    }
  if (y_is_residual) {  // the linear must not overwrite the residual before the add reads it
    Tensor t;
    linear(x, w, b, t);
    return add(t, residual, y);
  }
  linear(x, w, b, y);
  add(y, residual, y);
}

void rms_norm_swiglu_mlp_residual(const Tensor& x, const Tensor& norm_w, float eps,
                                  const Tensor& w_gate, const Tensor& b_gate, const Tensor& w_up,
                                  const Tensor& b_up, const Tensor& w_down, const Tensor& b_down,
                                  const Tensor& residual, Tensor& out, SwigluMlpSaved* saved) {
  detail::OpScope op_scope_("rms_norm_swiglu_mlp_residual");
  const char* op = "rms_norm_swiglu_mlp_residual";
  // Every argument of both ops up front (the composition's own checks then never fire).
  int64_t M = 0, K = 0;
  check_input(op, x, M, K);
  const Norm nrm{norm_w, eps, nullptr, nullptr};
  check_norm(op, nrm, x, M, K);
  const int64_t I = check_weight_bias(op, {"w_gate"}, &w_gate, {"b_gate"}, &b_gate, x, K);
  const int64_t Iu = check_weight_bias(op, {"w_up"}, &w_up, {"b_up"}, &b_up, x, K);
  if (Iu != I)
    GYRE_THROW(invalid_argument, "ops::{}: 'w_up' has {} rows but 'w_gate' has {}", op, Iu, I);
  check_like_x(op, {"w_down"}, &w_down, x);
  if (w_down.dim() != 2 || w_down.size(1) != I)
    GYRE_THROW(invalid_argument,
               "ops::{}: weight 'w_down' has shape {}, expected [N, {}] (w_gate's rows; w_gate is "
               "{})",
               op, shape_str(w_down.shape()), I, shape_str(w_gate.shape()));
  const int64_t N = w_down.size(0);
  if (b_down.defined()) {
    check_like_x(op, {"b_down"}, &b_down, x);
    if (b_down.shape() != Shape{N})
      GYRE_THROW(invalid_argument, "ops::{}: bias 'b_down' has shape {}, expected [{}]", op,
                 shape_str(b_down.shape()), N);
  }
  const Shape ys = out_shape(x, N);
  check_like_x(op, {"residual"}, &residual, x);
  if (residual.shape() != ys)
    GYRE_THROW(invalid_argument, "ops::{}: 'residual' has shape {}, expected {} (x's rows of {})",
               op, shape_str(residual.shape()), shape_str(ys), N);
  // out may be exactly the residual (which may be x: x is consumed by the first half before
  // anything is written); otherwise it must be apart from both.
  const bool out_is_residual = out.defined() && out.address() == residual.address();
  if (out.defined()) {
    check_like_x(op, {"out"}, &out, x);
    if (out.shape() != ys)
      GYRE_THROW(invalid_argument, "ops::{}: output 'out' has shape {}, expected {}", op,
                 shape_str(out.shape()), shape_str(ys));
    if (!out_is_residual && overlaps(out, x))
      GYRE_THROW(invalid_argument,
                 "ops::{}: output 'out' shares memory with the input 'x'; pass a separate output "
                 "tensor (out may be the residual tensor itself)",
                 op);
    if (!out_is_residual && overlaps(out, residual))
      GYRE_THROW(invalid_argument,
                 "ops::{}: output 'out' partly overlaps 'residual'; pass the residual tensor "
                 "itself or a separate output",
                 op);
  }
  // Where both halves would run the cuBLASLt GEMMs over bf16 copies (rms_norm_linear_silu_mul's
  // shared-input GEMMs; linear_add_residual's bias-free residual GEMM): one path with the cast of
  // act folded into the SwiGLU kernel. The same lookups the two ops make, in their order.
  if constexpr (kCuda) {
    cuda::GemmWeight wg, wu, wd;
    if (!b_down.defined()) pair_gate_up_copies(x, w_gate, w_up, M, K);
    if (!b_down.defined() && gemm_weight(x, w_gate, M, K, wg) && gemm_weight(x, w_up, M, K, wu) &&
        gemm_weight(x, w_down, M, I, wd)) {  // act: x's rows and device
      Tensor rstd_keep;
      const Norm with_rstd{norm_w, eps, nullptr, saved ? &rstd_keep : nullptr};
      const cuda::RmsPrologue p = prologue_of(op, with_rstd, x, M);
      detail::prepare_out(op, "out", out, ys, DType::f32, Device::cuda);
      cuda::SwigluKeep keep;
      if (saved) {  // the kernels write the operands the backward reads instead of scratch
        saved->rstd = rstd_keep;
        saved->xn = Tensor::empty(x.shape(), DType::bf16, Device::cuda);
        saved->gate = Tensor::empty(out_shape(x, I), DType::bf16, Device::cuda);
        saved->up = Tensor::empty(out_shape(x, I), DType::bf16, Device::cuda);
        saved->act = Tensor::empty(out_shape(x, I), DType::bf16, Device::cuda);
        keep = {saved->xn.data<uint16_t>(), saved->gate.data<uint16_t>(),
                saved->up.data<uint16_t>(), saved->act.data<uint16_t>()};
      }
      return cuda::swiglu_mlp_residual_gemm_bf16(x.f32(), &p, wg, bias_ptr(b_gate), wu,
                                                 bias_ptr(b_up), wd, residual.f32(), M, K, I, N,
                                                 out.f32(), keep);
    }
  }
  if (saved) {
    // A saving forward elsewhere: the definition spelled out, keeping what the backward reads —
    // rms_norm, gate/up in swiglu_gate_up_dtype (ops::linear into them), silu_mul, then the down
    // projection with its residual. rms_norm_linear_silu_mul is bitwise this composition on every
    // path (fused_linear_ops.h), so the values are those of the non-saving call.
    saved->xn = Tensor(), saved->rstd = Tensor(), saved->act = Tensor();
    rms_norm(x, norm_w, eps, saved->xn, saved->rstd);
    const DType act_dt = swiglu_gate_up_dtype(saved->xn);
    saved->gate = Tensor::empty(out_shape(x, I), act_dt, x.device());
    saved->up = Tensor::empty(out_shape(x, I), act_dt, x.device());
    linear(saved->xn, w_gate, b_gate, saved->gate);
    linear(saved->xn, w_up, b_up, saved->up);
    Tensor act = Tensor::empty(out_shape(x, I), x.dtype(), x.device());
    silu_mul(saved->gate, saved->up, act);
    return linear_add_residual(act, w_down, b_down, residual, out);
  }
  // Everywhere else (the CPU, f64, f32 without autocast, the 1..8-row GEMVs, a down bias): the
  // composition.
  Tensor act;
  rms_norm_linear_silu_mul(x, norm_w, eps, w_gate, b_gate, w_up, b_up, act);
  linear_add_residual(act, w_down, b_down, residual, out);
}

}  // namespace gyre::ops
