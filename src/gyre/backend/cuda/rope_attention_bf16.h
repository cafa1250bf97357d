// The fused RoPE + attention of the training step under bf16 autocast (rope_attention_bf16.cu;
// ops::rope_attention_varlen and its backward in backend/rope_attention_ops.h).
//
// What it replaces: rope_ on q and k (f32, in place), then the autocast attention, which rounds
// q, k and v to bf16 into scratch, runs cuDNN (or the flash kernels) and widens the bf16 output to
// f32; its backward rounds the saved f32 q/k/v/out and dout again, widens dq/dk/dv and rope_
// inverse-rotates dq and dk in place. Here one kernel reads f32 q, k and v and writes the bf16
// operands (rotated q and k), the attention runs on them (attention_fwd_bf16 / attention_bwd_bf16,
// the same kernel choice as the autocast attention), and one kernel widens dq, dk, dv and
// inverse-rotates dq and dk — or, for the q/k/v linears' grouped backward (pack_bf16.h), writes
// them straight into the group's packed bf16 dy with their bias gradients' column sums
// (rope_attention_bwd_bf16_packed below).
//
// Bitwise contract: each rotated element is rope_rotate.cuh's rope_rotate on the same values with
// the same table entries as rows.cu's rope kernel (forward: sin; inverse: -sin), and each rounding
// is __float2bfloat16_rn, cuda::f32_to_bf16's (round to nearest even, NaN -> canonical NaN); bf16
// -> f32 is exact. So the operands, out, lse, dq, dk and dv are those of the composition bit for
// bit. Every bf16 buffer the attention kernels see is 16-byte aligned (cuDNN falls back to the
// flash kernels otherwise, while the composition's scratch always is): a caller's misaligned buffer
// is staged through pool scratch.
//
// Sizes: q, out [T, Hq, D], k, v [T, Hkv, D], D = 64 or 128 (attention_autocast_supported),
// positions i32 [T] (validated by the caller), cos / sin [P, D/2] f32, cu_seqlens i32 [B + 1] on
// the device with longest sequence max_seqlen. All pointers are device pointers; nothing runs for
// T = 0.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// qb <- bf16(rope(q)), kb <- bf16(rope(k)), vb <- bf16(v), one launch.
void rope_qkv_bf16(const float* q, const float* k, const float* v, int64_t T, int64_t Hq,
                   int64_t Hkv, int64_t D, const int32_t* positions, const float* cos,
                   const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb);
// dq <- rope⁻¹(f32(dqb)), dk <- rope⁻¹(f32(dkb)), dv <- f32(dvb), one launch.
void rope_inverse_dqkv_f32(const uint16_t* dqb, const uint16_t* dkb, const uint16_t* dvb, int64_t T,
                           int64_t Hq, int64_t Hkv, int64_t D, const int32_t* positions,
                           const float* cos, const float* sin, float* dq, float* dk, float* dv);

// The forward: rope_qkv_bf16 into qb, kb, vb (the operands the backward needs; each may be null:
// pool scratch instead), then attention_fwd_bf16 writing lse and the bf16 output into out_bf16
// (the caller's bf16 out) or, when out_bf16 is null, into scratch widened into out (f32).
void rope_attention_fwd_bf16(const float* q, const float* k, const float* v,
                             const int32_t* positions, const float* cos, const float* sin,
                             const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                             int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* qb,
                             uint16_t* kb, uint16_t* vb, float* out, uint16_t* out_bf16,
                             float* lse);

// An operand of the backward's attention: bf16 values used as they are, or f32 values rounded
// once into pool scratch (the autocast attention's own rounding). Exactly one is set.
struct Bf16Operand {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};

// The backward: attention_bwd_bf16 on the operands (dq/dk/dv bf16 in scratch, as the autocast
// attention's backward), then rope_inverse_dqkv_f32 into the f32 dq, dk, dv.
void rope_attention_bwd_bf16(Bf16Operand dout, Bf16Operand q, Bf16Operand k, Bf16Operand v,
                             Bf16Operand out, const float* lse, const int32_t* positions,
                             const float* cos, const float* sin, const int32_t* cu_seqlens,
                             int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq, int64_t Hkv,
                             int64_t D, float scale, float* dq, float* dk, float* dv);

// ---- the backward into the q/k/v group's packed bf16 dy
// (ops::rope_attention_varlen_backward_packed)
//
// What rope_attention_bwd_bf16 followed by linear_group_bwd_autocast's packing and bias column
// sums computes, without the f32 dq/dk/dv: rope_inverse_dqkv_packed writes
//   dst[t, col[0] + c] = __float2bfloat16_rn(dq[t, c]) for c < Hq·D   (dq viewed [T, Hq·D]),
//   dst[t, col[1] + c] = ... dk[t, c], dst[t, col[2] + c] = ... dv[t, c] for c < Hkv·D,
//   zero in every other column of [0, ld),
// where dq/dk/dv are the f32 values rope_inverse_dqkv_f32 would write (the same expressions on the
// same bf16 gradients: bitwise), rounded as pack_bf16_columns rounds them; and for each member
// with db[i] non-null, db[i] [n_i] (f32) += the column sums of that f32 gradient with
// column_sums_add's bits: the kernel computes column_sums.h's f64 partials itself (one block per
// head and 128-row chunk; the rotated f32 values staged in shared memory, one thread per column
// adding them in row order) and colsum::finish_add adds them. T = 0 writes nothing and gives db
// column_sums_add's R = 0 result
// (+0.0 added). Preconditions (the op checks them): each member's columns [col_i, col_i + n_i)
// inside [0, ld), not overlapping; dst does not overlap the inputs or db.
struct PackedDqkv {
  uint16_t* dst = nullptr;  // [T, ld] bf16, any alignment
  int64_t ld = 0;
  int64_t col[3] = {0, 0, 0};                  // q, k, v
  float* db[3] = {nullptr, nullptr, nullptr};  // q, k, v bias gradients (null: not computed)
};
void rope_inverse_dqkv_packed(const uint16_t* dqb, const uint16_t* dkb, const uint16_t* dvb,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                              const int32_t* positions, const float* cos, const float* sin,
                              const PackedDqkv& out);

// rope_attention_bwd_bf16 with rope_inverse_dqkv_packed as its last step.
void rope_attention_bwd_bf16_packed(Bf16Operand dout, Bf16Operand q, Bf16Operand k, Bf16Operand v,
                                    Bf16Operand out, const float* lse, const int32_t* positions,
                                    const float* cos, const float* sin, const int32_t* cu_seqlens,
                                    int64_t B, int64_t max_seqlen, int64_t T, int64_t Hq,
                                    int64_t Hkv, int64_t D, float scale, const PackedDqkv& dqkv);

}  // namespace gyre::cuda
