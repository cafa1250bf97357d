// The argument checks of the varlen attention ops, written once: ops::attention_varlen and its
// backward (attention_ops.cc) and the fused RoPE + attention (rope_attention_ops.cc), so both
// raise the same errors for the same bad arguments. Internal to gyre_backend.
#pragma once
#include <algorithm>
#include <cmath>

#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"

namespace gyre::ops::detail {

// What check_attention proved: T tokens, Hq query heads over Hkv kv heads of dim D, B sequences.
struct AttnDims {
  int64_t T, Hq, Hkv, D, B;
  int64_t max_len = 0;  // longest sequence (bounds the flash kernels' grid)
};

inline void require_cuda_head_dim(const char* op, int64_t D) {
  if (D > cuda::kMaxAttentionHeadDim)
    GYRE_THROW(unsupported, "ops::{}: the CUDA attention kernels take head dims up to {}, got {}",
               op, cuda::kMaxAttentionHeadDim, D);
}

// q [T, Hq, D], k and v [T, Hkv, D] with Hq % Hkv == 0, cu_seqlens i32 [B+1] holding offsets
// 0 = cu[0] <= ... <= cu[B] = T (checked on a host copy unless a KnownIndices scope records
// them), a finite scale. Shapes only: dtypes and devices are the caller's checks.
inline AttnDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& cu_seqlens, float scale) {
  check_defined(op, "q", q);
  check_defined(op, "k", k);
  check_defined(op, "v", v);
  check_i32(op, "cu_seqlens", cu_seqlens);
  GYRE_CHECK(q.dim() == 3 && k.dim() == 3,
             "ops::{}: q must be [T, Hq, D] and k [T, Hkv, D], got {} and {}", op,
             shape_str(q.shape()), shape_str(k.shape()));
  AttnDims a{q.size(0), q.size(1), k.size(1), q.size(2), cu_seqlens.numel() - 1};
  GYRE_CHECK(a.Hq > 0 && a.Hkv > 0 && a.D > 0 && a.Hq % a.Hkv == 0,
             "ops::{}: {} query heads cannot share {} kv heads (need Hq % Hkv == 0, D > 0)", op,
             a.Hq, a.Hkv);
  check_shape(op, "k", k, {a.T, a.Hkv, a.D});
  check_shape(op, "v", v, {a.T, a.Hkv, a.D});
  GYRE_CHECK(cu_seqlens.dim() == 1 && a.B >= 0, "ops::{}: cu_seqlens must be [B+1], got {}", op,
             shape_str(cu_seqlens.shape()));
  GYRE_CHECK(std::isfinite(scale), "ops::{}: softmax scale {} is not finite", op, scale);
  // Offsets the caller validated on the host (CausalLM::forward): no device-to-host copy.
  if (const auto* known = KnownIndices::find(cu_seqlens, KnownIndices::Entry::offsets))
    if (known->total == a.T && known->numel == a.B + 1) {
      a.max_len = known->max_len;
      return a;
    }
  const Tensor cu_host = host_view(cu_seqlens);
  const int32_t* cu = cu_host.i32();
  if (cu[0] != 0)
    GYRE_THROW(invalid_argument,
               "ops::{}: cu_seqlens[0] is {}, must be 0 (offsets of the packed "
               "sequences start at token 0)",
               op, cu[0]);
  for (int64_t b = 0; b < a.B; ++b)
    if (cu[b + 1] < cu[b])
      GYRE_THROW(invalid_argument,
                 "ops::{}: cu_seqlens decreases at index {} ({} -> {}); "
                 "offsets must be cumulative sequence lengths",
                 op, b + 1, cu[b], cu[b + 1]);
  for (int64_t b = 0; b < a.B; ++b) a.max_len = std::max<int64_t>(a.max_len, cu[b + 1] - cu[b]);
  if (cu[a.B] != a.T)
    GYRE_THROW(invalid_argument,
               "ops::{}: cu_seqlens ends at {} but the batch has {} tokens; "
               "the last offset must equal the packed length",
               op, cu[a.B], a.T);
  return a;
}

}  // namespace gyre::ops::detail
