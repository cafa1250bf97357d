// Model internals: the Qwen3-MoE sparse block (HF Qwen3MoeSparseMoeBlock): router logits =
// mlp.gate(x) (no bias) → softmax in f32 → top-k → renormalised when norm_topk_prob →
// out = Σ_k w_k · expert_k(x), expert = down(silu(gate(x)) * up(x)). The T·k assignments are
// sorted by expert on the device (ops::moe_permute), each expert runs dense GEMMs over its
// contiguous segment of one permuted buffer, and ops::moe_unpermute sums the weighted rows back to
// tokens in top-k order. The only host transfer per layer is one copy of the E+1 segment offsets.
#pragma once
#include "gyre/model/config.h"
#include "gyre/model/forward_state.h"
#include "gyre/model/weights.h"

namespace gyre::model {

// xn: [T, H] (post_attention_layernorm output); returns [T, H]. `save` may be null.
Tensor moe_forward(const ModelConfig& config, const LayerTensors& w, const Tensor& xn,
                   MoeSaved* save);

// dout: ∂L/∂out [T, H]. Returns ∂L/∂xn [T, H]; expert and router gradients accumulate into g.
Tensor moe_backward(const ModelConfig& config, const LayerTensors& w, LayerTensors& g,
                    const Tensor& xn, const MoeSaved& s, const Tensor& dout);

// The former block (moe_block_legacy.cc): host grouping per expert, per-expert uploads, gathers
// and scatter-adds (summed in expert order, so it differs from the above by rounding only). Kept
// for tests and A/B benchmarks; a MoeSaved from one path must go to the same path's backward.
Tensor moe_forward_per_expert(const ModelConfig& config, const LayerTensors& w, const Tensor& xn,
                              MoeSaved* save);
Tensor moe_backward_per_expert(const ModelConfig& config, const LayerTensors& w, LayerTensors& g,
                               const Tensor& xn, const MoeSaved& s, const Tensor& dout);

}  // namespace gyre::model
