// gyre::ops — the operations models are written in, forward and backward. Models call these and
// nothing below them; each op checks shapes/dtypes (GYRE_CHECK) and dispatches on the tensors'
// device to the backend kernels (backend/cpu/*, backend/cuda/*), which are plain functions over raw
// pointers.
//
// Conventions (all ops):
// - Activations and parameters are f32 on the CPU backend (the reference; f32 accumulate).
// - Token-major layouts: a packed batch of T tokens is [T, ...]; sequences are delimited by
//   cu_seqlens (i32 [B+1], cu_seqlens[0] = 0, cu_seqlens[B] = T); no padding anywhere.
// - Outputs are written (overwritten) unless a parameter says it accumulates; parameter gradients
//   ALWAYS accumulate (+=) so micro-batches add up without extra copies. Callers zero them per
//   step.
// - Index tensors are i32.
// - CPU backend specifics (backend/cpu): the float tensors of one call may instead all be f64 (the
//   finite-difference tests use this); an undefined tensor an op would overwrite is allocated by
//   the op, an undefined gradient it would accumulate into (dw, db, dtable) is skipped;
//   token_logprobs' entropy covers every row, negative targets included. Results are bitwise
//   independent of the number of threads.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"

namespace gyre::ops {

// ---- bf16 autocast
// --------------------------------------------------------------------------------
// PyTorch's torch.autocast(device_type="cuda", dtype=torch.bfloat16) policy for the CUDA backend.
// While a Bf16Autocast(true) scope is alive on the calling thread, linear / linear_backward and
// attention_varlen / attention_varlen_backward over f32 CUDA tensors round their operands to bf16
// and run the tensor-core kernels (cuBLASLt bf16 GEMM, f32 accumulate; FlashAttention-2 bf16 when
// the head dim is 64 or 128, else the f32 kernel), writing f32 results; parameter gradients still
// accumulate into f32 tensors. One exception, the dense SwiGLU MLP's gate/up (PyTorch's autocast
// returns bf16 from every linear): a linear into a bf16 y writes the f32 result rounded once to
// bf16, and silu_mul / silu_mul_backward read bf16 gate/up (math in f32) — the model allocates
// gate/up bf16 exactly when ops::swiglu_gate_up_dtype (fused_linear_ops.h) says so. Every other op
// stays f32. CPU tensors ignore the scope (the CPU
// backend is the f32 reference). Error bound of a product over K terms: ~2^-8 Σ|a_k||b_k|
// (backend/cuda/autocast.cc). Scopes nest; the innermost decides; forward and backward of one
// activation must run under the same setting (the attention backward reads the forward's lse).
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool on = true);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool previous_;
};
// Whether a Bf16Autocast(true) scope is the innermost on this thread.
bool bf16_autocast();

