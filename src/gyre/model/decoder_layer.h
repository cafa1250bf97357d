// Model internals: one decoder layer (pre-norm attention + pre-norm MLP or MoE block, each with a
// residual), forward and backward, exactly HF's LlamaDecoderLayer / Qwen2 / Qwen3 / Qwen3Moe
// layers:
//   h  = x + o_proj(Attn(rope(qk_norm(q_proj(n1(x)))), rope(qk_norm(k_proj(n1(x)))),
//   v_proj(n1(x)))) x' = h + MLP(n2(h)),  MLP = down(silu(gate(.)) * up(.))  or the MoE block
//   (moe_block.h).
#pragma once
#include "gyre/model/config.h"
#include "gyre/model/forward_state.h"
#include "gyre/model/weights.h"

namespace gyre::model {

// Returns the layer output [T, H]. `save` (may be null) receives what backward needs. Dtypes: every
// saved tensor is f32, except the dense MLP's gate/up (LayerSaved::gate / up, [T, I]), which are
// bf16 when the layer runs on CUDA under ops::Bf16Autocast (ops::swiglu_gate_up_dtype: half the
// saved-activation bytes of gate/up) and f32 otherwise; MoE experts' gate/up stay f32.
Tensor layer_forward(const ModelConfig& config, int64_t layer, const LayerTensors& w,
                     const AttnInputs& a, const Tensor& x, LayerSaved* save);

// dout: ∂L/∂(layer output) [T, H]. Returns ∂L/∂(layer input); parameter gradients accumulate into
// g.
Tensor layer_backward(const ModelConfig& config, const LayerTensors& w, LayerTensors& g,
                      const AttnInputs& a, const LayerSaved& s, const Tensor& dout);

}  // namespace gyre::model
