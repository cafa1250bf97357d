// CPU reference kernels of the MoE dispatch ops (backend/moe_ops.h): a stable counting sort of the
// routing slots by expert, the weighted sum back to tokens (ascending j) and its backward. Plain
// functions over raw pointers; indices are trusted here (the ops check them first).
#pragma once
#include <cstdint>

namespace gyre::cpu {

// N = T·k slots of indices [N] (values in [0, E)) -> perm [N], pos [N], rows [N], offsets [E+1].
void moe_permute(const int32_t* indices, int64_t N, int64_t k, int64_t E, int32_t* perm,
                 int32_t* pos, int32_t* rows, int32_t* offsets);

// out[t] = Σ_j w[t·k+j] y[pos[t·k+j]] (w null: 1), ascending j from zero.
template <typename T>
void moe_unpermute(const T* y, const int32_t* pos, const T* w, int64_t tokens, int64_t k, int64_t H,
                   T* out);

// dy[p] = w[perm[p]] dout[perm[p] / k]; dw[perm[p]] = <dout[perm[p] / k], y[p]> (f64). dy or dw
// may be null (not computed).
template <typename T>
void moe_unpermute_bwd(const T* dout, const T* y, const int32_t* perm, const T* w, int64_t tokens,
                       int64_t k, int64_t H, T* dy, T* dw);

}  // namespace gyre::cpu
