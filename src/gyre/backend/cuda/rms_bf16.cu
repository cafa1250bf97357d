// RMSNorm with a bf16 output (fused_gemm.h's rms_norm_fwd_bf16): the input norm of the autocast
// GEMMs past the decode GEMV's rows, where rms_norm followed by one f32 -> bf16 cast per linear
// becomes one launch.
//
// Bitwise contract: the f32 normed value is rows.cu's rms_fwd_kernel's — rms_row.cuh's `normed`
// and row_rstd's arithmetic at its block size (rms::kThreads), replayed by one warp per row (the
// kernel's comment says how), so every partial sum covers the same elements in the same order and
// the reduction adds lanes and warps in the same order; the grid size does not enter a row's
// arithmetic. Its bf16 rounding is elementwise.cu's f32_to_bf16
// expression (__float2bfloat16_rn: round to nearest even), so yb holds exactly the bits
// f32_to_bf16 makes of rms_norm_fwd's y, NaN included.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "gyre/backend/cuda/bf16_bits.cuh"
#include "gyre/backend/cuda/fused_gemm.h"
#include "gyre/backend/cuda/rms_row.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

// rms_fwd_kernel's arithmetic with the bf16 store added and the f32 stores optional (y, rstd may be
// null), one WARP per row instead of one 256-thread block: a block of rms::kThreads threads
// reduces one short row through two __syncthreads and a 16-step shuffle chain, so at H = 896-1536
// the kernel was latency-bound (H200: 52 us for 16384 x 896, ~2.4x the bytes' time). Lane l plays
// the block's threads v·32 + l for v = 0 .. kVirtualWarps-1: it keeps their f64 partial sums, each
// over the same elements (c ≡ v·32 + l mod kThreads) in the same increasing order with the same
// __fma_rn; then each virtual warp's 32 sums go through block_sum's xor butterfly (the same lane
// pairs and order, so lane 0 gets the bits that block's warp v got), and the warp sums are added in
// order from 0.0, as block_sum adds part[0..7]. So rstd — and every normed element — is bitwise
// rms_fwd_kernel's, and the grid's shape never enters a row's arithmetic.
constexpr int kVirtualWarps = rms::kThreads / 32;
constexpr int kWarpsPerBlock = 8;
// Rows from which the warp kernel runs: enough warps (16 per SM on an H200) to keep every SM's
// loads in flight; below, the block kernel. Either gives the same bits.
constexpr int64_t kWarpKernelMinRows = 2048;

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    rms_bf16_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t R, int64_t H,
                    double eps, uint16_t* __restrict__ yb, float* __restrict__ y,
                    float* __restrict__ rstd, bool vec4) {
  const int lane = int(threadIdx.x & 31);
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < R; r += stride) {
    const float* xr = x + r * H;
    double ss[kVirtualWarps];
#pragma unroll
    for (int v = 0; v < kVirtualWarps; ++v) ss[v] = 0;
    for (int64_t base = 0; base < H; base += rms::kThreads) {
#pragma unroll
      for (int v = 0; v < kVirtualWarps; ++v) {
        const int64_t c = base + v * 32 + lane;
        if (c < H) {
          const double d = double(xr[c]);
          ss[v] = __fma_rn(d, d, ss[v]);
        }
      }
    }
    double t = 0;
#pragma unroll
    for (int v = 0; v < kVirtualWarps; ++v) {
      double s = ss[v];
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      t += __shfl_sync(0xffffffffu, s, 0);  // block_sum stores lane 0's value
    }
    const float rs = float(1.0 / sqrt(t / double(H) + eps));
    if (rstd && lane == 0) rstd[r] = rs;
    // Elementwise from here: any mapping of elements to lanes gives the same values.
    if (vec4) {
      const float4* x4 = reinterpret_cast<const float4*>(xr);
      const float4* w4 = reinterpret_cast<const float4*>(w);
      for (int64_t c4 = lane; c4 < H / 4; c4 += 32) {
        const float4 xv = x4[c4], wv = w4[c4];
        const float o0 = rms::normed(xv.x, rs, wv.x), o1 = rms::normed(xv.y, rs, wv.y),
                    o2 = rms::normed(xv.z, rs, wv.z), o3 = rms::normed(xv.w, rs, wv.w);
        reinterpret_cast<uint2*>(yb + r * H)[c4] = bf16_rn_pack4(o0, o1, o2, o3);
        if (y) reinterpret_cast<float4*>(y + r * H)[c4] = make_float4(o0, o1, o2, o3);
      }
    } else {
      for (int64_t c = lane; c < H; c += 32) {
        const float v = rms::normed(xr[c], rs, w[c]);
        yb[r * H + c] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
        if (y) y[r * H + c] = v;
      }
    }
  }
}

