// Helpers shared by the fused-linear GPU tests (fused_linear_cuda_test.cc and its op-family files:
// fused_linear_group_, fused_swiglu_, fused_residual_ and fused_rms_cuda_test.cc): bitwise
// comparisons, kernel counts on the GEMV path and past it, the engine's decode setting, the bf16
// gate/up tensors and the SwiGLU's CPU reference.
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"

namespace gyre::gputest {

// got and want hold the same shape and the same f32 bits.
inline void expect_bitwise(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<float> g = cpu(got).to_vector(), w = cpu(want).to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  EXPECT_EQ(std::memcmp(g.data(), w.data(), g.size() * sizeof(float)), 0) << what;
}

// got and want hold the same bytes (any dtype).
inline void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  const Tensor g = cpu(got), w = cpu(want);
  ASSERT_EQ(g.nbytes(), w.nbytes()) << what;
  EXPECT_EQ(std::memcmp(g.raw(), w.raw(), g.nbytes()), 0) << what;
}

// kernels_launched(body) on the GEMV path (M <= 8); beyond it just runs body (the unfused GEMM
// path allocates scratch, which a capture may not) and returns 1.
inline size_t kernels_if_gemv(int64_t M, const std::function<void()>& body) {
  if (M <= 8) return kernels_launched(body);
  body();
  return 1;
}

struct Decode {  // the engine's decode setting: autocast with a bf16 weight cache
  ops::Bf16Autocast autocast;
  ops::UseBf16WeightCache use;
  explicit Decode(ops::Bf16WeightCache* c) : use(c) {}
};

// A bf16 [M, N] CUDA tensor: the autocast MLP's gate/up (ops::swiglu_gate_up_dtype), which the
// unfused reference writes with ops::linear.
inline Tensor bf16_act(int64_t M, int64_t N) {
  return Tensor::empty({M, N}, DType::bf16, Device::cuda);
}

// The CPU reference of a fused SwiGLU over bf16 gate/up: silu_mul of the f32 CPU products rounded
// to bf16. The GPU and the CPU sum in different orders, so a product lying within that f32 noise
// of a bf16 rounding boundary rounds to the neighbouring bf16 on one side (one ulp: <= 2^-7 of
// that element); the norm-relative bound is therefore 2^-8 (u), not the f32 1e-5 — the bitwise
// checks against the unfused ops carry the exactness.
constexpr double kBf16ActTol = 1.0 / 256;
inline Tensor swiglu_ref(const Tensor& gate_f32, const Tensor& up_f32) {
  Tensor out;
  ops::silu_mul(round_bf16(gate_f32), round_bf16(up_f32), out);
  return out;
}

// ---- past the GEMV's rows: the shared-input cuBLASLt GEMMs (backend/cuda/fused_gemm.h)

inline constexpr int64_t kGemmRows[] = {9, 64, 256, 300};

// The kernels of body's second run (the first caches the bf16 weights, builds the cuBLASLt plans
// and leaves the temporaries' blocks in the pool, so the capture allocates nothing); body then
// runs once more for real (kernels_launched).
inline size_t kernels_warm(const std::function<void()>& body) {
  body();
  return kernels_launched(body);
}

}  // namespace gyre::gputest
