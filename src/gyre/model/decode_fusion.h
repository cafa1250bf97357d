// Process-wide switch for the fused decode ops in layer_forward's rollout path (an
// AttentionContext over the KV cache, no activations saved): the input norm folded into q/k/v's
// grouped linear, RoPE on q and k in one launch (backend/fused_rope_ops.h), the post-attention
// norm folded into gate/up with the SiLU·mul epilogue, the final norm folded into lm_head
// (CausalLM::forward, when the logits cover every row in order), and
// o_proj/down_proj with the residual add in the epilogue (backend/fused_linear_ops.h; not under
// tensor parallelism, whose row-parallel o/down reduce before the bias and the residual). The
// fused linears launch one kernel only where the small-batch bf16 GEMV applies (the engine's
// decode on CUDA); every fused op is bitwise equal to the unfused ops, so the switch changes
// launches, not numbers. On by default; off runs the unfused ops (A/B benchmarks, tests).
// Training and scoring (no context) never take the fused ops. A captured decode CUDA graph keeps
// the setting it was captured with: set the switch before an engine's first decode (the graphs
// drop themselves when it flips).
#pragma once

namespace gyre::model {

void set_decode_fusion(bool on);
bool decode_fusion();

}  // namespace gyre::model
