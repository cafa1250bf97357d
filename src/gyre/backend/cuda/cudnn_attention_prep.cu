// The per-sequence index arrays of the cuDNN attention graphs (cudnn_attention.h).
#include "gyre/backend/cuda/cudnn_attention.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

namespace {

__global__ void prep_kernel(const int32_t* cu, int64_t B, int64_t Bp, int32_t q_row, int32_t kv_row,
                            int32_t lse_row, int32_t* seqlen, int32_t* off_q, int32_t* off_kv,
                            int32_t* off_lse) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i <= Bp;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t c = cu[i < B ? i : B];  // padding sequences start (and end) at T
    off_q[i] = c * q_row;                 // the caller checked T * row fits int32
    off_kv[i] = c * kv_row;
    off_lse[i] = c * lse_row;
    if (i < Bp) seqlen[i] = i < B ? cu[i + 1] - c : 0;
  }
}

}  // namespace

void cudnn_attention_prep(const int32_t* cu_seqlens, int64_t B, int64_t Bp, int32_t q_row,
                          int32_t kv_row, int32_t lse_row, int32_t* seqlen, int32_t* off_q,
                          int32_t* off_kv, int32_t* off_lse) {
  const int threads = 256;
  prep_kernel<<<grid_for(Bp + 1, threads), threads, 0, stream()>>>(
      cu_seqlens, B, Bp, q_row, kv_row, lse_row, seqlen, off_q, off_kv, off_lse);
  GYRE_CUDA_LAUNCHED("cudnn_attention_prep");
}

}  // namespace gyre::cuda
