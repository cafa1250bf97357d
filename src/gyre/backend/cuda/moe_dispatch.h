// CUDA kernels of the MoE dispatch ops (moe_dispatch.cu; ops in backend/moe_ops.h). Same contracts
// as the CPU reference (backend/cpu/moe_dispatch.h), f32 only; indices are trusted (the ops check
// them first). Every launch goes to cuda::stream(); nothing synchronises the host, so the ops can
// be captured in a CUDA graph.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// Largest expert count moe_permute supports (its per-chunk histogram lives in shared memory).
constexpr int64_t kMoeMaxExperts = 8192;

// Stable counting sort of the N = T·k slots by expert: perm [N], pos [N], rows [N], offsets
// [E+1]; bitwise the CPU result.
void moe_permute(const int32_t* indices, int64_t N, int64_t k, int64_t E, int32_t* perm,
                 int32_t* pos, int32_t* rows, int32_t* offsets);

// out[t] = Σ_j w[t·k+j] y[pos[t·k+j]] (w null: 1), ascending j from zero.
void moe_unpermute(const float* y, const int32_t* pos, const float* w, int64_t tokens, int64_t k,
                   int64_t H, float* out);

// dy[p] = w[perm[p]] dout[perm[p] / k]; dw[perm[p]] = <dout[perm[p] / k], y[p]> (f64 sum). dy or
// dw may be null.
void moe_unpermute_bwd(const float* dout, const float* y, const int32_t* perm, const float* w,
                       int64_t tokens, int64_t k, int64_t H, float* dy, float* dw);

}  // namespace gyre::cuda
