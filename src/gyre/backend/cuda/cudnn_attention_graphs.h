// The two cuDNN operation graphs of training attention (scaled dot-product attention over packed
// variable-length sequences, causal, GQA): the forward with softmax stats and the backward, built
// op by op in the composite form cuDNN's fused flash-attention engines recognise (NVIDIA's cuDNN
// documentation, "Scaled Dot Product Attention" and the graph API's fused attention patterns).
// Internal to cudnn_attention.cc, which caches the plans and binds the tensors below by UID.
//
// Graph conventions (cuDNN's): tensors are 4-d [b, h, s, d] with explicit strides, so the packed
// [T, H, D] buffers are b × s × h × d with strides (s·H·D, D, H·D, 1) plus a ragged-offset tensor
// (element offset of each sequence's first row = cu_seqlens[b] · H · D); the first matmul takes
// K transposed ([b, h, d, s] over the same memory); GQA is expressed by K/V having fewer heads
// than Q (the engine maps query head h to kv head h / (Hq / Hkv), as gyre does).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gyre/backend/cuda/cudnn_graph.h"  // defines GYRE_HAVE_CUDNN_HEADERS

#if GYRE_HAVE_CUDNN_HEADERS

namespace gyre::cuda::sdpa_graph {

// UIDs of the tensors bound at execution (virtual tensors get theirs from GraphBuilder).
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kDO,
  kDQ,
  kDK,
  kDV,
  kSeqQ,
  kSeqKV,
  kRagQ,
  kRagK,
  kRagV,
  kRagO,
  kRagStats,
  kRagDO,
  kRagDQ,
  kRagDK,
  kRagDV,
  kScale,
  kNegInfPad,
  kNegInfCausal,
  kOne,
  kSoftmaxSum,
  kDQAccum,
  kRagSoftmaxSum,
  kRagDQAccum,
};

// Bucketed shape of one plan: batch (power of two), longest sequence, heads, head dim.
struct Dims {
  int64_t Bp, S, Hq, Hkv, D;
};

// O = softmax(mask(scale · Q Kᵀ)) V and stats = rowmax + log(rowsum(exp(s − rowmax))).
cudnn::Plan build_forward(const cudnn::Api& a, cudnnHandle_t h, Dims d, std::string* note);
// The backward; det = true writes dQ straight from its matmul (bitwise reproducible), false
// accumulates it in the f32 scratch bound to kDQAccum (atomics).
cudnn::Plan build_backward(const cudnn::Api& a, cudnnHandle_t h, Dims d, bool det,
                           std::string* note);
// Every plan of the forward (backward = false) or backward graph that finalizes
// (GraphBuilder::build_candidates: at most max_plans, about budget_ms of building).
std::vector<cudnn::GraphBuilder::Candidate> build_candidates(const cudnn::Api& a, cudnnHandle_t h,
                                                             Dims d, bool backward, bool det,
                                                             int max_plans, double budget_ms,
                                                             bool sweep_knobs);

}  // namespace gyre::cuda::sdpa_graph
#endif  // GYRE_HAVE_CUDNN_HEADERS