// ---- bf16 copies of weights that outlive many forwards
// Under Bf16Autocast a linear rounds its f32 weight to bf16 on every call: 6 bytes of traffic per
// parameter before the GEMM reads 2 more. The rollout engine runs the same weights for many decode
// steps, so it keeps one bf16 copy per weight in a Bf16WeightCache and installs it with
// UseBf16WeightCache around its forwards: an autocast linear over a CUDA weight then looks the
// weight up by storage (first byte, element count) and converts it only on a miss. The numbers are
// identical to the uncached path (the same round-to-nearest-even of the same f32 values).
//
// Each copy keeps its source (a Tensor handle): the f32 storage cannot be freed and its address
// reused by another tensor while the copy exists. When the weights change IN PLACE (same storage,
// new values: a colocated train step, a reload from disk into the same tensors) refresh() re-casts
// every copy into its own buffer, so addresses handed out stay valid — CUDA graphs that captured
// them (infer/decode_graph.h) keep working with the new values. A writer may instead write the
// copies itself next to its f32 update (the colocated trainer's AdamW: copy_to_write(), then
// copies_written()); the cache is then *fresh* and the next sync needs no re-cast (take_fresh()).
//
// Invariants (the owner's duty): after the weights change, no forward runs before clear(),
// refresh() or a take_fresh() that returned true. Engine::update_weights, the version bump every
// weight sync goes through, does exactly one of them (clear() when the parameters were replaced by
// new storage). The fresh mark is the writer's promise that every copy equals the cast of its
// source's current value: a writer that changes a source afterwards calls mark_stale() first
// (AdamW::step does before its update), and take_fresh() consumes the mark, so a mark is trusted
// for one sync only. CPU tensors ignore the cache. The lookup table is guarded by a mutex (the
// trainer's thread asks for copies to write while the engine's thread owns the cache); the copies'
// contents are ordered by CUDA streams (every thread has its own): work on another thread's stream
// is ordered before the next reader by a StreamFence (Engine::update_weights places one).
class Bf16WeightCache {
 public:
  Bf16WeightCache();
  ~Bf16WeightCache();
  Bf16WeightCache(const Bf16WeightCache&) = delete;
  Bf16WeightCache& operator=(const Bf16WeightCache&) = delete;
  void clear();            // drops every copy (and the sources they keep alive)
  size_t bytes() const;    // device bytes held by the copies
  size_t entries() const;  // weights cached
  // Counts clear()s: copies handed out before a clear() are gone, so whoever baked their
  // addresses in (a captured CUDA graph) compares generations before using them again.
  uint64_t generation() const;
  // The bf16 copy of the f32 CUDA tensor w (converted now if missing); valid until clear().
  const uint16_t* bf16(const Tensor& w);
  // How many bf16() calls so far found their copy already there (never reset).
  uint64_t hits() const;
  // The copies of two f32 CUDA weights a and b (distinct, one element count each) side by side in
  // one buffer: bf16(b) == bf16(a) + a.numel(). Converts both now when neither has a copy yet;
  // returns the shared start (bf16(a)) when they are adjacent, null when either was already
  // copied on its own (the copies stay where they are: addresses handed out never move). A GEMM
  // over both weights stacked [Na + Nb, K] (the SwiGLU backward's one dX GEMM over dgate | dup,
  // ops::swiglu_gate_up_backward) reads them in place instead of copying them into scratch. The
  // callers that know the pair (the gate/up ops) ask before their first bf16() lookup.
  const uint16_t* bf16_pair(const Tensor& a, const Tensor& b);

  // ---- weights changed in place
  // Re-casts every copy from its source into the same buffer: one launch on the calling thread's
  // stream (multi-tensor f32 -> bf16, bitwise what bf16() makes of the current values), no host
  // synchronisation. Also drops the fresh mark.
  void refresh();
  // Whether every copy's source is one of `params` (the same storage, first byte and element
  // count), i.e. refresh() would re-cast exactly the tensors the model computes with.
  bool sources_within(const std::vector<Tensor>& params) const;

  // ---- a writer that writes the copies itself
  // The copy of w to overwrite with bf16(w's new values), or null when w (an f32 CUDA tensor; any
  // other gives null) has none. Never converts. Valid until clear().
  uint16_t* copy_to_write(const Tensor& w);
  // After the writer enqueued bf16(new value) into copy_to_write(s) for every s of `sources` (on
  // its stream): the cache is fresh when every copy's source is among them, else not fresh.
  void copies_written(const std::vector<const Tensor*>& sources);
  void mark_stale();  // a source is about to change outside copies_written()
  // Whether the copies were marked fresh since the last take (then no refresh is needed); clears
  // the mark.
  bool take_fresh();

 private:
  struct Impl;
  Impl* impl_;
};
// Orders device work across threads (each has its own stream): record() on the thread that
// enqueued the work (it captures that thread's stream so far); wait() on another thread makes its
// stream's later work wait for it on the device, never on the host. No-op for work that is
// already ordered (the same thread) and in builds or processes without CUDA.
class StreamFence {
 public:
  StreamFence();
  ~StreamFence();
  StreamFence(const StreamFence&) = delete;
  StreamFence& operator=(const StreamFence&) = delete;
  void record();
  void wait() const;

