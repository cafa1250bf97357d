// RoPE fused with the training attention (issue 7: the attention block's f32 round trips under
// bf16 autocast). Declared here rather than in ops.h; implementation rope_attention_ops.cc over
// backend/cuda/rope_attention_bf16.h.
//
// The composition it replaces, in the decoder layer's training forward and backward:
//   rope_(q), rope_(k), attention_varlen(q, k, v, ...)
//   attention_varlen_backward(dout, q, k, v, out, lse, ...), rope_(dq, inverse), rope_(dk, inverse)
// Under bf16 autocast on CUDA that composition writes rotated f32 q and k, rounds q/k/v to bf16
// into scratch, widens the bf16 attention output to f32 (which o_proj rounds again), and in the
// backward rounds the saved q/k/v/out and dout again and widens dq/dk/dv before rotating dq/dk.
// The fused ops keep the bf16 operands: one kernel rotates and rounds q and k (and rounds v) into
// the tensors the backward keeps, the output may stay bf16 (ops::linear takes a bf16 x), and one
// kernel widens and inverse-rotates the gradients.
//
// Contract: BITWISE the composition (out, lse, dq, dk, dv; the saved operands are exactly the
// values the attention kernels read), on every device and dtype, so a forward through these ops
// and one through the composition (the scoring forward, recompute) agree bit for bit. Everywhere
// but CUDA under Bf16Autocast with head dim 64/128 the composition itself runs (on copies of q and
// k: the inputs are never modified). Checks happen before anything is written; errors name the op
// and the argument (index data as rope_ and attention_varlen check it: on a host copy unless a
// KnownIndices scope records it, so no device-to-host copy the composition would not make).
#pragma once
#include "gyre/backend/ops.h"

namespace gyre::ops {

// What the backward needs from rope_attention_varlen: the attention's operands, rotated q and k
// and v. Under CUDA autocast (the bf16 kernels) they are bf16 — the roundings of rope(q), rope(k)
// and v, exactly what the kernels read; elsewhere f32 (or f64) rope(q), rope(k) and v itself (the
// caller's tensor, no copy).
struct RopeAttentionSaved {
  Tensor q, k, v;
};

// The dtype the decoder layer should allocate rope_attention_varlen's `out` in: bf16 where q is an
// f32 CUDA tensor [T, Hq, D] under Bf16Autocast with attention_autocast_supported(D) (64 or 128)
// and T > kFusedGemvMaxRows (8) rows — past the GEMV's rows o_proj's GEMM reads the bf16 output
// directly; at fewer rows the GEMV wants f32 — else q's dtype (f32 in the model).
DType attention_out_dtype(const Tensor& q);

// Whether the attention ops run the bf16 kernels for f32 tensors of head dim D on `dev` in the
// calling thread's autocast scope (CUDA under Bf16Autocast, attention_autocast_supported(D)): the
// backward then reads dout as a bf16 operand, so its producer may write it in bf16 directly.
bool attention_bf16_kernels(Device dev, int64_t D);

// Exactly q' = rope(q), k' = rope(k) (q and k themselves are NOT modified), then
// attention_varlen(q', k', v, cu_seqlens, scale, out, lse). q [T, Hq, D], k, v [T, Hkv, D],
// positions i32 [T], cos / sin [P, D/2], cu_seqlens i32 [B+1]. out [T, Hq, D] is f32 or bf16 —
// bf16 only on CUDA under autocast with head dim 64/128, where it receives the bf16 kernels' output
// directly (attention_varlen's f32 out is that output widened); undefined: allocated in q's dtype.
// lse [T, Hq] f32 (undefined: allocated). With `saved` non-null its fields are assigned the
// attention's operands (RopeAttentionSaved; anything they held is released, not written).
void rope_attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& positions, const Tensor& cos, const Tensor& sin,
                           const Tensor& cu_seqlens, float scale, Tensor& out, Tensor& lse,
                           RopeAttentionSaved* saved = nullptr);

// The backward of rope_attention_varlen with respect to the UNROTATED q, k and v: exactly
// attention_varlen_backward(dout, saved.q, saved.k, saved.v (widened to f32 when bf16), out, lse,
// cu_seqlens, scale, dq, dk, dv), then rope_(dq, ..., inverse = true), rope_(dk, ..., inverse =
// true). dq, dk, dv are overwritten (undefined: allocated; f32, or f64 with f64 operands). dout,
// out and the saved operands may each be f32 or bf16 on CUDA under autocast with head dim 64/128
// (bf16 ones are used as they are, f32 ones rounded once — what the autocast attention does); a
// bf16 one anywhere else is Error(invalid_argument) naming it.
void rope_attention_varlen_backward(const Tensor& dout, const RopeAttentionSaved& saved,
                                    const Tensor& out, const Tensor& lse, const Tensor& positions,
                                    const Tensor& cos, const Tensor& sin, const Tensor& cu_seqlens,
                                    float scale, Tensor& dq, Tensor& dk, Tensor& dv);

