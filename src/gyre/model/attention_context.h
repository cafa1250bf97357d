// AttentionContext: how a decoder layer's attention gets its keys and values. The model computes
// q, k, v (projected, q/k-normed, rotated) and hands them to the context, which returns the
// attention output. Training and scoring use the default context (causal attention over the packed
// batch itself, cu_seqlens from the Batch); the rollout engine supplies a context that appends k, v
// to its paged KV cache and attends over the cached prefix plus the new tokens. This keeps one
// model definition for both engines (DESIGN.md: "one model definition, one set of kernels").
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/backend/decode_stack_ops.h"
#include "gyre/core/tensor.h"

namespace gyre::model {

class AttentionContext {
 public:
  virtual ~AttentionContext() = default;
  // q: [T, Hq, D]; k, v: [T, Hkv, D] for the T new tokens of this forward; out: [T, Hq, D] to
  // write. `scale` is the softmax scale (1/sqrt(head_dim) for these architectures).
  virtual void attend(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                      Tensor& out) = 0;
  // RoPE, then attend: q and k (un-rotated) are rotated at `positions` with the tables cos/sin
  // (ops::rope_qk_'s semantics) and attended as above. A context may fuse the rotation with its
  // own work (the paged context writes the rotated keys straight into its cache, and in a decode
  // step rotates q and k inside its attention kernel); the result is bitwise that of rope_qk_ then
  // attend. q's and k's contents afterwards are unspecified (rotated or not): callers must not
  // read them (the decoder layer does not). The default is exactly rope_qk_ then attend.
  virtual void rope_attend(int64_t layer, Tensor& q, Tensor& k, const Tensor& v,
                           const Tensor& positions, const Tensor& cos, const Tensor& sin,
                           float scale, Tensor& out);
  // For ops::decode_stack_ (the whole layer stack of a batch-1 decode step in one launch): when
  // this forward is one sequence adding one token over paged caches whose index arrays the context
  // has validated, fills `step` and the `layers` layers' k/v caches and returns true. The default
  // (and any other step): false, and the layers run one by one through rope_attend.
  virtual bool paged_decode_step(int64_t layers, ops::PagedDecodeStep* step,
                                 std::vector<Tensor*>* k_caches, std::vector<Tensor*>* v_caches) {
    (void)layers, (void)step, (void)k_caches, (void)v_caches;
    return false;
  }
};

}  // namespace gyre::model