 private:
  void* event_ = nullptr;         // cudaEvent_t
  const void* stream_ = nullptr;  // the recording thread's stream
};
// Reads a device tensor back to the host without waiting for the rest of the stream: start()
// enqueues a copy into page-locked host memory on this thread's stream (ordered after the work
// enqueued so far) and records an event; wait() blocks on that event only, so work enqueued after
// start() (the next decode step) keeps the GPU busy while the host reads the bytes. The engine's
// decode look-ahead (infer/engine_look_ahead.cc) reads each step's sampled tokens this way. The
// host bytes stay valid until the next start(). A CPU tensor is copied at start(). Not copyable.
class AsyncReadback {
 public:
  AsyncReadback() = default;
  ~AsyncReadback();
  AsyncReadback(const AsyncReadback&) = delete;
  AsyncReadback& operator=(const AsyncReadback&) = delete;
  void start(const Tensor& src);
  // The bytes of the last start()'s tensor (its nbytes()), once the copy finished.
  const void* wait();
  size_t bytes() const { return bytes_; }

 private:
  void* host_ = nullptr;  // page-locked (CUDA) or malloc'd (a CPU source) buffer
  size_t capacity_ = 0, bytes_ = 0;
  bool pinned_ = false;
  void* event_ = nullptr;  // cudaEvent_t; null: nothing to wait for
  bool pending_ = false;
};

// Installs `cache` (may be null: none) for autocast linears on this thread; scopes nest (LIFO).
class UseBf16WeightCache {
 public:
  explicit UseBf16WeightCache(Bf16WeightCache* cache);
  ~UseBf16WeightCache();
  UseBf16WeightCache(const UseBf16WeightCache&) = delete;
  UseBf16WeightCache& operator=(const UseBf16WeightCache&) = delete;

 private:
  Bf16WeightCache* previous_;
};
// The innermost installed cache on this thread, or null.
Bf16WeightCache* bf16_weight_cache();

// ---- CUDA graphs (backend/cuda/graph.h)
// Records everything `body` launches on the calling thread's stream once, then replays it with one
// launch. The body must read and write only buffers whose addresses stay fixed (the caller
// refreshes input contents before replay()), must not synchronise the host, and runs twice during
// capture() (an eager warm-up, then the recorded run). Its temporaries live in the graph's private
// memory. Builds without CUDA throw Error(unsupported) from capture().
class DeviceGraph {
 public:
  DeviceGraph();
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;
  void capture(const std::function<void()>& body);
  void replay();
  bool captured() const;
  size_t memory_bytes() const;  // the graph's private pool

 private:
  struct Impl;
  Impl* impl_;
};

// ---- index data the caller has already validated
// Ops that index by data (embedding's ids, rope_'s positions, attention's cu_seqlens, gather_rows'
// rows, the paged ops' slot/page arrays) check every index before a kernel reads it. For a CUDA
// tensor that check copies the indices to the host and synchronises the GPU on every call — once
// per layer. A caller that has already checked the values on the host (CausalLM validates its Batch
// once per forward, the rollout engine its paged layout once per step) records what it proved in a
// KnownIndices scope; an op finds the tensor there (same storage bytes, numel, device) and skips
// the host copy when the recorded facts imply its own check. Invariant (the caller's promise): a
// registered tensor is not written while the scope lives. Scopes nest per thread (LIFO, like
// Bf16Autocast); entries die with their scope.
class KnownIndices {
 public:
  KnownIndices();
  ~KnownIndices();
  KnownIndices(const KnownIndices&) = delete;
  KnownIndices& operator=(const KnownIndices&) = delete;

  // Every value of the i32 tensor t lies in [lo, hi).
  void add_range(const Tensor& t, int64_t lo, int64_t hi);
  // t (i32 [B+1]) holds offsets: t[0] = 0, non-decreasing, t[B] = total; longest segment max_len.
  void add_offsets(const Tensor& t, int64_t total, int64_t max_len);
  // t's values are exactly host's (an i32 CPU tensor of t's size that outlives the scope, e.g. the
  // host batch a device batch was copied from): ops that need the indices on the host (the CUDA
  // embedding backward groups rows by id there) read host instead of copying t back, which
  // would synchronise the GPU.
  void add_host_values(const Tensor& t, const Tensor& host);
  // The index arrays of one paged-attention call passed validate_paged_layout (paged_ops.h)
  // against a cache of num_pages pages of page_size slots; max_q_len / max_kv_len over the batch.
  void add_paged_layout(const Tensor& cu_seqlens_q, const Tensor& kv_lens,
                        const Tensor& page_indptr, const Tensor& page_indices, int64_t num_pages,
                        int64_t page_size, int64_t max_q_len, int64_t max_kv_len);