// rms_bf16_kernel with the row held in registers as float4s, for H % 4 == 0, H <= 128·kF4 and
// aligned rows (session 22: the loop kernel moved 150 MB in 58 us at 4 x 4096 rows of H = 1536,
// ~2.6 TB/s: eight scalar loads in flight per lane, then a second read of the row). Lane l loads
// float4 m = l + 32·j (j < kF4) of the row, all at once, and writes each output group from the
// registers holding its x. The same bits as the block kernel, by this mapping: element c = 4m + i
// belongs to the block kernel's thread c mod 256 = 4·l + i + 128·(j mod 2) (4·l + i < 128), so
// lane l holds exactly eight of that block's threads — ss[p][i] for thread 4·l + i + 128·p — and
// visits each one's elements in increasing order (j of one parity increasing), with the same
// __fma_rn from 0.0. block_sum's butterfly over warp w = t / 32 (w = l / 8 + 4·p) adds lanes
// v and v ^ o for o = 16, 8, 4, 2, 1; that thread's lane in its warp is 4·(l mod 8) + i, so
// o = 16, 8, 4 pair real lanes l ^ 4, l ^ 2, l ^ 1 (inside the 8-lane group) and o = 2, 1 pair
// registers i ^ 2, i ^ 1 of the same lane, in that order (a + b = b + a exactly, so whichever
// member of a pair computes the sum gets block_sum's bits). The eight warp sums are then added
// in order from 0.0 as block_sum adds part[0..7].
// Three blocks per SM (24 warps, 80 registers) where the row fits without spilling (kF4 <= 12,
// H <= 1536), else two.
template <int kF4>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kF4 <= 12 ? 3 : 2)
    rms_bf16_vec_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t R, int H,
                        double eps, uint16_t* __restrict__ yb, float* __restrict__ y,
                        float* __restrict__ rstd) {
  static_assert(kVirtualWarps == 8, "the lane mapping assumes 256-thread blocks");
  const int lane = int(threadIdx.x & 31);
  const int H4 = H / 4;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); r < R; r += stride) {
    const float4* x4 = reinterpret_cast<const float4*>(x + r * H);
    float4 xv[kF4];
#pragma unroll
    for (int j = 0; j < kF4; ++j) {
      const int m = lane + 32 * j;
      xv[j] = m < H4 ? x4[m] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    double ss[2][4];
#pragma unroll
    for (int p = 0; p < 2; ++p)
#pragma unroll
      for (int i = 0; i < 4; ++i) ss[p][i] = 0;
#pragma unroll
    for (int j = 0; j < kF4; ++j) {
      if (lane + 32 * j >= H4) break;  // m grows with j: no later group exists either
      double* s = ss[j & 1];
      const double d0 = double(xv[j].x), d1 = double(xv[j].y), d2 = double(xv[j].z),
                   d3 = double(xv[j].w);
      s[0] = __fma_rn(d0, d0, s[0]);
      s[1] = __fma_rn(d1, d1, s[1]);
      s[2] = __fma_rn(d2, d2, s[2]);
      s[3] = __fma_rn(d3, d3, s[3]);
    }
    // block_sum's butterfly levels 16, 8, 4 (real lanes), then 2, 1 (registers).
#pragma unroll
    for (int o = 4; o > 0; o >>= 1)
#pragma unroll
      for (int p = 0; p < 2; ++p)
#pragma unroll
        for (int i = 0; i < 4; ++i) ss[p][i] += __shfl_xor_sync(0xffffffffu, ss[p][i], o);
    double pair_sum[2];  // the two virtual warps' sums of this lane
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const double a = ss[p][0] + ss[p][2], b = ss[p][1] + ss[p][3];  // level 2 (lanes i, i ^ 2)
      pair_sum[p] = a + b;                                            // level 1 (i = 0 with 1)
    }
    double t = 0;
#pragma unroll
    for (int v = 0; v < kVirtualWarps; ++v)  // part[v]: warp v = lanes 8·(v mod 4), parity v / 4
      t += __shfl_sync(0xffffffffu, pair_sum[v / 4], 8 * (v % 4));
    const float rs = float(1.0 / sqrt(t / double(H) + eps));
    if (rstd && lane == 0) rstd[r] = rs;
#pragma unroll
    for (int j = 0; j < kF4; ++j) {
      const int m = lane + 32 * j;
      if (m >= H4) break;
      const float4 wv = w4[m];
      const float o0 = rms::normed(xv[j].x, rs, wv.x), o1 = rms::normed(xv[j].y, rs, wv.y),
                  o2 = rms::normed(xv[j].z, rs, wv.z), o3 = rms::normed(xv[j].w, rs, wv.w);
      reinterpret_cast<uint2*>(yb + r * H)[m] = bf16_rn_pack4(o0, o1, o2, o3);
      if (y) reinterpret_cast<float4*>(y + r * H)[m] = make_float4(o0, o1, o2, o3);
    }
  }
}

