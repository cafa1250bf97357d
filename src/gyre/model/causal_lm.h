// CausalLM: the decoder-only language models (Llama, Qwen2, Qwen3, Qwen3-MoE) as one definition,
// forward AND hand-written backward over gyre::ops, numerically matching Hugging Face transformers'
// modeling code (LlamaForCausalLM & co.). One instance is shared by the trainer (forward with saved
// activations + backward) and the rollout engine (forward through an AttentionContext over its KV
// cache), so both see the same weights and the same kernels.
//
// Invariants:
// - Parameters are f32 tensors named exactly as in the HF checkpoint ("model.layers.3.mlp.
//   gate_proj.weight", MoE experts per expert); a tied lm_head is the embedding tensor, listed
//   once. All parameters live on one device (device(): CPU unless loaded with LoadOptions::device
//   or moved with to()); every activation, gradient and temporary a forward/backward allocates is
//   on that device. Batch tensors stay host-side (the model copies what an op needs); logits and
//   Gradients are on the model's device.
// - parameters() has a fixed order; Gradients holds one tensor per parameter in that same order
// with
//   the same names and shapes. backward() ACCUMULATES into Gradients (micro-batches add up);
//   callers zero them per optimizer step.
// - A Batch is packed: T tokens of B sequences, no padding; cu_seqlens delimits sequences.
// - forward() never mutates parameters; concurrent forwards on one instance are allowed (each
//   caller brings its own ForwardState). load_weights() must not run concurrently with forwards.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/attention_context.h"
#include "gyre/model/config.h"

namespace gyre::model {

class TpComm;     // model/tensor_parallel.h
struct TpLayout;  // model/tensor_parallel.h

// A packed batch: T tokens of B sequences, no padding.
struct Batch {
  Tensor ids;         // i32 [T]
  Tensor positions;   // i32 [T] position within its sequence (KV-cached decode: absolute position)
  Tensor cu_seqlens;  // i32 [B+1], cu_seqlens[0] = 0, cu_seqlens[B] = T
  // Packs sequences with positions 0..len-1. An empty list or an empty sequence is an Error naming
  // the sequence index.
  static Batch pack(const std::vector<std::vector<int32_t>>& seqs);
  int64_t num_tokens() const { return ids.defined() ? ids.numel() : 0; }
  int64_t num_seqs() const { return cu_seqlens.defined() ? cu_seqlens.numel() - 1 : 0; }
};

struct ForwardOptions {
  // null: causal attention within each sequence of the batch (training / scoring). Non-null: the
  // rollout engine's KV-cache attention (forward only; save_for_backward must be false).
  AttentionContext* attention = nullptr;
  // i32 [R]: compute logits only for these token rows (e.g. the last token of each sequence while
  // decoding); undefined = all T rows.
  Tensor logits_rows;
  // Keep what backward() needs in the ForwardState passed to forward().
  bool save_for_backward = false;
  // Tensor parallelism: all-gather the vocab-sharded logits so every rank gets [R, V] (the rollout
  // engine samples from them). No effect without TP; not with save_for_backward.
  bool gather_vocab = false;
  // Stop before lm_head: forward() returns its input, the final-norm hidden states [R or T, H]
  // (f32), instead of the logits, and backward_from_hidden() takes their gradient. Lets a caller
  // stream the vocabulary (ops::linear_token_logprobs; under tensor parallelism, where the lm_head
  // is vocab-sharded, tp_linear_token_logprobs over this rank's shard) instead of materialising
  // [T, V] logits. Not with gather_vocab.
  bool hidden_only = false;
  // Host copies of `batch` (the same values) for validation, so a device batch is not copied back:
  // required while a CUDA graph is being captured, where device-to-host copies are illegal.
  const Batch* host_batch = nullptr;
};

struct NamedTensor {
  std::string name;  // checkpoint name
  Tensor tensor;
};

// Activations saved by forward(save_for_backward = true) for backward(). Opaque; reusable (each
// forward replaces the previous contents); move-only.
class ForwardState {
 public:
  ForwardState();
  ~ForwardState();
  ForwardState(ForwardState&&) noexcept;
  ForwardState& operator=(ForwardState&&) noexcept;
  void clear();                // releases the saved activations
  bool ready() const;          // holds a forward that backward() can consume
  size_t saved_bytes() const;  // bytes of activations held (memory accounting / benchmarks)

