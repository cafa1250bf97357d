// Pieces shared by the bf16 FlashAttention-2 kernels (flash_bf16_fwd.cu, flash_bf16_bwd.cu;
// declared in kernels.h): causal varlen GQA attention on tensor cores with mma.sync.m16n8k16 (bf16
// in, f32 accumulate), ldmatrix fragment loads and cp.async tile copies. This is the speed path of
// the CUDA backend; attention.cu is the f32 exact path.
//
// Blocks run tile-major over the whole grid (block_pos): the tiles with the most causal work start
// first across all sequences and heads (H200, 4 x 4096 causal: D=128 fwd 205 -> 229, bwd 179 ->
// 186 TFLOP/s; Qwen2.5-0.5B's 14/2 heads of 64: fwd 165 -> 185, bwd 121 -> 157, against the plain
// per-(sequence, head) grid order, which was removed).
// Invariants: D is 64 or 128; rows beyond a sequence are zero-filled in shared memory and masked;
// packed rows are 16-byte aligned because D * 2 bytes is a multiple of 16. Shared-memory rows are
// padded by 8 bf16 (stride D + 8) so ldmatrix reads hit distinct banks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace gyre::cuda::flash_bf16_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const uint16_t* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const uint16_t* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void cp_async16(uint16_t* s, const uint16_t* g, bool valid) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(s));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(g),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Copies rows [row0, row0 + R) of a [*, ld] bf16 matrix (columns [0, D)) into shared memory with
// row stride D + 8; rows at or beyond L are zero-filled.
template <int R, int D, int kThreads>
__device__ __forceinline__ void load_rows(uint16_t* s, const uint16_t* g, int64_t ld, int row0,
                                          int L) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < R * kChunks; c += kThreads) {
    const int r = c / kChunks, cc = c % kChunks;
    const bool ok = row0 + r < L;
    cp_async16(s + r * (D + 8) + cc * 8, ok ? g + int64_t(row0 + r) * ld + cc * 8 : g, ok);
  }
}

// A block's (tile, y, z) with the linear block id running tile-major, so the tiles with the most
// causal work start first over the whole grid (all sequences and heads), not per (sequence, head).
struct BlockPos {
  int tile, y, z;
};
__device__ __forceinline__ BlockPos block_pos() {
  const int gy = int(gridDim.y), nyz = gy * int(gridDim.z);
  const int lin = int(blockIdx.x) + int(gridDim.x) * (int(blockIdx.y) + gy * int(blockIdx.z));
  return {lin / nyz, (lin % nyz) % gy, (lin % nyz) / gy};
}

}  // namespace gyre::cuda::flash_bf16_detail
