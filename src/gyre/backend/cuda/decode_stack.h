// The decoder layers of a batch-1 decode step in ONE persistent kernel (decode_stack.cu): the
// rollout engine's latency-bound case (issue 7: "decode step at batch 1 within 1.5x of (weight
// bytes + KV bytes) / 3.3 TB/s"), where ~6 dependent launches a layer of a few microseconds each
// left the step at ~2.9x its bound on Qwen2.5-0.5B.
//
// What it computes, for every layer l (x is the residual stream, one row of H floats, in place):
//   q, k, v = linear_gemv_bf16_group_rms(x, input_norm_l, {wq, wk, wv})       (gemv_fused.h)
//   attn    = rope_paged_attention_bf16_decode(q, k, v, ..., k_cache_l, v_cache_l)  (paged_bf16.h)
//   x       = linear_gemv_bf16_residual(attn, wo, bo, x)
//   act     = linear_gemv_bf16_silu_mul_rms(x, post_norm_l, wg, bg, wu, bu)
//   x       = linear_gemv_bf16_residual(act, wd, bd, x)
// BITWISE: every output column is computed in the f32 operations of those kernels (gemv::split_for
// warps per column in the same per-lane order, the same butterfly and warp order, the same bias,
// SiLU·mul and residual expressions, the RMSNorm's rstd in rms_row.cuh's 256-thread summation
// order), the attention runs paged_bf16_attn_cta.cuh's CTAs with the same split plan, and the
// split combine runs paged_bf16_combine.cu's 256-thread order. So x, the KV cache and every
// logit after it are the bits of the per-op fused decode (the DecodeStack GPU tests compare them).
//
// Status: correct (bitwise, tests above) but SLOWER than the per-op decode on an H200
// (docs/cuda.md, "Batch-1 decode stack"), so ops::decode_stack_ runs it only when switched on.
//
// How: one CTA per SM (co-resident: a cooperative launch), grid-wide barriers between the
// dependent stages, and the weights streamed by each CTA's thread 0 into a shared-memory ring with
// bulk async copies (cp.async.bulk + mbarrier) as far ahead as the ring allows — ACROSS stage
// boundaries, so the next stages' weight bytes arrive while the CTA waits at a barrier or attends.
// A CTA owns a fixed contiguous range of each linear's output columns.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// One decoder layer's operands: bf16 weights [out, in] row-major (16-byte aligned rows: in % 8 ==
// 0), f32 biases (null: none) and norm weights (16-byte aligned), and the layer's KV cache as
// paged_bf16.h lays it out.
struct DecodeStackLayer {
  const float* input_norm = nullptr;
  const uint16_t* wq = nullptr;
  const uint16_t* wk = nullptr;
  const uint16_t* wv = nullptr;
  const float* bq = nullptr;
  const float* bk = nullptr;
  const float* bv = nullptr;
  const uint16_t* wo = nullptr;
  const float* bo = nullptr;
  const float* post_norm = nullptr;
  const uint16_t* wg = nullptr;
  const uint16_t* wu = nullptr;
  const float* bg = nullptr;
  const float* bu = nullptr;
  const uint16_t* wd = nullptr;
  const float* bd = nullptr;
  uint16_t* k_cache = nullptr;
  uint16_t* v_cache = nullptr;
};

constexpr int kDecodeStackMaxLayers = 64;

struct DecodeStackArgs {
  int64_t layers = 0, H = 0, Hq = 0, Hkv = 0, D = 0, I = 0;
  double eps = 0;   // the RMSNorms' (the op's float eps widened, as RmsPrologue::eps)
  float scale = 0;  // attention scale (head_dim^-0.5)
  const DecodeStackLayer* layer = nullptr;  // host array [layers]
  float* x = nullptr;                       // [H] f32, the residual stream (in and out)
  // The one new token's attention inputs, as rope_paged_attention_bf16_decode takes them with B
  // = 1.
  const int32_t* positions = nullptr;
  const int32_t* slot_mapping = nullptr;
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* kv_lens = nullptr;
  const int32_t* page_indptr = nullptr;
  const int32_t* page_indices = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t page_size = 0, max_kv_len = 0;
  // Profiling (bench_decode_stack_gpu): when set, [gridDim.x][trace_stages][7] int64 — per CTA
  // and stage {kind (0 q/k/v, 1 o, 2 gate/up, 3 down, 4 attention, 5 combine), clock64() at the
  // stage's start, after its input row is staged, before its grid barrier, after it, then thread
  // 0's clocks waiting for weight chunks and issuing their copies}.
  long long* trace = nullptr;
  int64_t trace_stages = 0;
  // Profiling only (wrong results): 1 skips the GEMV arithmetic (the weight stream and the barriers
  // alone), 2 skips waiting for the weight copies (the arithmetic on whatever the ring holds).
  int probe = 0;
};

// Whether decode_stack_bf16 takes these sizes (host arithmetic only): 1..64 layers, head dim 64 or
// 128 with rope_paged_attention_bf16_supported heads, every linear's input a multiple of 8, one
// output column of each linear fitting a ring slot, and the device holding one CTA per SM.
bool decode_stack_supported(int64_t layers, int64_t H, int64_t Hq, int64_t Hkv, int64_t D,
                            int64_t I);

// The layers of one batch-1 decode step (file comment); scratch from the device pool. Throws
// Error(invalid_argument) for unsupported sizes or misaligned operands.
void decode_stack_bf16(const DecodeStackArgs& a);

}  // namespace gyre::cuda
