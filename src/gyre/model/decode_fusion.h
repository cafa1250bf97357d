// Process-wide switch for the fused ops of layer_forward's forwards that save nothing. The fused
// linears (backend/fused_linear_ops.h) — the input norm folded into q/k/v's grouped linear, the
// post-attention norm folded into gate/up with the SiLU·mul epilogue (the whole SwiGLU MLP with
// its residual as one op), o_proj/down_proj with the residual add in the epilogue (not under
// tensor parallelism, whose row-parallel o/down reduce before the bias and the residual) — run in
// every forward with nothing saved: the rollout engine's (an AttentionContext over the KV cache)
// and the scoring forward (no context: the trainer's old/ref log-probs, `gyre bench logprob`; also
// recompute's first pass). RoPE on q and k in one launch with the KV write
// (backend/fused_rope_ops.h) and the final norm folded into lm_head (CausalLM::forward, when the
// logits cover every row in order) need the context. The fused linears launch one kernel where the
// small-batch bf16 GEMV applies (the engine's decode on CUDA with a weight cache) and share the
// input cast / fold the residual past 8 rows (prefill, batch decode, scoring, with or without a
// weight cache); every fused op is bitwise equal to the unfused ops, so the switch changes
// launches, not numbers. On by default; off runs the unfused ops (A/B benchmarks, tests). The
// training forward that saves activations (save_for_backward, and recompute's second pass) always
// runs the unfused ops — it computes the same bits. A captured decode CUDA graph keeps the setting
// it was captured with: set the switch before an engine's first decode (the graphs drop themselves
// when it flips).
#pragma once

namespace gyre::model {

void set_decode_fusion(bool on);
bool decode_fusion();

}  // namespace gyre::model
