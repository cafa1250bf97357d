// The own Hopper GEMM (hopper_gemm.cu): bf16 x bf16 with f32 accumulation on sm_90 tensor cores
// through TMA + wgmma, for products whose epilogue cuBLASLt cannot fuse. Operands are "K-major"
// row-major matrices, the layout of an activation x [M, K] and of an HF linear weight w [N, K].
// Every launch runs on the calling thread's stream (cuda::stream()).
#pragma once
#include <cstdint>

namespace gyre::cuda {

// Whether the kernels can run: an sm_90 device (the code is sm_90a SASS), 0 < M, N, K < 2^31,
// N and K multiples of 8 (16-byte rows for the TMA). Callers fall back to cuBLASLt otherwise.
bool hopper_gemm_supported(int64_t M, int64_t N, int64_t K);

// y [M, N] = bf16(x [M, K] · w [N, K]^T), the f32 sum rounded once (round to nearest even).
// Pointers 16-byte aligned; y may not overlap x or w.
void hopper_gemm_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, int64_t M, int64_t N,
                      int64_t K);

// The SwiGLU MLP's first half in one kernel: gate = bf16(x · wg^T), up = bf16(x · wu^T) (wg, wu
// [I, K]), act [M, I] = bf16(silu(gate) · up) evaluated as silu_mul_fwd_bf16 does (silu.cuh on the
// bf16 values), so act is bitwise silu_mul_fwd_bf16(gate, up). gate and up (each [M, I]) are
// written only when non-null (training keeps them for the backward). gate's bits equal
// hopper_gemm_bf16(x, wg) and up's hopper_gemm_bf16(x, wu).
void hopper_swiglu_bf16(const uint16_t* x, const uint16_t* wg, const uint16_t* wu, uint16_t* act,
                        uint16_t* gate, uint16_t* up, int64_t M, int64_t I, int64_t K);

}  // namespace gyre::cuda
