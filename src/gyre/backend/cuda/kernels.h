// CUDA kernels behind gyre::ops: plain functions over raw DEVICE pointers, sizes and the calling
// thread's stream (runtime.h). They never see a Tensor or a model and never validate data (ops.cc
// does, on a host copy of the indices); launch/runtime failures throw gyre::Error naming the call.
//
// Invariants: f32 in, f32 out, f32 accumulate for the streaming kernels and f64 accumulate where
// the CPU reference (backend/cpu/kernels.h) uses f64 (norm statistics, column sums, row dots,
// sums of squares), so results agree with the CPU backend to ~1e-6 relative. Reductions that add
// into a destination many times (embedding / scatter-add backward, weight and bias gradients) are
// done in a fixed order without atomics: results are bitwise reproducible run to run. Semantics
// of each function are those of the ops.h function of the same name.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// True when a CUDA device is visible to the process (runtime.cc; cached, never throws).
bool device_available();

// ---- dense (cuBLASLt; gemm.cc)
// Row-major C[M,N] = alpha op(A) op(B) + beta C, f32 in/out, f32 compute (no TF32).
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc);
// Same with bf16 A and B, f32 accumulate; C is f32 (c_is_bf16 = false) or bf16 (the f32 result
// rounded once: no algorithm that keeps split-K partials in bf16).
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, void* C,
               int64_t ldc, bool c_is_bf16);
// Linear's products with the bias fused: row-major y[M,N] = x[M,K] w[N,K]^T + b[N] (b may be
// null), y f32 with ldc = N; the bias is cuBLASLt's BIAS epilogue (one launch, the same f32 sum as
// seeding y with b and accumulating with beta = 1, which is the fallback when no epilogue algorithm
// exists). M, N, K > 0.
void linear_gemm_f32(const float* x, const float* w, const float* b, int64_t M, int64_t N,
                     int64_t K, float* y);
void linear_gemm_bf16(const uint16_t* x, const uint16_t* w, const float* b, int64_t M, int64_t N,
                      int64_t K, float* y);
// linear_gemm_bf16 with a bf16 y (ldc = N): the f32 accumulation (+ b) rounded once to bf16.
// Without a bias cuBLASLt writes bf16 D directly from its f32 accumulators (plans restricted to
// split-K schemes that reduce in f32, gemm.cc), so no f32 [M, N] is written; with a bias (whose
// data type cuBLASLt ties to D's) it is linear_gemm_bf16 into f32 scratch, then f32_to_bf16. The
// ONE function every bf16-output linear past the GEMV's rows calls (ops::linear into a bf16 y
// and the fused gate/up GEMMs of fused_gemm.h), so equal inputs give equal bits. M, N, K > 0.
void linear_gemm_bf16_out(const uint16_t* x, const uint16_t* w, const float* b, int64_t M,
                          int64_t N, int64_t K, uint16_t* y);
// y = x w^T + c with c f32 [M, N] as cuBLASLt's C (beta = 1; y may be c, not partly overlap it), on
// linear_gemm_bf16(x, w, nullptr, ...)'s own plan and algorithm: the same accumulation, and acc + c
// rounded once — bitwise that GEMM followed by add. Returns false, launching nothing, where the
// algorithm would add c before its split-K partials (in-place reduction) or c or y is not 256-byte
// aligned (what the heuristic assumed); the caller then runs the GEMM and the add.
bool linear_gemm_bf16_add(const uint16_t* x, const uint16_t* w, const float* c, int64_t M,
                          int64_t N, int64_t K, float* y);
void linear_fwd(const float* x, const float* w, const float* b, int64_t M, int64_t N, int64_t K,
                float* y);
void linear_bwd(const float* dy, const float* x, const float* w, int64_t M, int64_t N, int64_t K,
                float* dx, bool accumulate_dx, float* dw, float* db);

// ---- elementwise (elementwise.cu)
void add(const float* a, const float* b, float* out, int64_t n);
void scale(float* a, float s, int64_t n);
double sum_squares(const float* a, int64_t n);  // synchronises (returns a host value)
void silu_mul_fwd(const float* gate, const float* up, float* out, int64_t n);
void silu_mul_bwd(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                  int64_t n);
// SwiGLU over bf16 gate/up (silu_bf16.cu; the autocast MLP's pre-activations), math in f32:
// bitwise silu_mul_fwd / silu_mul_bwd on the bf16 values converted to f32 (bf16_to_f32).
void silu_mul_fwd_bf16in(const uint16_t* gate, const uint16_t* up, float* out, int64_t n);
void silu_mul_bwd_bf16in(const float* dout, const uint16_t* gate, const uint16_t* up, float* dgate,
                         float* dup, int64_t n);