  struct Impl;  // defined in model/forward_state.h (model internals only)
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Gradient-ready hook (data-parallel overlap: dist::DataParallelOptimizer starts reducing a
// bucket of gradients while the backward continues). A backward calls it with a range
// [begin, end) of parameters() indices whose gradients it will not touch again: final for this
// backward, and final for the optimizer step when this is the step's last micro-batch. Order: the
// final norm (with an untied lm_head, whose gradient precedes the model backward), then each
// layer from the last to the first, then the embedding (with a tied lm_head: only complete after
// the embedding backward, at the very end). Every index is reported exactly once per backward.
// It runs on the calling thread between the backward's kernel launches: it may enqueue GPU work
// but must not wait for the GPU.
using GradReadyHook = std::function<void(size_t begin, size_t end)>;

// dL/dθ, one f32 tensor per parameter, same order, names and shapes as CausalLM::parameters(), on
// the model's device.
struct Gradients {
  std::vector<NamedTensor> tensors;
  Tensor& at(const std::string& name);  // not_found Error naming the tensor
  const Tensor& at(const std::string& name) const;
  // Zeros every tensor; on the GPU deferred (Tensor::zero_deferred): the backward's first write of
  // a gradient overwrites it instead of accumulating into a memset.
  void zero();
  double sum_squares() const;  // Σ g² over all tensors, f64 (for gradient-norm clipping)
};

// Compute precision of forward/backward on the GPU. f32: exact against the CPU reference. bf16:
// mixed precision as torch.autocast(dtype=bfloat16) — GEMMs and attention take bf16-rounded
// operands with f32 accumulation (ops::Bf16Autocast); master weights, activations between ops,
// logits, log-probs, gradients and optimizer state stay f32. Ignored on the CPU.
enum class Precision { f32, bf16 };
const char* precision_name(Precision p);
// "f32" | "bf16"; anything else is an Error(invalid_argument) naming the value.
Precision parse_precision(const std::string& s);

struct LoadOptions {
  // Where the f32 parameters live (Device::cuda needs a CUDA build and a visible GPU).
  Device device = Device::cpu;
  Precision precision = Precision::f32;
  // Tensor parallelism over this group (model/tensor_parallel.h; dist::make_tp_comm adapts a
  // dist::Comm). null or size 1: no TP. Must outlive the model.
  TpComm* tp = nullptr;
};

class CausalLM {
 public:
  // Reads <dir>/config.json and the safetensors weights (single file or sharded; any float dtype
  // is converted to f32). A missing tensor, an unexpected tensor, a wrong shape or a non-float
  // dtype is an Error naming the tensor and the file.
  static std::unique_ptr<CausalLM> load(const std::string& dir, const LoadOptions& options = {});
  // Weights ~ N(0, stddev²) from Philox(seed); RMSNorm weights = 1, biases = 0 (HF _init_weights).
  // With `tp`, every rank draws the same full weights and keeps its shard (so TP=n starts from
  // exactly the single-process model).
  static std::unique_ptr<CausalLM> random_init(const ModelConfig& config, uint64_t seed,
                                               float stddev = 0.02f, TpComm* tp = nullptr);
  ~CausalLM();

  const ModelConfig& config() const { return config_; }
  // The device every parameter (and so every activation and gradient) lives on.
  Device device() const { return device_; }
  // Moves every parameter to `device` (no-op when already there). Parameter tensors get new
  // storage: views taken from parameters() before the move keep the old copies. Must not run
  // concurrently with forwards; ForwardStates and Gradients made before the move are rejected.
  void to(Device device);

  // Logits [R or T, V] (f32, on device()). Batch tensors and logits_rows may be on the host or on
  // device(). With save_for_backward, `state` receives the saved activations.
  // Errors: token id outside [0, vocab) (names sequence and position), malformed batch tensors.
  Tensor forward(const Batch& batch, const ForwardOptions& options, ForwardState* state = nullptr);
  // dlogits: [R or T, V] matching the forward's logits. Gradients accumulate into `grads` (from
  // zeros_like_parameters()). Consumes the state (it is cleared afterwards). `on_ready` (empty:
  // the model's set_grad_ready_hook(), if any) is told which gradients are final as the backward
  // proceeds (GradReadyHook).
  void backward(const Tensor& dlogits, ForwardState& state, Gradients& grads,
                const GradReadyHook& on_ready = {});
  // The same backward from dL/d(lm_head input) [R or T, H] (f32, on device()) of a forward run
  // with hidden_only: the caller has already back-propagated through lm_head (accumulating its
  // weight gradient into lm_head_grad(grads)). Under tensor parallelism dhidden is this rank's
  // partial (its vocabulary shard's contribution); the ranks' partials are summed here. Consumes
  // the state.
  void backward_from_hidden(const Tensor& dhidden, ForwardState& state, Gradients& grads,
                            const GradReadyHook& on_ready = {});
  // The hook every later backward calls when none is passed to it (for callers that reach the
  // backward through a helper, e.g. model::backward_from_logprobs); empty: none. Set it around the
  // last micro-batch of an optimizer step only. Not concurrently with a backward.
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_hook_ = std::move(hook); }
  // lm_head's weight [V, H] (tied models: the embedding) and its gradient tensor in `grads` (a view
  // sharing the storage; tied: the embedding's gradient). Under TP: this rank's vocab shard.
  const Tensor& lm_head_weight() const;
  Tensor lm_head_grad(Gradients& grads) const;

  std::vector<NamedTensor> parameters();  // {checkpoint name, tensor}; tied embedding once
  std::vector<NamedTensor> parameters() const;
  int64_t num_parameters() const;  // total element count
  Gradients zeros_like_parameters() const;

  // Writes an HF folder: config.json (the loaded one with dtype updated, or one generated from the
  // config) + model.safetensors (sharded past 5 GiB) in `dtype` (f32, bf16 or f16).
  void save(const std::string& dir, DType dtype) const;
  // Reloads weights in place from an HF folder with the same architecture (SGLang's
  // update_weights_from_disk); tensors keep their storage, so views held elsewhere see new values.
  void load_weights(const std::string& dir);

  // A count of the weight changes the model knows of: load_weights() and to() bump it, and so must
  // anyone else who writes parameters() in place (mark_weights_changed()) — except an optimizer
  // that rewrites the bf16 copies it updates (train::AdamW::set_bf16_copies). Holders of
  // derived state that outlives a call (rl::ActorTrainer's bf16 weight copies) compare it before
  // reuse: an unchanged count means the weights are the ones the state was made from.
  uint64_t weights_generation() const { return weights_generation_; }
  void mark_weights_changed() { ++weights_generation_; }

  // Activation recomputation: forward keeps only each layer's input; backward re-runs each layer's
  // forward before its backward. Gradients are identical to the non-recompute path.
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }

