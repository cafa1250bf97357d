// gyre::ops causal GQA attention over packed variable-length sequences (ops.h), forward and
// backward: argument and cu_seqlens checks, then the CPU kernels, the CUDA f32 kernels, or — under
// a Bf16Autocast scope with head dim 64/128 — the FlashAttention-2 bf16 kernels. Same invariants
// as ops.cc.
#include <initializer_list>

#include "gyre/backend/attention_args.h"  // check_attention, shared with rope_attention_ops.cc
#include "gyre/backend/cpu/kernels.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops.h"
#include "gyre/backend/ops_args.h"

namespace gyre::ops {

using namespace detail;  // argument checking (ops_args.h)

// ---- attention

void attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                      float scale, Tensor& out, Tensor& lse) {
  OpScope op_scope_("attention_varlen");
  const char* op = "attention_varlen";
  const Device dev = op_device(
      op,
      {{"q", &q}, {"k", &k}, {"v", &v}, {"cu_seqlens", &cu_seqlens}, {"out", &out}, {"lse", &lse}});
  AttnDims a = check_attention(op, q, k, v, cu_seqlens, scale);
  DType dt = float_dtype(op, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}});
  prepare_out(op, "out", out, q.shape(), dt, dev);
  prepare_out(op, "lse", lse, {a.T, a.Hq}, dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (bf16_autocast() && cuda::attention_autocast_supported(a.D))
        return cuda::attention_fwd_autocast(q.f32(), k.f32(), v.f32(), cu_seqlens.i32(), a.B,
                                            a.max_len, a.T, a.Hq, a.Hkv, a.D, scale, out.f32(),
                                            lse.f32());
      require_cuda_head_dim(op, a.D);
      return cuda::attention_fwd(q.f32(), k.f32(), v.f32(), cu_seqlens.i32(), a.B, a.T, a.Hq, a.Hkv,
                                 a.D, scale, out.f32(), lse.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::attention_fwd<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v), cu_seqlens.i32(), a.B, a.Hq, a.Hkv, a.D,
                          T(scale), ptr<T>(out), ptr<T>(lse));
  });
}

void attention_varlen_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& cu_seqlens, float scale, Tensor& dq, Tensor& dk,
                               Tensor& dv) {
  OpScope op_scope_("attention_varlen_backward");
  const char* op = "attention_varlen_backward";
  const Device dev = op_device(op, {{"dout", &dout},
                                    {"q", &q},
                                    {"k", &k},
                                    {"v", &v},
                                    {"out", &out},
                                    {"lse", &lse},
                                    {"cu_seqlens", &cu_seqlens},
                                    {"dq", &dq},
                                    {"dk", &dk},
                                    {"dv", &dv}});
  AttnDims a = check_attention(op, q, k, v, cu_seqlens, scale);
  check_defined(op, "dout", dout);
  check_defined(op, "out", out);
  check_defined(op, "lse", lse);
  DType dt = float_dtype(op, {{"dout", &dout},
                              {"q", &q},
                              {"k", &k},
                              {"v", &v},
                              {"out", &out},
                              {"lse", &lse},
                              {"dq", &dq},
                              {"dk", &dk},
                              {"dv", &dv}});
  check_shape(op, "dout", dout, q.shape());
  check_shape(op, "out", out, q.shape());
  GYRE_CHECK(lse.numel() == a.T * a.Hq, "ops::{}: lse has shape {}, expected [{}, {}]", op,
             shape_str(lse.shape()), a.T, a.Hq);
  prepare_out(op, "dq", dq, q.shape(), dt, dev);
  prepare_out(op, "dk", dk, k.shape(), dt, dev);
  prepare_out(op, "dv", dv, v.shape(), dt, dev);
  if constexpr (kCuda)
    if (dev == Device::cuda) {
      require_cuda_f32(op, dt);
      if (bf16_autocast() && cuda::attention_autocast_supported(a.D))
        return cuda::attention_bwd_autocast(dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(),
                                            lse.f32(), cu_seqlens.i32(), a.B, a.max_len, a.T, a.Hq,
                                            a.Hkv, a.D, scale, dq.f32(), dk.f32(), dv.f32());
      require_cuda_head_dim(op, a.D);
      return cuda::attention_bwd(dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(),
                                 cu_seqlens.i32(), a.B, a.T, a.Hq, a.Hkv, a.D, scale, dq.f32(),
                                 dk.f32(), dv.f32());
    }
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::attention_bwd<T>(ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(out), ptr<T>(lse),
                          cu_seqlens.i32(), a.B, a.Hq, a.Hkv, a.D, T(scale), ptr<T>(dq), ptr<T>(dk),
                          ptr<T>(dv));
  });
}

}  // namespace gyre::ops