// silu_mul_fwd_bf16in with a bf16 output: out[i] = the round-to-nearest-even bf16 of its f32
// value, bitwise silu_mul_fwd_bf16in followed by f32_to_bf16 (NaN included).
void silu_mul_fwd_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
// silu_mul_bwd_bf16in with bf16 dgate / dup: each the round-to-nearest-even bf16 of its f32
// value, bitwise silu_mul_bwd_bf16in followed by f32_to_bf16 (the training backward, whose
// dgate / dup only feed bias-free bf16 GEMMs).
void silu_mul_bwd_bf16(const float* dout, const uint16_t* gate, const uint16_t* up, uint16_t* dgate,
                       uint16_t* dup, int64_t n);
// silu_mul_bwd_bf16 with a bf16 dout (down_proj's dx rounded by its GEMM), widened exactly: bitwise
// silu_mul_bwd_bf16 of the widened f32 dout.
void silu_mul_bwd_bf16_dout(const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                            uint16_t* dgate, uint16_t* dup, int64_t n);
// grad_scale: see ops::AdamWParams (1: the gradient as stored).
void adamw(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1,
           double beta2, double eps, double weight_decay, int64_t step, float grad_scale = 1.0f);
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
// y[r, :] = b for r in [0, M).
void broadcast_rows(const float* b, int64_t M, int64_t N, float* y);
// out[c] += Σ_r a[r, c] (f64 accumulation, fixed order).
void column_sums_add(const float* a, int64_t R, int64_t C, float* out);

// ---- rows by index (rows.cu); ids are device pointers, `ids_host` the same values on the host
// (the backward scatter groups source rows per destination on the host so it needs no atomics).
void embedding_fwd(const int32_t* ids, int64_t n, const float* table, int64_t H, float* out);
void embedding_bwd(const int32_t* ids_host, int64_t n, const float* dout, int64_t H, float* dtable);
void gather_rows(const float* src, int64_t H, const int32_t* idx, int64_t n, float* out);
void scatter_add_rows(const float* src, int64_t H, const int32_t* idx_host, const float* scale,
                      int64_t n, float* out);
void row_dot(const float* a, const float* b, int64_t n, int64_t H, float* out);

// ---- RMSNorm and RoPE (rows.cu)
void rms_norm_fwd(const float* x, const float* w, int64_t R, int64_t H, double eps, float* y,
                  float* rstd);
void rms_norm_bwd(const float* dy, const float* x, const float* w, const float* rstd, int64_t R,
                  int64_t H, float* dx, float* dw);
void rope(float* x, int64_t tokens, int64_t H, int64_t D, const int32_t* positions,
          const float* cos, const float* sin, bool inverse);

// ---- softmax family and MoE router (softmax.cu)
void softmax_rows(const float* x, int64_t R, int64_t C, float* out);
void log_softmax_rows(const float* x, int64_t R, int64_t C, float* out);
void token_logprobs_fwd(const float* logits, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, float* logp, float* entropy);
void token_logprobs_bwd(const float* logits, const int32_t* targets, int64_t n, int64_t V,
                        float temperature, const float* dlogp, const float* dentropy,
                        float* dlogits);
// bf16 logits variant (the log-prob of a bf16 lm_head output, f32 math); the benchmark's path.
void token_logprobs_fwd_bf16(const uint16_t* logits, const int32_t* targets, int64_t n, int64_t V,
                             float temperature, float* logp, float* entropy);
void moe_route_fwd(const float* logits, int64_t n, int64_t E, int64_t k, bool norm_topk,
                   float* probs, int32_t* indices, float* weights);
void moe_route_bwd(const float* dweights, const float* probs, const int32_t* indices, int64_t n,
                   int64_t E, int64_t k, bool norm_topk, float* dlogits);

// ---- attention, f32 reference-exact path (attention.cu); cu_seqlens on the device, B sequences;
// head dim D <= kMaxAttentionHeadDim.
constexpr int64_t kMaxAttentionHeadDim = 256;
void attention_fwd(const float* q, const float* k, const float* v, const int32_t* cu_seqlens,
                   int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                   float* out, float* lse);