  struct Entry {
    enum Kind { range, offsets, paged, host_values } kind;
    const void* data;  // identity of the tensor: first byte, element count, device
    int64_t numel;
    Device device;
    int64_t lo = 0, hi = 0;          // range
    int64_t total = 0, max_len = 0;  // offsets; paged: max_kv_len in max_len, max_q_len in total
    const void* companions[3] = {};  // paged: kv_lens, page_indptr, page_indices data
    int64_t num_pages = 0, page_size = 0, num_page_indices = 0;  // paged
    const int32_t* host = nullptr;                               // host_values
  };
  // The innermost entry of this kind recorded for t on this thread, or null.
  static const Entry* find(const Tensor& t, Entry::Kind kind);

 private:
  std::vector<Entry> entries_;
  KnownIndices* outer_;
};

// ---- op profiler
// With GYRE_OP_PROFILE set in the environment, every op on a CUDA-capable process is bracketed by
// CUDA events on its thread's stream (outermost op only); op_profile_report() synchronises, sums
// the GPU time per op name since the last report, and returns a table (op, calls, GPU ms, share).
// The time between two events includes any idle gap before the op's kernels (host launch
// overhead), so the shares add up to the time the ops were in flight. Off: no cost but one branch.
bool op_profile_enabled();
std::string op_profile_report();

// ---- dense algebra
// ------------------------------------------------------------------------------- Raw row-major
// GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, op = transpose when the flag is set. A is [M,K]
// (or [K,M] when trans_a), B is [K,N] (or [N,K] when trans_b). f32 accumulate.
void gemm(Device device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

// y[M,N] = x[M,K] · w[N,K]^T + b[N]   (torch.nn.Linear layout; b may be undefined)
// y may be bf16 on CUDA under Bf16Autocast (f32 w, b): the f32-accumulated x·wᵀ + b rounded
// once to bf16 (round to nearest even). x may be bf16 there too (the attention output of
// ops::rope_attention_varlen, rope_attention_ops.h): bitwise linear on the f32 tensor holding the
// same values (the autocast GEMM reads x instead of rounding an f32 copy; up to 8 rows x is
// widened to f32 for the GEMV). A bf16 x or y anywhere else: Error(invalid_argument).
void linear(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y);
// dx[M,K] = dy · w (or += when accumulate_dx); dw[N,K] += dy^T · x; db[N] += Σ_rows dy.
// Any of dx/dw/db may be undefined (not computed). On CUDA under Bf16Autocast dy and x may be bf16
// (their producers' rounding; dy only without db, which sums the f32 dy), and dx may be bf16
// without accumulate_dx: the f32-accumulated dy·w rounded once (the next op's bf16 operand, as
// PyTorch autocast's bf16 linear outputs).
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                     Tensor& db, bool accumulate_dx = false);

// ---- elementwise
// ---------------------------------------------------------------------------------
void add(const Tensor& a, const Tensor& b, Tensor& out);  // out = a + b (out may alias a or b)
void add_(Tensor& a, const Tensor& b);                    // a += b
void scale_(Tensor& a, float s);                          // a *= s
void copy(const Tensor& src, Tensor& dst);                // same shape, same device
double sum_squares(const Tensor& a);                      // Σ a² in f64 (gradient norms)

