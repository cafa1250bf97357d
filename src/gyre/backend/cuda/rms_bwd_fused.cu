// rms_norm_bwd_add (rms_bwd_fused.h): the decoder layer's RMSNorm backward, residual add and the
// bf16 rounding of the sum in one pass over the rows, instead of rms_norm_bwd's two passes over dy
// and x (dx, then the weight-gradient partials), add's re-read of dx and f32_to_bf16's re-read of
// the sum.
//
// Bitwise contract (tests/gpu/backend/rms_norm_backward_add_cuda_test.cc): every value is the
// composition's.
// - dx: each row's dot uses rows.cu's column-to-thread map (thread t of a 256-thread block owns
//   columns t, t + 256, ...), its per-thread order and block_sum's tree (rms_bwd::block_sum_n), and
//   each element is rms_bwd::dx_elem, then one rounded add of the residual (add's `a + b`), then
//   __float2bfloat16_rn (f32_to_bf16's expression). Loads are therefore scalar: float4 loads would
//   give a thread four adjacent columns and change the per-thread summation order of the dot (the
//   warps' scalar loads are still fully coalesced, 128 bytes per warp per array).
// - dw: one block owns one chunk of rms_bwd::kDwRowChunk rows and visits them in order, so the
//   partial it keeps per column (in the owning thread's registers) is dw_step over the chunk's rows
//   in row order from 0 — rows.cu's rms_dw_partial_kernel — and dw_finish adds the partials in
//   chunk order (rows.cu's finish kernel).
// The grid size never enters a value: blocks own whole rows (and whole chunks).
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/column_sums.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/rms_bwd_fused.h"
#include "gyre/backend/cuda/rms_bwd_row.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

using rms_bwd::kDwRowChunk;
using rms_bwd::kThreads;

// One pass from 64 chunks (8192 rows) up: measured on an H200 at H 896 / 1536 (bench_cuda_ops
// rms_bwd), one pass vs the row kernel + dw kernels took 74 / 110 vs 56 / 73 us at 4096 rows,
// 81 / 114 vs 82 / 114 at 8192, 101 / 145 vs 131 / 199 at 16384 and 193 / 290 vs 257 / 391 at
// 32768 (the composition: 209 / 314 us at 16384).
std::atomic<int64_t> g_min_fused_chunks{64};

struct BwdAddArgs {
  const float* dy;
  const float* x;
  const float* w;
  const float* rstd;
  const float* res;  // may equal dx
  int64_t R, H;
  float* dx;
  uint16_t* dx16;  // may be null
  double* part;    // [chunks, H] weight-gradient partials (one-pass kernel only)
};