// rms_bf16_vec_kernel<kF4> for the smallest kF4 with H <= 128·kF4, kF4 <= kMaxF4; else null.
constexpr int kMaxF4 = 16;  // H <= 2048: 64 floats of the row per lane
template <int kF4 = 1>
auto* vec_kernel_for(int64_t H) {
  if constexpr (kF4 > kMaxF4) {
    return static_cast<decltype(&rms_bf16_vec_kernel<1>)>(nullptr);
  } else {
    return H <= int64_t(kF4) * 128 ? &rms_bf16_vec_kernel<kF4> : vec_kernel_for<kF4 + 1>(H);
  }
}

// The block-per-row kernel (rms_fwd_kernel with the bf16 store added): the faster one when the
// rows are few (a batched decode step's 9-256 rows: one warp walking a whole row would take
// H / 256 dependent rounds of loads where a block takes one). Bitwise the warp kernel.
__global__ void __launch_bounds__(rms::kThreads)
    rms_bf16_kernel_block(const float* x, const float* w, int64_t R, int64_t H, double eps,
                          uint16_t* yb, float* y, float* rstd) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * H;
    const float rs = rms::row_rstd(xr, H, eps);
    if (rstd && threadIdx.x == 0) rstd[r] = rs;
    for (int64_t c = threadIdx.x; c < H; c += rms::kThreads) {
      const float v = rms::normed(xr[c], rs, w[c]);
      yb[r * H + c] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
      if (y) y[r * H + c] = v;
    }
  }
}

bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

}  // namespace

void rms_norm_fwd_bf16(const float* x, const float* w, int64_t R, int64_t H, double eps,
                       uint16_t* yb, float* y, float* rstd) {
  if (R == 0) return;
  if (R < kWarpKernelMinRows) {  // one block per row (grid-stride past 65535 rows)
    const unsigned blocks = unsigned(std::min<int64_t>(R, 65535));
    rms_bf16_kernel_block<<<blocks, rms::kThreads, 0, stream()>>>(x, w, R, H, eps, yb, y, rstd);
    GYRE_CUDA_LAUNCHED("rms_norm_fwd_bf16");
    return;
  }
  // A warp per row (grid-stride past 65535 blocks of 8 rows). Rows of H % 4 == 0 with 16-byte
  // (yb: 8-byte) aligned buffers: held in registers up to H = 2048, else loaded as float4 by the
  // loop kernel; any other rows through the loop kernel's scalar path.
  const bool vec4 =
      H % 4 == 0 && aligned(x, 16) && aligned(w, 16) && aligned(yb, 8) && (!y || aligned(y, 16));
  const int64_t need = (R + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const unsigned blocks = unsigned(std::max<int64_t>(1, std::min<int64_t>(need, 65535)));
  if (auto* regs = vec4 ? vec_kernel_for(H) : nullptr) {
    regs<<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(x, w, R, int(H), eps, yb, y, rstd);
    GYRE_CUDA_LAUNCHED("rms_norm_fwd_bf16");
    return;
  }
  rms_bf16_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(x, w, R, H, eps, yb, y, rstd, vec4);
  GYRE_CUDA_LAUNCHED("rms_norm_fwd_bf16");
}

}  // namespace gyre::cuda
