// Training attention through cuDNN's fused flash attention (SDPA), built with the backend graph
// API (cudnn_graph.h) and used by attention_fwd_autocast / attention_bwd_autocast (autocast.cc)
// in place of the FlashAttention-2 kernels of flash_bf16_{fwd,bwd}.cu where it works.
//
// Layout: q/out/dout/dq [T, Hq, D] and k/v/dk/dv [T, Hkv, D] bf16, sequences packed back to back
// as cu_seqlens (i32 [B + 1], device) says — cuDNN's ragged ("THD") layout, with per-sequence
// lengths as the padding mask and a top-left causal mask. lse is f32 [T, Hq], also ragged, and
// holds cuDNN's softmax stats, which are exactly gyre's lse: max + log(sum exp(s - max)) over the
// scaled scores s = scale · q·k of the row (natural log), so either backward reads either forward.
//
// Selection (attention_backend()): GYRE_ATTENTION_BACKEND=cudnn|flash, read at every call
// (default cudnn). The cuDNN functions return false — and the caller runs the flash kernels —
// when the library cannot be loaded, the shape is outside what the graph supports (D % 8, D >
// 128, offsets beyond int32), or plan building fails; the reason is logged once at info level.
//
// Plans are built once per shape key and cached for the process: (device, direction, B rounded
// up to a power of two, max_seqlen rounded up to a multiple of 128 (of 512 past 1024), Hq, Hkv, D,
// deterministic). The padding entries of a rounded-up batch are empty sequences, and rows past a
// sequence's length are masked, so one plan serves every batch of its bucket. The scale is a
// by-value scalar bound at execution, not part of the key. Measured on an H200: a forward plan
// builds in 45-120 ms, a backward plan in 0.05-1.1 s (the first of the process ~1.2 s: library
// start-up).
//
// Tuning (GYRE_CUDNN_ATTENTION_TUNE=1|2; off by default): on a plan key's first uncaptured call
// that fills its bucket (batch and longest sequence at the bucket's), the graph's alternative
// plans (1: heuristics modes A and B and the fallback list; 2: also every engine with each knob
// value alone — GraphBuilder::build_candidates, at most GYRE_CUDNN_ATTENTION_TUNE_PLANS (8) plans
// and about GYRE_CUDNN_ATTENTION_TUNE_MS (3000) ms of building, under the cuDNN handle's mutex)
// run on that call's inputs from NaN-filled outputs, and the fastest whose outputs are bitwise
// the heuristic plan's, with at most ~25% (or 64 MB) more workspace, replaces it (gemm_tune.h's
// rule: the results never change by a bit; engines noted nondeterministic and the atomic-dQ
// backward are never tuned). One info line per key lists the alternatives and their timings. On
// the H200 (session 18) it found nothing to take: docs/cuda.md.
//
// Determinism: by default (GYRE_CUDNN_ATTENTION_DETERMINISTIC unset or 1) the backward graph
// writes dQ straight from its matmul (cuDNN's deterministic Hopper variant, as the frontend's
// "deterministic algorithm" builds it), so gradients are bitwise reproducible as with the flash
// kernels; its workspace is a bf16 dP of B_bucket · Hq · S_bucket² elements, and a plan needing
// more than GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB (default 4096) runs the flash kernels instead.
// =0 builds the faster variant that accumulates dQ in an f32 [T, Hq, D] scratch with atomics
// (about 4 KB of cuDNN workspace; not bitwise reproducible).
#pragma once
#include <cstdint>
#include <string>

namespace gyre::cuda {

enum class AttentionBackend { cudnn, flash };
// GYRE_ATTENTION_BACKEND ("cudnn" by default; "flash" forces the FlashAttention-2 kernels).
AttentionBackend attention_backend();

// True when cuDNN is loaded (why: the reason when not).
bool cudnn_attention_available(std::string* why = nullptr);

// Run through cuDNN; false (nothing written) when it cannot (see above).
bool cudnn_attention_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                         float* lse);
bool cudnn_attention_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                         const uint16_t* v, const uint16_t* out, const float* lse,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                         uint16_t* dk, uint16_t* dv);

// Counters for the tests and the benchmark: calls cuDNN ran, plans built, their total build time,
// and the last plan's workspace bytes and engine choice.
struct CudnnAttentionStats {
  int64_t fwd_calls = 0, bwd_calls = 0;
  int64_t plans_built = 0;
  double build_ms = 0;
  int64_t last_workspace_bytes = 0;
  std::string last_engine;
  int64_t plans_tuned = 0, plans_replaced = 0;  // GYRE_CUDNN_ATTENTION_TUNE=1: keys measured,
                                                // and those whose plan a faster one replaced
};
CudnnAttentionStats cudnn_attention_stats();

// (cudnn_attention_prep.cu) From cu_seqlens [B + 1] on the device, the per-sequence arrays of the
// cuDNN graph for a batch padded to Bp >= B: seqlen [Bp] (0 past B) and the ragged offsets
// [Bp + 1] in elements of q-like (row stride q_row), kv-like (kv_row) and lse-like (lse_row)
// tensors; entries past B repeat cu_seqlens[B]. Launched on the calling thread's stream.
void cudnn_attention_prep(const int32_t* cu_seqlens, int64_t B, int64_t Bp, int32_t q_row,
                          int32_t kv_row, int32_t lse_row, int32_t* seqlen, int32_t* off_q,
                          int32_t* off_kv, int32_t* off_lse);

}  // namespace gyre::cuda