// Asks L2 for the 128-byte lines of rows [r0, r1) of one [R, H] array, spread over the block's
// threads: issued while the current group is reduced, so the next group's loads find L2.
__device__ __forceinline__ void prefetch_rows_l2(const float* base, int64_t r0, int64_t r1,
                                                 int64_t H) {
  const char* p = reinterpret_cast<const char*>(base + r0 * H);
  const char* e = reinterpret_cast<const char*>(base + r1 * H);
  p -= reinterpret_cast<uintptr_t>(p) & 127;
  for (p += int64_t(threadIdx.x) * 128; p < e; p += int64_t(kThreads) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

__device__ __forceinline__ void store_dx(const BwdAddArgs& a, int64_t i, float v) {
  a.dx[i] = v;
  if (a.dx16) a.dx16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// The one-pass kernel: block b owns chunk b (rows [b·128, b·128 + 128) ∩ [0, R)), thread t the
// columns t + k·256 for k < kVpt (kVpt·256 >= H). Rows go in groups of kRows: all loads of a group
// are issued before its dots are reduced (memory-level parallelism: a chunk's block is alone on its
// SM for the sizes that take this path), then the group's rows are finished in row order, which is
// the order the weight-gradient partials need.
template <int kVpt, int kRows>
__global__ void __launch_bounds__(kThreads) rms_bwd_add_chunk_kernel(const BwdAddArgs a) {
  const int64_t H = a.H, R = a.R, chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  float wv[kVpt];
#pragma unroll
  for (int k = 0; k < kVpt; ++k) {
    const int64_t c = threadIdx.x + int64_t(k) * kThreads;
    wv[k] = c < H ? a.w[c] : 0.0f;
  }
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t r0 = chunk * kDwRowChunk, r1 = min(R, r0 + kDwRowChunk);
    double acc[kVpt];
#pragma unroll
    for (int k = 0; k < kVpt; ++k) acc[k] = 0;
    for (int64_t g = r0; g < r1; g += kRows) {
      float dyv[kRows][kVpt], xv[kRows][kVpt], rv[kRows][kVpt], rs[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        const bool row_ok = r < r1;
        rs[i] = row_ok ? a.rstd[r] : 0.0f;
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          const bool ok = row_ok && c < H;
          dyv[i][k] = ok ? a.dy[r * H + c] : 0.0f;
          xv[i][k] = ok ? a.x[r * H + c] : 0.0f;
          rv[i][k] = ok ? a.res[r * H + c] : 0.0f;
        }
      }
      // The next group's rows, into L2 while this group is reduced and stored (H200, R 16384:
      // 119 -> 101 us at H 896, 183 -> 145 us at H 1536; prefetching 2 to 6 groups ahead was
      // slower than 1).
      if (g + kRows < r1) {
        const int64_t n0 = g + kRows, n1 = min(r1, g + 2 * kRows);
        prefetch_rows_l2(a.dy, n0, n1, H);
        prefetch_rows_l2(a.x, n0, n1, H);
        prefetch_rows_l2(a.res, n0, n1, H);
      }
      // Each row's per-thread dot over the thread's columns in increasing order (rows past r1
      // reduce zeros and are never stored).
      double dot[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        dot[i] = 0;
#pragma unroll
        for (int k = 0; k < kVpt; ++k)
          if (threadIdx.x + int64_t(k) * kThreads < H)
            dot[i] = rms_bwd::dot_step(dot[i], dyv[i][k], wv[k], rms_bwd::x_hat(xv[i][k], rs[i]));
      }
      rms_bwd::block_sum_n(dot);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = g + i;
        if (r >= r1) break;
        const float mean = rms_bwd::row_mean(dot[i], H);
#pragma unroll
        for (int k = 0; k < kVpt; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * kThreads;
          if (c >= H) continue;
          const float xh = rms_bwd::x_hat(xv[i][k], rs[i]);
          const float d = rms_bwd::dx_elem(dyv[i][k], wv[k], xh, rs[i], mean);
          store_dx(a, r * H + c, __fadd_rn(d, rv[i][k]));
          acc[k] = rms_bwd::dw_step(acc[k], dyv[i][k], xh);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kVpt; ++k) {
      const int64_t c = threadIdx.x + int64_t(k) * kThreads;
      if (c < H) a.part[chunk * H + c] = acc[k];
    }
  }
}

// Any H, no weight gradient: rows.cu's rms_bwd_dx_kernel (a block per row, the same loops) with
// the residual add and the bf16 store in its output loop.
__global__ void __launch_bounds__(kThreads) rms_bwd_add_row_kernel(const BwdAddArgs a) {
  const int64_t H = a.H;
  for (int64_t r = blockIdx.x; r < a.R; r += gridDim.x) {
    const float* xr = a.x + r * H;
    const float* dyr = a.dy + r * H;
    const float rs = a.rstd[r];
    double dot[1] = {0};
    for (int64_t c = threadIdx.x; c < H; c += kThreads)
      dot[0] = rms_bwd::dot_step(dot[0], dyr[c], a.w[c], rms_bwd::x_hat(xr[c], rs));
    rms_bwd::block_sum_n(dot);
    const float mean = rms_bwd::row_mean(dot[0], H);
    for (int64_t c = threadIdx.x; c < H; c += kThreads) {
      const float d = rms_bwd::dx_elem(dyr[c], a.w[c], rms_bwd::x_hat(xr[c], rs), rs, mean);
      store_dx(a, r * H + c, __fadd_rn(d, a.res[r * H + c]));
    }
  }
}

// Columns per thread of the one-pass kernel's instantiations, and the rows each loads at once
// (about 24-32 values per array and thread in flight, within the register budget).
template <int kVpt, int kRows>
void launch_chunk(const BwdAddArgs& a, int64_t chunks) {
  const unsigned grid = unsigned(std::min<int64_t>(chunks, 65535));
  rms_bwd_add_chunk_kernel<kVpt, kRows><<<grid, kThreads, 0, stream()>>>(a);
}

// The widest row the one-pass kernel keeps in registers, in columns per thread (H <= 8192).
constexpr int64_t kMaxVpt = 32;

// Launches the one-pass kernel for vpt = ceil(H / 256) <= kMaxVpt columns per thread.
void launch_chunk_for(int64_t vpt, const BwdAddArgs& a, int64_t chunks) {
  if (vpt <= 1) return launch_chunk<1, 8>(a, chunks);
  if (vpt <= 2) return launch_chunk<2, 8>(a, chunks);
  if (vpt <= 4) return launch_chunk<4, 8>(a, chunks);
  if (vpt <= 6) return launch_chunk<6, 4>(a, chunks);
  if (vpt <= 8) return launch_chunk<8, 4>(a, chunks);
  if (vpt <= 12) return launch_chunk<12, 2>(a, chunks);
  if (vpt <= 16) return launch_chunk<16, 2>(a, chunks);
  if (vpt <= 24) return launch_chunk<24, 1>(a, chunks);
  static_assert(kMaxVpt == 32);
  return launch_chunk<32, 1>(a, chunks);
}

}  // namespace

int64_t set_rms_bwd_add_min_fused_chunks(int64_t chunks) {
  return g_min_fused_chunks.exchange(chunks);
}

int64_t rms_bwd_add_min_fused_chunks() { return g_min_fused_chunks.load(); }

void rms_norm_bwd_add(const float* dy, const float* x, const float* w, const float* rstd,
                      const float* res, int64_t R, int64_t H, float* dx, float* dw,
                      uint16_t* dx_bf16) {
  if (R == 0 || H == 0) return;
  BwdAddArgs a{dy, x, w, rstd, res, R, H, dx, dx_bf16, nullptr};
  const int64_t chunks = (R + kDwRowChunk - 1) / kDwRowChunk;
  const int64_t vpt = (H + kThreads - 1) / kThreads;
  if (dw && vpt <= kMaxVpt && chunks >= g_min_fused_chunks.load(std::memory_order_relaxed)) {
    DeviceBuffer part(size_t(chunks * H) * sizeof(double));  // stream-ordered reuse after free
    a.part = part.as<double>();
    launch_chunk_for(vpt, a, chunks);
    GYRE_CUDA_LAUNCHED("rms_norm_bwd_add");
    // rms_bwd::dw_finish's arithmetic (chunks added in order from 0.0, then to dw in f64, rounded
    // to f32) is column_sums_add's finishing stage term for term: its shared-memory kernel.
    colsum::finish_add(a.part, chunks, H, dw);
    return;
  }
  const unsigned grid = unsigned(std::min<int64_t>(R, 65535));
  rms_bwd_add_row_kernel<<<grid, kThreads, 0, stream()>>>(a);
  GYRE_CUDA_LAUNCHED("rms_norm_bwd_add_rows");
  // The weight gradient from rms_norm_bwd's own kernels (they read only dy, x and rstd).
  if (dw) rms_norm_bwd(dy, x, w, rstd, R, H, nullptr, dw);
}

}  // namespace gyre::cuda
