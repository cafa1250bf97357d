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
// saved tensor is f32, except (1) the dense MLP's gate/up (LayerSaved::gate / up, [T, I]), which
// are bf16 when the layer runs on CUDA under ops::Bf16Autocast (ops::swiglu_gate_up_dtype: half the
// saved-activation bytes of gate/up) and f32 otherwise — MoE experts' gate/up stay f32; (2) the
// normed inputs xn1 / xn2 of the q/k/v and gate/up linears, which are the GEMMs' bf16 operands
// where the fused linears run their shared-input GEMMs (CUDA, autocast, more than 8 rows, decode
// fusion on; xn2 only for the dense MLP without TP) — the bits linear_backward would round the f32
// rows to, so the gradients are unchanged; (3) with decode fusion on and no KV-cache context, the
// attention's operands q/k/v (rotated) — bf16 whenever the bf16 attention kernels run (CUDA,
// autocast, head dim 64/128), at any T — and its output attn, bf16 under those conditions past 8
// rows (ops::rope_attention_varlen: the values the kernels read and write); (4) act, the dense
// MLP's down_proj operand, kept (bf16) only by the fused MLP past 8 rows under autocast —
// undefined elsewhere (the backward recomputes it). Net saved bytes against the unfused forward
// under bf16, per token and layer: 2·H·2 + (2·Hq + 2·Hkv)·D·2 fewer, I·2 more (act).
Tensor layer_forward(const ModelConfig& config, int64_t layer, const LayerTensors& w,
                     const AttnInputs& a, const Tensor& x, LayerSaved* save);

// dout: ∂L/∂(layer output) [T, H]. Returns ∂L/∂(layer input); parameter gradients accumulate into
// g. dout_bf16 (optional) is dout rounded to bf16 (the previous layer_backward's dx_bf16): a
// bias-free down_proj backward takes it as its dy instead of rounding dout again. dx_bf16, when
// not null, receives the returned gradient rounded to bf16 where the fused norm backward writes one
// (CUDA, autocast, decode fusion on); it is left undefined otherwise.
Tensor layer_backward(const ModelConfig& config, const LayerTensors& w, LayerTensors& g,
                      const AttnInputs& a, const LayerSaved& s, const Tensor& dout,
                      const Tensor& dout_bf16 = Tensor(), Tensor* dx_bf16 = nullptr);

}  // namespace gyre::model
