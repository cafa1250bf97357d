// CPU kernels behind gyre::ops: plain functions over raw row-major pointers and sizes. They never
// see a Tensor or a model, never throw (ops.cc validates first) and are explicitly instantiated for
// float (the backend's working type) and double (finite-difference gradient checks).
//
// Invariants: reductions (norm statistics, softmax sums, dot products, column sums for bias and
// norm-weight gradients) accumulate in double; every output element is computed by one task in a
// fixed order, so results are bitwise independent of the thread count (see parallel.h). Semantics
// of each kernel are those of the ops.h function of the same name.
#pragma once
#include <cstdint>

namespace gyre::cpu {

// ---- dense: y[M,N] = x[M,K] w[N,K]^T + b[N] (b may be null)
template <typename T>
void linear_fwd(const T* x, const T* w, const T* b, int64_t M, int64_t N, int64_t K, T* y);
// dx = dy w (+= when accumulate_dx); dw += dy^T x; db += column sums of dy. Null = skip.
template <typename T>
void linear_bwd(const T* dy, const T* x, const T* w, int64_t M, int64_t N, int64_t K, T* dx,
                bool accumulate_dx, T* dw, T* db);

// ---- elementwise
template <typename T>
void add(const T* a, const T* b, T* out, int64_t n);  // out may alias a or b
template <typename T>
void scale(T* a, T s, int64_t n);
template <typename T>
double sum_squares(const T* a, int64_t n);
template <typename T>
void silu_mul_fwd(const T* gate, const T* up, T* out, int64_t n);
template <typename T>
void silu_mul_bwd(const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                  int64_t n);  // dgate, dup both required
template <typename T>
void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weight_decay, int64_t step, T grad_scale = T(1));

// ---- rows by index (ids / idx already range-checked)
template <typename T>
void embedding_fwd(const int32_t* ids, int64_t n, const T* table, int64_t H, T* out);
template <typename T>
void embedding_bwd(const int32_t* ids, int64_t n, const T* dout, int64_t H, T* dtable);
template <typename T>
void gather_rows(const T* src, int64_t H, const int32_t* idx, int64_t n, T* out);
// scale may be null (= 1).
template <typename T>
void scatter_add_rows(const T* src, int64_t H, const int32_t* idx, const T* scale, int64_t n,
                      T* out);
template <typename T>
void row_dot(const T* a, const T* b, int64_t n, int64_t H, T* out);

// ---- RMSNorm over rows of length H; rstd [R]
template <typename T>
void rms_norm_fwd(const T* x, const T* w, int64_t R, int64_t H, double eps, T* y, T* rstd);
// dx overwritten (may be null); dw accumulated (may be null).
template <typename T>
void rms_norm_bwd(const T* dy, const T* x, const T* w, const T* rstd, int64_t R, int64_t H, T* dx,
                  T* dw);

// ---- RoPE in place on x [tokens, H, D]; cos/sin [P, D/2]; positions already in [0, P)
template <typename T>
void rope(T* x, int64_t tokens, int64_t H, int64_t D, const int32_t* positions, const T* cos,
          const T* sin, bool inverse);

// ---- causal varlen GQA attention; q/out [total, Hq, D], k/v [total, Hkv, D], lse [total, Hq],
// cu_seqlens [B+1] already validated.
template <typename T>
void attention_fwd(const T* q, const T* k, const T* v, const int32_t* cu_seqlens, int64_t B,
                   int64_t Hq, int64_t Hkv, int64_t D, T scale, T* out, T* lse);
// dq, dk, dv overwritten (all of them, including rows of empty work).
template <typename T>
void attention_bwd(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                   const int32_t* cu_seqlens, int64_t B, int64_t Hq, int64_t Hkv, int64_t D,
                   T scale, T* dq, T* dk, T* dv);

// ---- softmax family over rows of length C (out may alias x)
template <typename T>
void softmax_rows(const T* x, int64_t R, int64_t C, T* out);
template <typename T>
void log_softmax_rows(const T* x, int64_t R, int64_t C, T* out);
// targets in [-inf, V) (negative: logp 0, no gradient); entropy may be null.
template <typename T>
void token_logprobs_fwd(const T* logits, const int32_t* targets, int64_t n, int64_t V,
                        T temperature, T* logp, T* entropy);
// dentropy may be null.
template <typename T>
void token_logprobs_bwd(const T* logits, const int32_t* targets, int64_t n, int64_t V,
                        T temperature, const T* dlogp, const T* dentropy, T* dlogits);

// ---- MoE router
template <typename T>
void moe_route_fwd(const T* logits, int64_t n, int64_t E, int64_t k, bool norm_topk, T* probs,
                   int32_t* indices, T* weights);
template <typename T>
void moe_route_bwd(const T* dweights, const T* probs, const int32_t* indices, int64_t n, int64_t E,
                   int64_t k, bool norm_topk, T* dlogits);

// ---- vocabulary-chunked log-probs (logprob_chunk.cc; semantics in ops.h logprob_chunk_*).
// stats [n, 4] = (m, s, w, z_target); dx may alias x.
template <typename T>
void logprob_chunk_stats(const T* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                         T temperature, bool accumulate, T* stats);
template <typename T>
void logprob_chunk_finish(const T* stats, const int32_t* targets, int64_t n, T* logp, T* entropy,
                          T* lse);
template <typename T>
void logprob_chunk_bwd(const T* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                       T temperature, const T* lse, const T* entropy, const T* dlogp,
                       const T* dentropy, T* dx);

}  // namespace gyre::cpu
