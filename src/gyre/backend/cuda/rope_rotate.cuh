// The RoPE rotation shared by every CUDA kernel that applies it (rows.cu's rope_kernel,
// rope_pair.cu's rope_qk_kernel, rope_kv_write.cu's fused decode kernel, paged_bf16_attention.cu's
// fused RoPE + KV write + attention), so they cannot drift apart: kernels that must be bitwise
// equal (ops::rope_qk_ and the fused RoPE + KV write against two ops::rope_ calls, the fused
// attention against the RoPE + KV write then the attention) run this one expression. HF's rotation:
// x cos + rotate_half(x) sin with rotate_half(x) = cat(-x2, x1), i.e. per pair (a, b) = (x[p], x[p
// + D/2]):
//   a' = a c - b s,   b' = b c + a s.
// The arithmetic is spelled with explicit round-to-nearest intrinsics (__fmul_rn, __fsub_rn,
// __fmaf_rn): plain `a * c - b * s` compiles to PTX mul/sub without a rounding modifier, which
// ptxas may fuse into an FMA or not depending on the surrounding kernel — measured on an H200:
// the fused RoPE + KV write and rows.cu's rope differed by one f32 ulp on a few elements. With the
// intrinsics every kernel computes a' = (a c) - (b s) with three roundings and b' = fma(b, c, a s),
// so they agree bitwise by construction (tests/gpu/backend/fused_linear_cuda_test.cc,
// rope_kv_write_cuda_test.cc check it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda::rope_detail {

// Work item i of a RoPE over x [tokens, H, D] (items [0, tokens * H * D/2)): the pair index p in
// [0, D/2), the (token, head) row th = token * H + head, and the table row of the token's position.
struct RopeItem {
  int64_t p, th, table_row;
};

__device__ __forceinline__ RopeItem rope_item(int64_t i, int64_t H, int64_t half,
                                              const int32_t* positions) {
  RopeItem it;
  it.p = i % half;
  it.th = i / half;
  const int64_t t = it.th / H;
  it.table_row = int64_t(positions[t]) * half + it.p;
  return it;
}

// (ai, bi) rotated by the angle with cosine c and sine s (negate s for the inverse rotation).
__device__ __forceinline__ void rope_rotate(float ai, float bi, float c, float s, float& a_out,
                                            float& b_out) {
  a_out = __fsub_rn(__fmul_rn(ai, c), __fmul_rn(bi, s));
  b_out = __fmaf_rn(bi, c, __fmul_rn(ai, s));
}

// In place on the pair (a[0], a[half]).
__device__ __forceinline__ void rope_rotate_pair(float* a, int64_t half, float c, float s) {
  const float ai = a[0], bi = a[half];
  float ao, bo;
  rope_rotate(ai, bi, c, s, ao, bo);
  a[0] = ao;
  a[half] = bo;
}

}  // namespace gyre::cuda::rope_detail
