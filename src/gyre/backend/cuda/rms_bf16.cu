// RMSNorm with a bf16 output (fused_gemm.h's rms_norm_fwd_bf16): the input norm of the autocast
// GEMMs past the decode GEMV's rows, where rms_norm followed by one f32 -> bf16 cast per linear
// becomes one launch.
//
// Bitwise contract: the f32 normed value is rows.cu's rms_fwd_kernel's — the same rms_row.cuh
// functions (row_rstd, normed) at the same block size (rms::kThreads), so thread t sums the same
// elements in the same order and the block reduction adds lanes and warps in the same order; the
// grid size does not enter a row's arithmetic. Its bf16 rounding is elementwise.cu's f32_to_bf16
// expression (__float2bfloat16_rn: round to nearest even), so yb holds exactly the bits
// f32_to_bf16 makes of rms_norm_fwd's y, NaN included.
#include <cuda_bf16.h>

#include <algorithm>

#include "gyre/backend/cuda/fused_gemm.h"
#include "gyre/backend/cuda/rms_row.cuh"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

// rms_fwd_kernel with the bf16 store added and the f32 stores optional (y, rstd may be null; the
// null tests are uniform across the block).
__global__ void __launch_bounds__(rms::kThreads)
    rms_bf16_kernel(const float* x, const float* w, int64_t R, int64_t H, double eps, uint16_t* yb,
                    float* y, float* rstd) {
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

}  // namespace

void rms_norm_fwd_bf16(const float* x, const float* w, int64_t R, int64_t H, double eps,
                       uint16_t* yb, float* y, float* rstd) {
  if (R == 0) return;
  // One block per row as rms_norm_fwd (grid-stride past 65535 rows).
  const unsigned blocks = unsigned(std::max<int64_t>(1, std::min<int64_t>(R, 65535)));
  rms_bf16_kernel<<<blocks, rms::kThreads, 0, stream()>>>(x, w, R, H, eps, yb, y, rstd);
  GYRE_CUDA_LAUNCHED("rms_norm_fwd_bf16");
}

}  // namespace gyre::cuda
