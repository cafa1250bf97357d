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
#include <string>

#include "gyre/core/tensor.h"

namespace gyre::ops {

// ---- bf16 autocast
// --------------------------------------------------------------------------------
// PyTorch's torch.autocast(device_type="cuda", dtype=torch.bfloat16) policy for the CUDA backend.
// While a Bf16Autocast(true) scope is alive on the calling thread, linear / linear_backward and
// attention_varlen / attention_varlen_backward over f32 CUDA tensors round their operands to bf16
// and run the tensor-core kernels (cuBLASLt bf16 GEMM, f32 accumulate; FlashAttention-2 bf16 when
// the head dim is 64 or 128, else the f32 kernel), writing f32 results; parameter gradients still
// accumulate into f32 tensors. Every other op stays f32. CPU tensors ignore the scope (the CPU
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
void linear(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y);
// dx[M,K] = dy · w (or += when accumulate_dx); dw[N,K] += dy^T · x; db[N] += Σ_rows dy.
// Any of dx/dw/db may be undefined (not computed).
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
// silu(gate) * up, all [T, I].
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
};
// PyTorch AdamW (decoupled decay): p -= lr·wd·p; m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²;
// p -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps). param, m, v f32; grad f32.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p);

}  // namespace gyre::ops

// ---- paged KV cache (rollout engine; implemented in backend/paged_ops.cc, layout in
// backend/cpu/paged_attention.h) ------------------------------------------------------------------
namespace gyre::ops {
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
