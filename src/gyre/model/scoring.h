// Scoring and the policy-gradient loss over CausalLM: what the trainer and `gyre score` / `gyre
// grad` build on. Definitions follow tests/fixtures/README.md (and slime's log-prob convention):
//   token_logprobs[j] = log p(ids[j+1] | ids[..j])   (L-1 entries per sequence)
//   entropy[j]        = -Σ_v p_v log p_v of the next-token distribution at position j (L entries)
// with p = softmax(logits / temperature).
//
// Packed layout used by the training helpers: row t of a packed batch predicts token t+1 of its
// sequence; the last row of each sequence has no target (target -1, log-prob 0, never in a loss).
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/model/causal_lm.h"

namespace gyre::model {

struct SequenceScores {
  std::vector<float> token_logprobs;  // [L-1]
  std::vector<float> entropy;         // [L] (empty when not requested)
};

// Scores sequences (packed into batches of at most `max_tokens_per_batch` tokens; a longer single
// sequence is its own batch). temperature > 0. Errors: empty sequence, id out of range.
std::vector<SequenceScores> score(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                                  float temperature = 1.0f, bool with_entropy = true,
                                  int64_t max_tokens_per_batch = 8192);

// Vocabulary chunk of the fused log-prob path. Scoring never builds the f32 [T, V] logits: the
// model stops at the lm_head input and ops::linear_token_logprobs streams the vocabulary in chunks
// (forward and backward), so the log-prob step adds one [T, C] chunk instead of [T, V] logits +
// [T, V] dlogits; under tensor parallelism tp_linear_token_logprobs streams this rank's shard the
// same way (V below: the shard's V/n). 0 (the default): ops::default_logprob_chunk(V) (<= V/16);
// > 0: that many vocabulary rows per chunk (tests); < 0: the unfused [T, V] (or [T, V/n]) logits
// path (the reference the tests compare against). Process-wide.
void set_logprob_vocab_chunk(int64_t chunk);
int64_t logprob_vocab_chunk();

// One packed forward kept for backward: per-row log-probs of the next token (and entropy). The
// batch is host-side; targets, logits, logp and entropy live on the model's device (copy logp to
// the host with .to(Device::cpu) to read it).
struct ScoredBatch {
  Batch batch;
  Tensor targets;  // i32 [T]: ids[t+1] within the sequence, -1 on each sequence's last row
  // f32 [T, V] on the unfused path (under tensor parallelism the local vocab shard [T, V/tp]);
  // undefined on the fused path (see set_logprob_vocab_chunk).
  Tensor logits;
  Tensor logp;     // f32 [T] (0 where target = -1)
  Tensor entropy;  // f32 [T] or undefined
  float temperature = 1.0f;
  ForwardState state;
  // Fused path only (what its backward recomputes each vocabulary chunk from):
  Tensor hidden;            // f32 [T, H] lm_head input (the ForwardState's saved copy)
  Tensor lse;               // f32 [T] log Σ_v exp(logits_v / temperature)
  Tensor row_entropy;       // f32 [T], always computed (`entropy` is this tensor when requested)
  int64_t vocab_chunk = 0;  // chunk width used
};
ScoredBatch score_for_training(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                               float temperature = 1.0f, bool with_entropy = false);
// Backpropagates dL/dlogp [T] (and optionally dL/dentropy [T], undefined = 0; either on the host or
// on the model's device) into `grads` (accumulating). Consumes the saved state.
void backward_from_logprobs(CausalLM& model, ScoredBatch& scored, const Tensor& dlogp,
                            const Tensor& dentropy, Gradients& grads);

// Forward, log-probs (temperature 1) and backward of a packed batch in one call, for a loss whose
// gradient dL/dlogp [T] (f32, host or device) is known before the forward — it must not depend on
// the log-probs (SFT / cross-entropy, or the policy-gradient loss below at ratio 1). Gradients
// accumulate into `grads`; returns logp [T] on the model's device (0 on each sequence's last row).
// The head runs ops::linear_token_logprobs_with_grad: on the GPU under bf16 autocast each logits
// chunk is computed once (the two-pass head recomputes them in its backward), elsewhere the
// composition of score_for_training's head and backward_from_logprobs's. Not under tensor
// parallelism (an error).
Tensor logprobs_with_known_gradient(CausalLM& model, const Batch& batch, const Tensor& dlogp,
                                    Gradients& grads);

// The fixture loss L = −(1/N) Σ_i Σ_{t ≥ P_i} A_i · log p(ids_i[t] | ids_i[<t]),
// N = Σ_i (len_i − P_i) — the policy-gradient loss at ratio 1. Gradients accumulate into `grads`;
// returns L. Errors name the sequence: prompt_len < 1 or > len, size mismatches, N = 0.
// Sequences run in packed micro-batches of at most `max_tokens_per_batch` tokens (as score(); a
// longer single sequence is its own micro-batch), each forward + backward before the next; the
// gradients sum over micro-batches, so only activation memory and speed depend on it.
double policy_gradient_loss_and_grad(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                                     const std::vector<int32_t>& prompt_lens,
                                     const std::vector<float>& advantages, Gradients& grads,
                                     int64_t max_tokens_per_batch = 8192);

struct LossAndGrad {
  double loss = 0.0;
  Gradients grads;
};
LossAndGrad policy_gradient_loss_and_grad(CausalLM& model,
                                          const std::vector<std::vector<int32_t>>& seqs,
                                          const std::vector<int32_t>& prompt_lens,
                                          const std::vector<float>& advantages);

}  // namespace gyre::model
