// The RMSNorm prologue of the fused decode GEMVs (gemv_fused.cu's *_rms kernels and
// gemv_stream.cu's streamed gate/up): each block recomputes the row rstds of x with rms_row.cuh's
// arithmetic at its block size rms::kThreads, so the folded norm is bitwise rms_norm's.
#pragma once
#include <cstdint>

#include "gyre/backend/cuda/gemv_fused.h"
#include "gyre/backend/cuda/pdl.cuh"
#include "gyre/backend/cuda/rms_row.cuh"

namespace gyre::cuda {

// The RMSNorm prologue, gemv::column_sums' `prologue` argument: rs[m] = rstd of row m of x
// (rms_row.cuh; block-wide: every thread of the block calls it), and block 0 also stores
// rms_norm's outputs where the caller asked for them. Without kNorm: nothing (rs is unused by
// dot_rows_impl<..., false>).
template <int M, bool kNorm>
struct RmsRstd {
  const float* x;
  const RmsPrologue& nrm;
  int64_t K;

  __device__ __forceinline__ void operator()(float (&rs)[M]) const {
    pdl_wait();  // x and the residual come from the previous kernels (pdl.cuh, NoPrologue)
#pragma unroll
    for (int m = 0; m < M; ++m) rs[m] = 0.0f;
    if constexpr (kNorm) {
      // Unrolled (M is a template constant), so rs stays in registers.
#pragma unroll
      for (int m = 0; m < M; ++m) rs[m] = rms::row_rstd(x + m * K, K, nrm.eps);
      if (blockIdx.x == 0) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (nrm.rstd && threadIdx.x == 0) nrm.rstd[m] = rs[m];
          if (nrm.xn)
            for (int64_t c = threadIdx.x; c < K; c += rms::kThreads)
              nrm.xn[m * K + c] = rms::normed(x[m * K + c], rs[m], nrm.w[c]);
        }
      }
    }
  }
};

}  // namespace gyre::cuda
