// Model internals: the Qwen3-MoE sparse block (HF Qwen3MoeSparseMoeBlock): router logits =
// mlp.gate(x) (no bias) → softmax in f32 → top-k → renormalised when norm_topk_prob →
// out = Σ_k w_k · expert_k(x), expert = down(silu(gate(x)) * up(x)). Tokens are grouped per expert
// (host-side bookkeeping over the routing indices) so each expert runs dense GEMMs over its rows.
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

}  // namespace gyre::model