  // See Precision. A ForwardState keeps the precision of its forward; backward uses that one.
  void set_precision(Precision p) { precision_ = p; }
  // Builds (and caches on the model's device) the RoPE tables for positions [0, n) now, so that a
  // later forward allocates nothing for them (CUDA-graph capture bakes the tables' address in).
  void prepare_rope(int64_t n);
  Precision precision() const { return precision_; }

  // ---- Tensor parallelism (model/tensor_parallel.h). Under TP, parameters() and Gradients hold
  // this rank's shards, forward() returns the local vocab shard of the logits [R, V/tp] and
  // backward() takes dlogits of that shard; save() is collective (tp rank 0 writes the full model).
  // null without TP.
  const TpLayout* tensor_parallel() const { return tp_.get(); }
  // Full tensors from per-parameter local ones in parameters() order (the parameters or the
  // Gradients' tensors). Collective over the tp group; the list itself without TP.
  std::vector<NamedTensor> gather_full(const std::vector<NamedTensor>& local) const;
  // Σ g² of the full gradient (parameters() order): sharded tensors summed over the tp ranks,
  // replicated ones counted once; the same value on every rank. Collective under TP.
  double grad_sum_squares(const std::vector<Tensor>& grads) const;

  struct Weights;  // defined in model/weights.h (model internals only)

 private:
  explicit CausalLM(const ModelConfig& config);
  ModelConfig config_;
  std::string config_json_;  // original config.json text when loaded from disk (save() reuses it)
  std::string generation_config_json_;  // copied through by save() when present
  std::unique_ptr<Weights> w_;
  Device device_ = Device::cpu;
  uint64_t weights_generation_ = 0;
  bool recompute_ = false;
  Precision precision_ = Precision::f32;
  std::shared_ptr<const TpLayout> tp_;  // null without tensor parallelism
  void shard_for_tensor_parallel(TpComm* comm);
  // backward()'s checks of the state and the gradients (shared with backward_from_hidden).
  void check_backward(ForwardState& state, const Gradients& grads) const;
  // Everything below lm_head: from dL/d(head_in) [R, H] back to the embedding.
  void backward_below_head(Tensor dhead, ForwardState& state, Gradients& grads,
                           const GradReadyHook& on_ready);
  GradReadyHook grad_ready_hook_;  // set_grad_ready_hook
};

}  // namespace gyre::model
