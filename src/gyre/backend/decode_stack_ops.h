// The decoder layers of a batch-1 decode step as ONE op (issue 7: the decode step at batch 1 was
// ~6 dependent kernel launches a layer): ops::decode_stack_ runs every layer's fused decode ops in
// one persistent CUDA kernel (backend/cuda/decode_stack.h), bitwise what the per-layer ops leave.
// Implementation: decode_stack_ops.cc.
#pragma once
#include <vector>

#include "gyre/backend/ops.h"

namespace gyre::ops {

// One dense decoder layer (pre-norm attention + pre-norm SwiGLU MLP, Llama / Qwen2 without q/k
// norms): f32 CUDA tensors [out, in]; any bias may be undefined. k_cache / v_cache are the layer's
// bf16 paged caches [pages, page_size, Hkv, D].
struct DecodeStackLayer {
  const Tensor* input_norm = nullptr;
  const Tensor *q_w = nullptr, *q_b = nullptr, *k_w = nullptr, *k_b = nullptr;
  const Tensor *v_w = nullptr, *v_b = nullptr, *o_w = nullptr, *o_b = nullptr;
  const Tensor* post_norm = nullptr;
  const Tensor *gate_w = nullptr, *gate_b = nullptr, *up_w = nullptr, *up_b = nullptr;
  const Tensor *down_w = nullptr, *down_b = nullptr;
  Tensor* k_cache = nullptr;
  Tensor* v_cache = nullptr;
};

// A one-sequence, one-new-token paged decode step (what ops::rope_paged_attention_ takes besides
// q/k/v): i32 CUDA index arrays and the max_kv_len its attention plans its key splits for.
struct PagedDecodeStep {
  Tensor positions, slot_mapping, cu_seqlens_q, kv_lens, page_indptr, page_indices;
  int64_t max_kv_len = 0;
};

// Whether decode_stack_ runs for these sizes in the current setting (host arithmetic only): a CUDA
// build and device, one token (T == 1), bf16 caches, bf16 autocast with a bf16 weight cache
// installed (ops::UseBf16WeightCache: the stack reads the cached copies), the switch on
// (set_decode_stack / GYRE_DECODE_STACK=1; OFF by default), and cuda::decode_stack_supported's
// sizes.
bool decode_stack_fuses(Device device, DType cache_dtype, int64_t T, int64_t layers, int64_t H,
                        int64_t Hq, int64_t Hkv, int64_t D, int64_t I);

// For every layer, in order, on x [1, H] in place (eps: the RMSNorms', scale: the attention's):
//   q, k, v = rms_norm_linear_group(x, input_norm, eps, {q_w, k_w, v_w}, {q_b, k_b, v_b})
//   rope_paged_attention_(q, k, v, step.positions, cos, sin, step.slot_mapping, k_cache, v_cache,
//                         step.cu_seqlens_q, step.kv_lens, step.page_indptr, step.page_indices,
//                         scale, attn)            (its key splits planned for step.max_kv_len)
//   x = linear_add_residual(attn, o_w, o_b, x)
//   x = rms_norm_swiglu_mlp_residual(x, post_norm, eps, gate_w, gate_b, up_w, up_b, down_w,
//                                    down_b, x)
// bitwise as those ops leave x and the caches under bf16 autocast at one row. Preconditions: what
// decode_stack_fuses checks, and the step's index arrays validated by the caller
// (infer::PagedAttentionContext: the slot is the sequence's last position through its pages).
// Errors (invalid_argument / unsupported, before anything runs) name the layer and the tensor.
void decode_stack_(Tensor& x, const std::vector<DecodeStackLayer>& layers, float eps, float scale,
                   const Tensor& cos, const Tensor& sin, const PagedDecodeStep& step);

// The process-wide switch decode_stack_fuses reads: OFF by default (GYRE_DECODE_STACK=1 starts it
// on) — measured on an H200 the stack is still slower than the per-op decode it replaces
// (docs/cuda.md, "Batch-1 decode stack"), so it is opt-in until it is faster. A captured CUDA graph
// keeps the path it was captured with: infer::DecodeGraphs drops its graphs when the switch
// changes.
void set_decode_stack(bool on);
bool decode_stack_enabled();

// How many times decode_stack_ has run in this process (tests check that a path took it).
uint64_t decode_stack_calls();

}  // namespace gyre::ops