// ---- the backward straight into the q/k/v linears' packed bf16 dy
//
// The decoder layer hands rope_attention_varlen_backward's f32 dq/dk/dv to linear_group_backward
// (linear_group_ops.h), whose CUDA autocast path rounds them into one packed bf16 buffer (one dX
// GEMM for q/k/v) and sums the bias gradients over the f32 values — so the f32 gradients are
// written once and read twice. Where the bf16 attention kernels run, the packed variant below
// writes that packed buffer and the bias gradients' column sums in the kernel that inverse-rotates
// the gradients (backend/cuda/rope_attention_bf16.h), and linear_group_backward_packed runs the
// group's GEMMs on the buffer: no f32 dq/dk/dv at all.

// Where q's, k's and v's gradients lie in a packed bf16 buffer [T, ld]: member columns [col_x,
// col_x + n_x) with n_q = Hq·D, n_k = n_v = Hkv·D.
struct RopePackedLayout {
  int64_t col_q = 0, col_k = 0, col_v = 0, ld = 0;
};

// linear_group_backward's own packing of the members q, k, v (in this order): each at the next
// multiple of kPackedColumnAlign (128) after the previous one's columns — col_q = 0, col_k =
// round_up(Hq·D, 128), col_v = col_k + round_up(Hkv·D, 128), ld = col_v + round_up(Hkv·D, 128).
// (Qwen2.5: Hq·D = 896 / 1536, Hkv·D = 128 / 256: no padding columns.)
RopePackedLayout rope_packed_layout(int64_t Hq, int64_t Hkv, int64_t D);

// rope_attention_varlen_backward, with the gradients delivered as the q/k/v group's packed bf16 dy
// instead of f32 dq, dk, dv: dqkv [T, ld] bf16 (overwritten; undefined: allocated) receives, for
// the f32 dq, dk, dv rope_attention_varlen_backward computes from the same arguments,
//   dqkv[t, col_q + c] = bf16(dq[t, c]) for c < Hq·D (dq viewed [T, Hq·D]), the same for dk at
//   col_k and dv at col_v (c < Hkv·D), zeros in every other column of [0, ld),
// bf16() being f32_to_bf16's round to nearest even; and dbq [Hq·D], dbk, dbv [Hkv·D] (f32, each
// accumulated into; null or undefined: not computed) += the column sums of dq, dk, dv. Contract:
// BITWISE rope_attention_varlen_backward followed by linear_group_backward({dq, w_q, dw_q, dbq},
// {dk, ...}, {dv, ...}) with the layout rope_packed_layout gives: dqkv is the buffer that call
// packs, and the db are its column_sums_add's (same f64 partials per 128-row chunk, same order);
// so linear_group_backward_packed(dqkv, members at col_q / col_k / col_v without db) then yields
// its dx and dW bits too. T = 0: nothing written, each db += 0.0 (column_sums_add of no rows).
// Runs only where the fused backward runs the bf16 kernels — CUDA, f32 lse and gradients, an
// ops::Bf16Autocast scope, head dim 64 or 128 (attention_bf16_kernels) — and is
// Error(invalid_argument) elsewhere (call rope_attention_varlen_backward, then
// linear_group_backward; bf16 operands there get this error, not the bf16-misuse one). Checks, in
// this order and all before anything is written or allocated: rope_attention_varlen_backward's on
// the inputs (the same errors; the rope tables' against lse); ld a positive multiple of
// kPackedColumnAlign (128), every col a non-negative multiple of it with its member's columns
// inside [0, ld) and not overlapping another member's (any order); dqkv bf16 of T rows of ld; db
// f32 of the shapes above; then the path (so a bad layout is named on the CPU too).
void rope_attention_varlen_backward_packed(const Tensor& dout, const RopeAttentionSaved& saved,
                                           const Tensor& out, const Tensor& lse,
                                           const Tensor& positions, const Tensor& cos,
                                           const Tensor& sin, const Tensor& cu_seqlens, float scale,
                                           const RopePackedLayout& layout, Tensor& dqkv,
                                           Tensor* dbq = nullptr, Tensor* dbk = nullptr,
                                           Tensor* dbv = nullptr);

}  // namespace gyre::ops
