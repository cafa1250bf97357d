// Whole-model workloads behind `gyre bench train|logprob|rollout` and the GPU bench binaries
// (bench/model_gpu.cc, bench/rollout_gpu.cc), over random token ids:
//   - training step: policy-gradient loss + backward + global-norm clip + AdamW over the f32
//     masters (the step of the issue-7 anchors);
//   - log-prob forward: per-token log-probs (optionally the entropy) of packed sequences, no saved
//     activations (the trainer's old-log-prob recompute, `gyre score`);
//   - rollout: infer::Engine generating for a batch of random prompts, driven inline.
//
// Invariants: every step function returns only after the device finished the step (each reads a
// value back to the host), so wall time around it is the step's time. Token ids are drawn by a
// fixed LCG from a seed: the same seed gives the same workload on every machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gyre/core/allocator.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/step_weight_copies.h"
#include "gyre/train/optimizer.h"

namespace gyre::bench {

// Dense bf16 tensor-core peak of one H200 (989 TFLOP/s): the MFU denominator of the issue-7
// anchors, used for every precision.
constexpr double kH200PeakFlops = 989e12;

// Throws Error(unsupported) naming the fix when `device` cannot run in this process: cuda in a
// build without the CUDA backend, or with no visible GPU.
void require_device(Device device);

// High-water mark of the bytes `device`'s allocator handed out since reset_peak_memory() (live
// tensors at the reset included: weights, optimizer state, KV cache).
void reset_peak_memory(Device device);
size_t peak_memory_bytes(Device device);
// Bytes of live tensors on `device` now (a peak minus this before a step = the step's extra
// memory).
size_t memory_in_use_bytes(Device device);

// `n` sequences of `len` ids in [0, vocab) (bench_model_gpu's generator: seed 12345 reproduces its
// token ids).
std::vector<std::vector<int32_t>> random_sequences(int64_t n, int64_t len, int64_t vocab,
                                                   uint32_t seed);

// Model FLOPs of one training step (forward + backward) over sequences of these lengths: 6 x
// params x tokens + causal attention (forward 4 x layers x heads x head_dim x len^2 / 2 per
// sequence, backward twice that) — the convention behind the MFU figures. The forward
// alone is a third of it.
double train_step_flops(const model::ModelConfig& cfg, int64_t params,
                        const std::vector<int64_t>& seq_lens);

// One training step per run(): zero the gradients, loss + gradients of the policy-gradient loss
// (prompt length 1, advantage 1) over all sequences as one packed micro-batch (the anchor's one
// forward), clip to norm 1 and AdamW (lr 1e-6). Like the RL trainer (not colocated), the forward
// and backward run with bf16 weight copies (model/step_weight_copies.h; bf16 on CUDA only) that
// AdamW rewrites in its update, so no pass casts a weight. Holds the gradients and the optimizer
// state for the model's lifetime.
class TrainStep {
 public:
  // micro_batch_tokens > 0: micro-batches of at most that many tokens instead (A/B runs; the
  // scoring path's logits cap, model/scoring.h, may split further). optimizer_writes_copies
  // false: the copies are dropped before each AdamW step and re-cast by the next step's passes,
  // as the data-parallel trainer does (bench_dp_train_gpu's one-GPU baseline).
  TrainStep(model::CausalLM& model, std::vector<std::vector<int32_t>> seqs,
            int64_t micro_batch_tokens = 0, bool optimizer_writes_copies = true);
  double run();  // the loss; synchronised (the optimizer reads the grad norm back)
  int64_t tokens() const { return tokens_; }

 private:
  model::CausalLM& model_;
  std::vector<std::vector<int32_t>> seqs_;
  std::vector<int32_t> prompt_lens_;
  std::vector<float> advantages_;
  model::Gradients grads_;
  train::AdamW opt_;
  model::StepWeightCopies copies_;  // as rl::ActorTrainer: one bf16 cast per weight and step
  train::NamedTensors params_, grad_list_;
  int64_t tokens_ = 0;
  int64_t micro_batch_tokens_ = 0;
  bool optimizer_writes_copies_ = true;
};

// One log-prob forward over all `seqs` as one packed batch (temperature 1); returns the first
// log-prob (a host value, so the device is synchronised).
double logprob_step(model::CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                    bool entropy);

// Runs `step` warmup times, then `steps` times under the clock; mean seconds per timed step.
double time_steps(const std::function<void()>& step, int steps, int warmup);

// ---- rollout

// `batch` requests of `prompt` random ids, temperature 1, ignore_eos, exactly `new_tokens` new
// tokens each, per-request seeds from `seed` (bench_rollout_gpu's generator).
std::vector<infer::GenerateRequest> random_requests(int64_t batch, int64_t prompt,
                                                    int64_t new_tokens, int64_t vocab,
                                                    uint32_t seed);
// An engine sized for `batch` concurrent requests of up to `max_len` tokens (pages 16, all of
// them resident at once) with a per-step token budget of max(chunk, batch + prompt).
infer::EngineConfig rollout_engine_config(int64_t batch, int64_t prompt, int64_t max_len,
                                          int64_t chunk = 8192);

struct RolloutRun {
  double seconds = 0;       // submit to the last step
  double first_step_s = 0;  // the first step (prefill; at batch 1 also the first sampled token)
  int64_t tokens = 0;       // output tokens sampled
  int64_t tokens_after_first = 0;
  bool complete = true;  // false: stopped at the budget (the rest aborted)
};
// Submits all, then drives the engine inline step by step until every request is done or
// `budget_s` has passed; at the budget it aborts the rest (their tokens so far are counted, the
// time up to the stop). A rejected request is an Error naming the engine's message.
RolloutRun drive(infer::Engine& engine, std::vector<infer::GenerateRequest> reqs,
                 double budget_s = std::numeric_limits<double>::infinity());

}  // namespace gyre::bench
