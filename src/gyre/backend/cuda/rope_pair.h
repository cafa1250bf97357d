// RoPE on q and k in one launch (rope_pair.cu; ops::rope_qk_ in backend/fused_rope_ops.h): the
// decode step rotates q [T, Hq, D] and k [T, Hkv, D] with the same positions and tables, which
// rows.cu's rope does in two launches. Each element's arithmetic is rope_kernel's (same expression
// on the same values), so the result is bitwise that of rope(q) then rope(k) (forward rotation).
#pragma once
#include <cstdint>

namespace gyre::cuda {

void rope_qk(float* q, int64_t Hq, float* k, int64_t Hkv, int64_t tokens, int64_t D,
             const int32_t* positions, const float* cos, const float* sin);

}  // namespace gyre::cuda
