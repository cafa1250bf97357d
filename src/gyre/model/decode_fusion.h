// Process-wide switch for the fused ops of layer_forward and layer_backward (whose RMSNorm
// backwards then add the residual in the same pass and hand bf16 dy to o_proj / down_proj, and
// whose attention backward takes the forward's bf16 operands). The fused linears
// (backend/fused_linear_ops.h) — the input norm folded into q/k/v's grouped linear, the
// post-attention norm folded into gate/up with the SiLU·mul epilogue (the whole SwiGLU MLP with
// its residual as one op), o_proj/down_proj with the residual add in the epilogue (not under
// tensor parallelism, whose row-parallel o/down reduce before the bias and the residual) — run in
// every forward: the rollout engine's (an AttentionContext over the KV cache), the scoring forward
// (no context: the trainer's old/ref log-probs, `gyre bench logprob`) and the training forward
// that saves activations (save_for_backward, recompute's two passes), which the fused ops hand
// what the backward reads (the GEMMs' bf16 input operands, rstd, gate/up; a saving forward under
// tensor parallelism runs the unfused MLP). RoPE on q and k in one launch with the KV write
// (backend/fused_rope_ops.h) and the final norm folded into lm_head (CausalLM::forward, when the
// logits cover every row in order) need the context. The fused linears launch one kernel where the
// small-batch bf16 GEMV applies (the engine's decode on CUDA with a weight cache) and share the
// input cast / fold the residual past 8 rows (prefill, batch decode, scoring, with or without a
// weight cache); every fused op is bitwise equal to the unfused ops, so the switch changes
// launches, not numbers (gradients included: a bf16 saved operand holds the bits linear_backward
// would round the f32 rows to). On by default; off runs the unfused ops (A/B benchmarks, tests).
// A captured decode CUDA graph keeps the setting it was captured with: set the switch before an
// engine's first decode (the graphs drop themselves when it flips).
#pragma once

namespace gyre::model {

void set_decode_fusion(bool on);
bool decode_fusion();

}  // namespace gyre::model
