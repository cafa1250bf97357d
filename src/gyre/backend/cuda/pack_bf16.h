// The grouped linear backward under autocast (pack_bf16.cu; ops::linear_group_backward in
// backend/linear_group_ops.h): several linears over one input x — the decoder layer's q/k/v —
// back-propagated with ONE dX GEMM over their output gradients packed side by side, instead of one
// dX GEMM per member added into dx with beta = 1 (each reading and writing the whole f32 dx).
//
// Packed layout: member i's columns start at col_i, a multiple of kPackAlign (128 bf16 = 256
// bytes), and own kPackAlign-rounded widths; ld = Σ round_up(n_i, kPackAlign). The dW GEMMs read
// column slices of the packed dy (pointer + col_i, leading dimension ld), and the cuBLASLt plans
// (backend/cuda/gemm.cc) choose their algorithm assuming every operand pointer has cuBLASLt's
// default 256-byte minimum alignment, which a slice at an arbitrary column would break; at the
// aligned offsets each slice pointer keeps the buffer's (pool blocks are cudaMalloc'ed: 256-byte
// aligned). The padding columns of dy and the matching rows of the packed weight are zeros, so they
// add exact zeros to dX. For Qwen-style q/k/v (n = 896/128/128, 1536/256/256, ...) every n is a
// multiple of 128 already: no padding at all.
//
// Numerics: the packed dy holds f32_to_bf16 of each member's f32 dy (round to nearest even, the
// same conversion), the packed weight the member's bf16 copy (Bf16WeightCache) or f32_to_bf16 of
// its f32 weight — the operands linear_bwd_autocast rounds per member. dW_i and db_i are therefore
// the same products (dW with leading dimension ld instead of n_i: cuBLASLt may plan it
// differently), db the same column_sums_add over the f32 dy; dX is the same sum of products,
// accumulated in f32 over all Σn terms in one GEMM instead of per member (rounding order only).
//
// linear_group_bwd_packed is the part after the packing, for a dy that comes packed in bf16
// already: the SwiGLU backward (silu_mul_bwd_bf16_packed, silu_bf16.cu) writes dgate | dup that
// way, so the gate/up linears get one dX GEMM with no packing pass at all.
#pragma once
#include <cstdint>