void attention_bwd(const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const int32_t* cu_seqlens, int64_t B,
                   int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale, float* dq, float* dk,
                   float* dv);
void paged_kv_write(const float* k, const float* v, const int32_t* slot_mapping, int64_t T,
                    int64_t Hkv, int64_t D, float* k_cache, float* v_cache);
void paged_attention_fwd(const float* q, const float* k_cache, const float* v_cache,
                         const int32_t* cu_seqlens_q, const int32_t* kv_lens,
                         const int32_t* page_indptr, const int32_t* page_indices, int64_t B,
                         int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t page_size,
                         float scale, float* out);

// ---- attention, bf16 tensor-core path (flash_bf16_fwd.cu, flash_bf16_bwd.cu): FlashAttention-2
// tiling (Dao 2023) with mma.sync m16n8k16, bf16 q/k/v/out, f32 lse and accumulators; D = 64 or
// 128. max_seqlen bounds the grid. Backward recomputes P from lse and is deterministic (no
// atomics); delta is an f32 [T, Hq] scratch and partials an f32 scratch of T * Hq * D floats that
// holds the split dK/dV partials when D = 64 and Hq / Hkv >= 4 (untouched otherwise).
bool flash_bf16_supported(int64_t D);
void flash_attention_bf16_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                              float* lse);
void flash_attention_bf16_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                              const uint16_t* v, const uint16_t* out, const float* lse,
                              const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                              int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                              uint16_t* dk, uint16_t* dv, float* partials, float* delta);

// ---- bf16 autocast (autocast.cc; ops::Bf16Autocast): f32 in/out, operands rounded to bf16 and
// run through gemm_bf16 / the flash kernels above; same semantics as the f32 functions of the same
// name without the suffix. Attention needs attention_autocast_supported(D) (D = 64 or 128).
// As linear_fwd_autocast with the weight already rounded to bf16 (ops::Bf16WeightCache); M, N, K >
// 0.
void linear_fwd_autocast_bf16_weight(const float* x, const uint16_t* w_bf16, const float* b,
                                     int64_t M, int64_t N, int64_t K, float* y);
// Small-M path of the above (gemv_bf16.cu; decode at batch <= kGemvMaxRows): one warp per output
// column streams the bf16 weight row and rounds x to bf16 in registers — no activation conversion
// kernel, no GEMM tiles. Only where linear_gemv_bf16_supported (K % 8 == 0, 16-byte aligned x, w).
constexpr int64_t kGemvMaxRows = 8;
bool linear_gemv_bf16_supported(const float* x, const uint16_t* w, int64_t M, int64_t N, int64_t K);
void linear_gemv_bf16(const float* x, const uint16_t* w, const float* b, int64_t M, int64_t N,
                      int64_t K, float* y);
void linear_fwd_autocast(const float* x, const float* w, const float* b, int64_t M, int64_t N,
                         int64_t K, float* y);
// linear_fwd_autocast[_bf16_weight] with a bf16 y (ops::linear into a bf16 tensor: the autocast
// MLP's gate/up). Past the GEMV's rows x is rounded into pool scratch and linear_gemm_bf16_out
// runs; where the GEMV applies (M <= kGemvMaxRows, linear_gemv_bf16_supported) the GEMV writes
// f32 scratch and f32_to_bf16 rounds it — the bits the fused gate/up GEMV (gemv_fused.h) makes by
// rounding its f32 column values in registers; K = 0: the bias rows (or zeros) rounded. The _bf16
// _weight variant needs M, N, K > 0.
void linear_fwd_autocast_bf16_out(const float* x, const float* w, const float* b, int64_t M,
                                  int64_t N, int64_t K, uint16_t* y);
void linear_fwd_autocast_bf16_weight_bf16_out(const float* x, const uint16_t* w_bf16,
                                              const float* b, int64_t M, int64_t N, int64_t K,
                                              uint16_t* y);