// ---- embedding
// ----------------------------------------------------------------------------------- out[T,H] =
// table[ids[t]]; an id outside [0, V) throws Error(invalid_argument) naming id and position.
void embedding(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward(const Tensor& ids, const Tensor& dout,
                        Tensor& dtable);  // dtable += scatter

// ---- RMSNorm (HF LlamaRMSNorm: y = x * rsqrt(mean(x²) + eps) * w, in f32)
// ------------------------- x,y: [R, H] (any leading shape flattened to rows; H = w.numel()); rstd:
// [R] saved for backward.
void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
// dx = ∂L/∂x (overwrite); dw += ∂L/∂w.
void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       Tensor& dx, Tensor& dw);

// ---- rotary position embedding (HF rotate_half convention)
// ---------------------------------------- x: [T, H, D] rotated in place; positions: i32 [T]; cos,
// sin: [P, D/2] tables (already including any attention scaling such as YaRN's mscale). For pair i
// in [0, D/2):
//   x'[i]       = x[i] cos - x[i + D/2] sin
//   x'[i + D/2] = x[i + D/2] cos + x[i] sin
// inverse = true applies the transposed rotation (sin -> -sin): that is the backward of the
// forward.
void rope_(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
           bool inverse = false);

// ---- SwiGLU
// -------------------------------------------------------------------------------------- out =
// silu(gate) * up, all [T, I]. On CUDA gate and up may both be bf16 (the autocast MLP's
// pre-activations; with no autocast requirement, so a backward reads its forward's saved gate/up
// whatever the scope): converted to f32 exactly, the f32 op's arithmetic, f32 out / dout / dgate /
// dup — bitwise the f32 op on the converted values. The backward may also write bf16 dgate/dup
// (each f32 value rounded once) and then read a bf16 dout (widened exactly). bf16 on the CPU, or
// only one of gate/up bf16: Error(invalid_argument).
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);
void silu_mul_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup);

// ---- causal GQA attention over packed variable-length sequences
// ------------------------------------ q: [T, Hq, D], k, v: [T, Hkv, D] with Hq % Hkv == 0 (query
// head h uses kv head h / (Hq/Hkv)); cu_seqlens: i32 [B+1]; token i of a sequence attends to tokens
// 0..i of the same sequence. out: [T, Hq, D]; lse: [T, Hq] log-sum-exp of the scaled scores (saved
// for backward).
void attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                      float scale, Tensor& out, Tensor& lse);
// dq, dk, dv overwritten.
void attention_varlen_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& cu_seqlens, float scale, Tensor& dq, Tensor& dk,
                               Tensor& dv);

// ---- softmax family
// ------------------------------------------------------------------------------
void softmax_rows(const Tensor& x, Tensor& out);      // [R, C], numerically stable, f32
void log_softmax_rows(const Tensor& x, Tensor& out);  // [R, C]

// Per-token log-prob of the target and entropy of the next-token distribution, from logits [T, V]
// at temperature τ (z = logits / τ; p = softmax(z)):
//   logp[t] = log p[targets[t]]   (targets i32 [T]; a negative target writes 0 and is skipped)
//   entropy[t] = -Σ_j p_j log p_j (entropy may be undefined = not computed)
void token_logprobs(const Tensor& logits, const Tensor& targets, float temperature, Tensor& logp,
                    Tensor& entropy);
// dlogits[t, j] = (1/τ) [ dlogp[t] (1[j = target] - p_j) - dentropy[t] p_j (log p_j + H_t) ]
// (dentropy may be undefined = zero). dlogits overwritten.
void token_logprobs_backward(const Tensor& logits, const Tensor& targets, float temperature,
                             const Tensor& dlogp, const Tensor& dentropy, Tensor& dlogits);

// ---- mixture of experts (Qwen3-MoE / Mixtral style router)
// ----------------------------------------- probs = softmax(router_logits [T, E]) in f32; indices
// i32 [T, k] = top-k experts (ties -> lower index first, as torch.topk); weights [T, k] = their
// probs, divided by their sum when norm_topk.
void moe_route(const Tensor& router_logits, int64_t k, bool norm_topk, Tensor& probs,
               Tensor& indices, Tensor& weights);
// dweights [T, k] -> drouter_logits [T, E] (overwrite), through the renormalisation and softmax.
void moe_route_backward(const Tensor& dweights, const Tensor& probs, const Tensor& indices,
                        bool norm_topk, Tensor& drouter_logits);
