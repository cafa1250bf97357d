// Internal to hopper_gemm.cc / hopper_gemm.cu: the kernel's tile shape, its parameters and its
// launcher (the host side, tensor maps and checks, lives in hopper_gemm.cc).
#pragma once
#include <cuda.h>

#include <cstdint>

namespace gyre::cuda::hopper {

constexpr int kBM = 128;  // tile rows (two consumer warpgroups of 64)
constexpr int kBN = 256;  // tile columns of B (plain: 256 outputs; SwiGLU: 128 gate + 128 up)
constexpr int kBK = 64;   // K per stage: one 128-byte swizzled line of bf16
constexpr int kThreads = 384;
constexpr int kStageA = kBM * kBK * 2;          // 16 KB
constexpr int kStageB = kBN * kBK * 2;          // 32 KB
constexpr int kStageBytes = kStageA + kStageB;  // what each stage's TMA loads deliver
constexpr int kHalfB = (kBN / 2) * kBK * 2;     // one 128-row TMA box of B
constexpr int kGroupM = 16;  // tile rows per raster group (L2 reuse of A and B within a group)

struct Params {
  int M = 0, N = 0, K = 0;  // output rows, output columns, reduction length
  int tiles_m = 0, tiles_n = 0;
  int store_gate_up = 0;  // SwiGLU: also store the bf16 gate and up (TensorMaps::gate / up)
};

// The kernel's TMA descriptors: operands in 64 x 128 boxes (A; B's two halves: the same matrix
// for the plain GEMM, gate and up weights for SwiGLU), outputs in 64 x 64 boxes (out: C or act;
// gate / up: SwiGLU's optional bf16 gate and up, otherwise unused copies of out).
struct TensorMaps {
  CUtensorMap a, b0, b1, out, gate, up;
};

// Launches the kernel (SwiGLU or plain) on cuda::stream() with at most max_ctas persistent CTAs.
void launch(bool swiglu, const TensorMaps& m, const Params& p, int max_ctas);

}  // namespace gyre::cuda::hopper