namespace gyre::cuda {

inline constexpr int64_t kPackAlign = 128;  // bf16 elements: 256 bytes

// One member of pack_bf16_columns: src f32 [M, n] (row-major, contiguous, any alignment) written
// to the packed buffer's columns [col, col + n), the columns [col + n, col + width) set to zero.
struct PackBf16Member {
  const float* src = nullptr;
  int64_t n = 0;
  int64_t col = 0;    // multiple of 8
  int64_t width = 0;  // >= n, multiple of 8
};

// dst [M, ld] bf16 (16-byte aligned, ld a multiple of 8): each member's columns as above, converted
// with f32_to_bf16's rounding (__float2bfloat16_rn). One launch for up to 8 members (more: one per
// 8). Columns no member owns are not written.
void pack_bf16_columns(const PackBf16Member* members, int64_t count, int64_t M, int64_t ld,
                       uint16_t* dst);

// One linear of linear_group_bwd_autocast: dy f32 [M, n], w f32 [n, K] (or its bf16 copy w_bf16,
// read instead when non-null), dw f32 [n, K] accumulated into (null: not computed; overwritten
// instead when dw_overwrite: Tensor::claim_pending_zero), db f32 [n] accumulated into (null: no
// bias).
struct LinearGroupBwdMember {
  const float* dy = nullptr;
  const float* w = nullptr;
  const uint16_t* w_bf16 = nullptr;
  int64_t n = 0;
  float* dw = nullptr;
  float* db = nullptr;
  bool dw_overwrite = false;
};

// One linear of linear_group_bwd_packed: its bf16 dy is the packed buffer's columns
// [col, col + n) (col a multiple of kPackAlign: the slice keeps the buffer's 256-byte alignment);
// w f32 [n, K] (or its bf16 copy w_bf16, read instead when non-null; only the dX GEMM reads it),
// dw f32 [n, K] accumulated into (null: not computed), or overwritten when dw_overwrite (the
// GEMM's beta 0: dw held deferred zeros, Tensor::claim_pending_zero).
struct PackedBwdMember {
  const float* w = nullptr;
  const uint16_t* w_bf16 = nullptr;
  int64_t n = 0;
  int64_t col = 0;
  float* dw = nullptr;
  bool dw_overwrite = false;
};

// The GEMMs of linear_group_bwd_autocast over an already packed bf16 dy [M, ld] (ld a multiple of
// kPackAlign; copied to aligned scratch when not 256-byte aligned): dx [M, K] (null: not computed)
// = (accumulate_dx ? dx : 0) + dy · W, W [ld, K] the members' bf16 weights stacked at their
// columns with zero rows elsewhere; dW_i += dy[:, col_i : col_i + n_i]^T x (leading dimension ld).
// The columns no member owns must hold zeros (finite at least: they meet zero weight rows).
// Members in increasing col, not overlapping, col_i + n_i <= ld (n = 0: skipped). x as in
// linear_group_bwd_autocast. Preconditions (the caller's): M > 0, K > 0, ld > 0; outputs do not
// overlap inputs or each other.
// w_stacked (may be null): W itself, when the caller holds the members' bf16 weights stacked
// already — member i's copy at rows [col_i, col_i + n_i) and no other rows (the members cover
// [0, ld) without gaps: Bf16WeightCache::bf16_pair's gate | up copies) — the dX GEMM reads it in
// place; else the members' copies (or f32 weights rounded) are stacked into scratch here.
void linear_group_bwd_packed(const uint16_t* dy, int64_t ld, const PackedBwdMember* members,
                             int64_t count, const float* x, const uint16_t* x_bf16, int64_t M,
                             int64_t K, float* dx, bool accumulate_dx,
                             const uint16_t* w_stacked = nullptr);

// The SwiGLU gate/up backward's packed layout (ops::swiglu_gate_up_backward): dgate in columns
// [0, I), dup in [off, off + I), off = round_up(I, kPackAlign), ld = 2·off; the columns
// [I, off) and [off + I, ld) are zero padding (none when I is a multiple of 128, as for Qwen's
// 4864 / 8960).
struct GateUpPacking {
  int64_t off = 0, ld = 0;
};
inline GateUpPacking gate_up_packing(int64_t I) {
  const int64_t off = (I + kPackAlign - 1) / kPackAlign * kPackAlign;
  return {off, 2 * off};
}

// silu_mul_bwd_bf16 (dout f32) or silu_mul_bwd_bf16_dout (dout_bf16; exactly one of the two
// non-null) over gate / up / dout [M, I], writing dgate row t to packed[t, 0:I) and dup row t to
// packed[t, off:off+I) of the bf16 buffer packed [M, ld] (16-byte aligned), and zeros to the
// padding columns [I, off) and [off + I, ld). Values bitwise those kernels' (silu_bf16.cu: the same
// body, only the store addresses differ). Needs off >= I, ld >= off + I.
void silu_mul_bwd_bf16_packed(const float* dout, const uint16_t* dout_bf16, const uint16_t* gate,
                              const uint16_t* up, int64_t M, int64_t I, uint16_t* packed,
                              int64_t off, int64_t ld);

// linear_bwd_autocast for every member with one dX GEMM: dx [M, K] (null: not computed) =
// (accumulate_dx ? dx : 0) + Σ_i dy_i · w_i over the packed operands; dW_i += dy_i^T x and
// db_i += column sums of dy_i as linear_bwd_autocast computes them. x is f32 (rounded to bf16 once
// for all members) or, when x_bf16 is non-null, already bf16 (read as is; copied to aligned
// scratch when off 256-byte alignment). Preconditions (the caller's): M > 0, K > 0, count >= 1,
// Σ n_i > 0 (members with n = 0 are skipped); outputs do not overlap inputs or each other.
void linear_group_bwd_autocast(const LinearGroupBwdMember* members, int64_t count, const float* x,
                               const uint16_t* x_bf16, int64_t M, int64_t K, float* dx,
                               bool accumulate_dx);

}  // namespace gyre::cuda