// out[i] = src[idx[i]] (rows); src [R, H], idx i32 [n], out [n, H].
void gather_rows(const Tensor& src, const Tensor& idx, Tensor& out);
// out[idx[i]] += scale[i] * src[i] (scale f32 [n] or undefined = 1); src [n, H], out [R, H].
void scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& scale, Tensor& out);
// out[i] = <a[i], b[i]>, a, b: [n, H], out [n].
void row_dot(const Tensor& a, const Tensor& b, Tensor& out);

// ---- sampling on the device
// One token per row of logits [R, V] (CUDA tensors): temperature f32 [R] (<= 0: greedy), seeds
// i64 [R] (Philox keys, bit pattern of uint64), steps i64 [R] (draw counters = tokens generated so
// far), min_p shared by all rows; tokens i32 [R] (written). Draws the numbers the CPU sampler
// (infer/sampler.h) draws for the same seed and step, over the whole vocabulary in id order
// (no top-k / top-p / penalties: callers keep those on the CPU sampler). CPU tensors: Error.
void sample_tokens(const Tensor& logits, const Tensor& temperature, const Tensor& seeds,
                   const Tensor& steps, float min_p, Tensor& tokens);

// ---- optimizer
// -----------------------------------------------------------------------------------
struct AdamWParams {
  float lr = 1e-6f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;  // 1-based step count used for bias correction
  // The update reads g = grad · grad_scale (one f32 multiply, rounded to nearest) instead of grad,
  // and leaves the gradient tensor as it was: bitwise scale_(grad, grad_scale) before the step
  // (the global-norm clip folded into the optimizer's pass). 1 reads grad as it is.
  float grad_scale = 1.0f;
};
// PyTorch AdamW (decoupled decay): p -= lr·wd·p; m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²;
// p -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps). param, m, v f32; grad f32.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p);

}  // namespace gyre::ops