// ops::linear with a bf16 x (y f32, or bf16 when y_bf16 is non-null: then y is ignored): bitwise
// the f32-x functions above on x widened to f32. Up to kGemvMaxRows rows (or K = 0) x is widened
// into f32 scratch and exactly that path runs (GEMV or GEMM); past them linear_gemm_bf16[_out]
// reads x itself (what the f32-x path would have rounded it to; staged into scratch when it is not
// 256-byte aligned) on w_bf16 — the installed weight cache's copy, or, when null, w rounded into
// scratch as linear_fwd_autocast does. w_bf16 only with M, N, K > 0.
void linear_fwd_autocast_bf16_x(const uint16_t* x, const float* w, const uint16_t* w_bf16,
                                const float* b, int64_t M, int64_t N, int64_t K, float* y,
                                uint16_t* y_bf16);
// Operands already in bf16 (each may be null: rounded here per call instead, from the f32 one) —
// the same round-to-nearest-even values either way, so the same dx / dw:
//   w_bf16  w's bf16 copy (ops::Bf16WeightCache) for the dX product;
//   dy_bf16 dy rounded by its producer (then dy may be null; db needs the f32 dy);
//   x_bf16  x rounded by its producer (then x may be null).
// dx_bf16 (non-null: dx must be null, accumulate_dx false) receives dx as bf16 instead, the f32
// accumulation rounded once. M, N, K > 0 when dy or x is null or dx_bf16 is given.
// dw_overwrite (M, N, K > 0): dw = dy^T x instead of +=, the GEMM's beta 0 — for a dw that held
// deferred zeros (Tensor::claim_pending_zero): the same values without the memset or C's read.
void linear_bwd_autocast(const float* dy, const float* x, const float* w, int64_t M, int64_t N,
                         int64_t K, float* dx, bool accumulate_dx, float* dw, float* db,
                         const uint16_t* w_bf16 = nullptr, const uint16_t* dy_bf16 = nullptr,
                         const uint16_t* x_bf16 = nullptr, uint16_t* dx_bf16 = nullptr,
                         bool dw_overwrite = false);
bool attention_autocast_supported(int64_t D);
// The autocast attention's kernels on bf16 operands (16-byte aligned; cuDNN falls back to flash on
// others): cuDNN's SDPA, else (GYRE_ATTENTION_BACKEND=flash, no cuDNN, a refused plan) the
// FlashAttention-2 kernels, with the backward's flash scratch allocated here. The one place that
// choice is made: attention_*_autocast below and the fused RoPE + attention
// (rope_attention_bf16.h) both call these. Nothing runs for T = 0.
void attention_fwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                        int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out, float* lse);
void attention_bwd_bf16(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                        const uint16_t* v, const uint16_t* out, const float* lse,
                        const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                        int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq, uint16_t* dk,
                        uint16_t* dv);
void attention_fwd_autocast(const float* q, const float* k, const float* v,
                            const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                            int64_t Hq, int64_t Hkv, int64_t D, float scale, float* out,
                            float* lse);
void attention_bwd_autocast(const float* dout, const float* q, const float* k, const float* v,
                            const float* out, const float* lse, const int32_t* cu_seqlens,
                            int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv,
                            int64_t D, float scale, float* dq, float* dk, float* dv);

// ---- op profiler events (runtime.cc): an event recorded on the calling thread's stream (pooled),
// the milliseconds between two of them (waits for `stop`), and returning one to the pool.
void* profile_event_record();
double profile_elapsed_ms(void* start, void* stop);
void profile_event_release(void* event);

// ---- sampling (sampling.cu): one token per row with the CPU sampler's Philox draw
// (Philox4x32::draw(seed, 0, step) -> uniform(bits[0])), over temperature-scaled logits without
// top-k/top-p (those run on the CPU sampler); greedy when temperature <= 0.
void sample_rows(const float* logits, int64_t n, int64_t V, const float* temperature,
                 const uint64_t* seeds, const int64_t* steps, float min_p, int32_t* out_tokens);

// ---- BEGIN vocabulary-chunked log-probs (logprob_chunk.cu; semantics in ops.h logprob_chunk_*)
// stats [n, 4] f32 = (m, s, w, z_target); dx may alias x.
void logprob_chunk_stats(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                         float temperature, bool accumulate, float* stats);
void logprob_chunk_finish(const float* stats, const int32_t* targets, int64_t n, float* logp,
                          float* entropy, float* lse);
void logprob_chunk_bwd(const float* x, const int32_t* targets, int64_t n, int64_t C, int64_t v0,
                       float temperature, const float* lse, const float* entropy,
                       const float* dlogp, const float* dentropy, float* dx);
// ---- END vocabulary-chunked log-probs

}  // namespace gyre::cuda