// ---- vocabulary-chunked log-probs ("cut cross-entropy"; backend/logprob_chunk_ops.cc) -----------
// token_logprobs over logits = h · W^T without ever holding the [T, V] logits: the vocabulary is
// streamed in chunks of rows of W, each chunk's [T, C] logits folded into per-row online softmax
// statistics, and the backward recomputes each chunk. Same contract as token_logprobs (z = logits
// / τ; a negative target writes logp 0 and gets no gradient; entropy covers every row).
namespace gyre::ops {
// Row statistics of z = logits_chunk / τ, where logits_chunk [T, C] holds vocabulary columns
// [v0, v0 + C). stats [T, 4] (the logits' dtype): m = max z, s = Σ exp(z - m),
// w = Σ exp(z - m) (z - m) (kept relative to m so the entropy does not cancel), and z of the target
// when targets[t] falls in the chunk. accumulate = false overwrites stats with this chunk's;
// true folds this chunk into them (rescaling to the larger max). Targets outside the chunk are
// ignored here (linear_token_logprobs checks them against V).
void logprob_chunk_stats(const Tensor& logits_chunk, const Tensor& targets, int64_t v0,
                         float temperature, bool accumulate, Tensor& stats);
// From the folded stats: logp[t] = z_target - lse (0 for a negative target), lse[t] = m + log s,
// entropy[t] = log s - w / s. entropy and lse may be undefined (not written).
void logprob_chunk_finish(const Tensor& stats, const Tensor& targets, Tensor& logp, Tensor& entropy,
                          Tensor& lse);
// dlogits_chunk[t, j] = (1/τ) [dlogp (1[v0 + j = target] - p_j) - dentropy p_j (log p_j + H)] with
// log p_j = z_j - lse[t], H = entropy[t] (token_logprobs_backward restricted to the chunk).
// dentropy may be undefined (= 0); entropy is needed when it is not. dlogits_chunk may be
// logits_chunk itself (computed in place).
void logprob_chunk_backward(const Tensor& logits_chunk, const Tensor& targets, int64_t v0,
                            float temperature, const Tensor& lse, const Tensor& entropy,
                            const Tensor& dlogp, const Tensor& dentropy, Tensor& dlogits_chunk);

// Vocabulary chunk width for V columns: the largest multiple of 128 <= V / 16 (at least 128,
// at most V), so one [T, C] f32 chunk is <= 1/16 of the [T, V] logits (the backward computes dz
// in place of the chunk, so the chunk is all the [T, *] memory these ops add).
int64_t default_logprob_chunk(int64_t V);
// token_logprobs(h · w^T, targets, τ) for h [T, H], w [V, H], streaming `chunk` rows of w at a time
// (chunk <= 0: default_logprob_chunk(V)). Each chunk's logits come from ops::linear, so bf16
// autocast and the bf16 weight cache apply as for a full lm_head. logp [T] and lse [T] (saved for
// the backward) are written; entropy [T] when defined (or allocate it to get it). Errors: target
// >= V (names the position), temperature <= 0.
void linear_token_logprobs(const Tensor& h, const Tensor& w, const Tensor& targets,
                           float temperature, int64_t chunk, Tensor& logp, Tensor& entropy,
                           Tensor& lse);
// Backward of linear_token_logprobs (same h, w, targets, τ, chunk; lse and entropy from its
// forward; entropy needed when dentropy is defined): dh [T, H] overwritten, dw [V, H] += (may be
// undefined: skipped). Recomputes each chunk's logits; the dz chunk overwrites them in place.
void linear_token_logprobs_backward(const Tensor& h, const Tensor& w, const Tensor& targets,
                                    float temperature, int64_t chunk, const Tensor& lse,
                                    const Tensor& entropy, const Tensor& dlogp,
                                    const Tensor& dentropy, Tensor& dh, Tensor& dw);
// Both at once, for a loss whose gradient is known before the forward (dlogp [T], dentropy [T] or
// undefined; they must not depend on logp — an SFT / cross-entropy loss): logp, lse [T] and
// entropy [T] (when defined) as linear_token_logprobs writes them, dh [T, H] overwritten and dw
// [V, H] += (undefined: skipped) as linear_token_logprobs_backward with those gradients. Everywhere
// but CUDA under Bf16Autocast it is exactly that composition (default chunk; bitwise). On CUDA
// under autocast it streams TOKEN chunks over the whole vocabulary and computes each chunk's logits
// once (cuda::linear_token_logprobs_with_grad_autocast: one GEMM of the two-pass head's four less;
// the numbers agree with the composition's to ~1e-6 in logp and to dz's bf16 rounding in dh / dw).
void linear_token_logprobs_with_grad(const Tensor& h, const Tensor& w, const Tensor& targets,
                                     float temperature, const Tensor& dlogp, const Tensor& dentropy,
                                     Tensor& logp, Tensor& entropy, Tensor& lse, Tensor& dh,
                                     Tensor& dw);
}  // namespace gyre::ops

// ---- paged KV cache (rollout engine; implemented in backend/paged_ops.cc, layout in
// backend/cpu/paged_attention.h) ------------------------------------------------------------------
namespace gyre::ops {
// Caches are f32, or bf16 on a CUDA device (head dim 64/128: new K/V are rounded to bf16 when
// written, attention reads bf16 K/V and computes in f32; paged_ops.h, backend/cuda/paged_bf16.h).
// k_cache/v_cache [P, page_size, Hkv, D] rows slot_mapping[t] (i32 [T], page * page_size + offset,
// negative = skip) <- k[t], v[t] ([T, Hkv, D]).
void paged_kv_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping, Tensor& k_cache,
                    Tensor& v_cache);
// Causal GQA attention of the packed new queries q [T, Hq, D] (cu_seqlens_q i32 [B+1]) over each
// sequence's paged keys/values: kv_lens i32 [B] (cached prefix + new tokens), pages of sequence b
// = page_indices[page_indptr[b] .. page_indptr[b+1]) (CSR, i32). out [T, Hq, D].
void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                     const Tensor& cu_seqlens_q, const Tensor& kv_lens, const Tensor& page_indptr,
                     const Tensor& page_indices, float scale, Tensor& out);
}  // namespace gyre::ops
