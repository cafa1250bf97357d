// The own Hopper GEMM (backend/cuda/hopper_gemm.h) on the device:
//  - exact: with small-integer operands every product and partial sum is exact in f32, so the
//    output must be the round-to-nearest-even bf16 of the exact integer dot product, whatever the
//    summation order — any mistake in the tile layout, the swizzle, the pipeline's stage
//    hand-over or the edge handling (M, N, K not multiples of the 128 x 256 x 64 tile) shows as a
//    wrong element. Shapes: one tile, ragged edges on every side, many tiles per CTA.
//  - random normal operands: within the accumulation-order bound of an f64 reference,
//    |y − ref| <= 2^-8·|ref| (the output rounding) + K·2^-22·Σ|x||w| (f32 sums in any order);
//  - SwiGLU: gate and up bitwise the plain kernel's x·wg^T and x·wu^T, act bitwise
//    silu_mul_fwd_bf16(gate, up), and act the same bits whether gate / up are written or not;
//  - shapes the kernel cannot take are reported by hopper_gemm_supported and rejected with
//    invalid_argument, as are null, misaligned and half-given (gate without up) operands.
// Skips without an sm_90 device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/hopper_gemm.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

using gputest::randn;
using gputest::small_ints;

#define SKIP_WITHOUT_HOPPER() \
  GYRE_SKIP_WITHOUT_GPU();    \
  if (!cuda::hopper_gemm_supported(8, 8, 8)) GTEST_SKIP() << "not an sm_90 (Hopper) device"

Tensor dev_bf16(const Tensor& host_f32) { return host_f32.to(DType::bf16).to(Device::cuda); }

Tensor dev_empty_bf16(int64_t rows, int64_t cols, uint16_t fill = 0x7FC1 /* a NaN */) {
  Tensor t = Tensor::empty({rows, cols}, DType::bf16, Device::cuda);
  std::vector<uint16_t> v(size_t(rows * cols), fill);
  GYRE_CUDA_CHECK(cudaMemcpy(t.raw(), v.data(), v.size() * 2, cudaMemcpyHostToDevice));
  return t;
}

std::vector<uint16_t> bits(const Tensor& t) {
  std::vector<uint16_t> v(size_t(t.numel()));
  cuda::sync();
  GYRE_CUDA_CHECK(cudaMemcpy(v.data(), t.raw(), v.size() * 2, cudaMemcpyDeviceToHost));
  return v;
}

const uint16_t* u16(const Tensor& t) { return static_cast<const uint16_t*>(t.raw()); }
uint16_t* u16m(const Tensor& t) { return static_cast<uint16_t*>(t.raw()); }

void expect_same_bits(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                      const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && ++bad <= 3)
      ADD_FAILURE() << what << "[" << i << "]: bits " << got[i] << " want " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

struct Shape3 {
  int64_t M, N, K;
};

TEST(HopperGemmCuda, SmallIntegerProductsAreExact) {
  SKIP_WITHOUT_HOPPER();
  for (const Shape3 s : {Shape3{1, 8, 8}, Shape3{128, 256, 64}, Shape3{300, 520, 200},
                         Shape3{129, 264, 1544}, Shape3{1000, 1536, 512}}) {
    SCOPED_TRACE("M " + std::to_string(s.M) + " N " + std::to_string(s.N) + " K " +
                 std::to_string(s.K));
    const Tensor x = small_ints({s.M, s.K}, 11, 4), w = small_ints({s.N, s.K}, 12, 4);
    const std::vector<float> xv = x.to_vector(), wv = w.to_vector();
    Tensor y = dev_empty_bf16(s.M, s.N);
    cuda::hopper_gemm_bf16(u16(dev_bf16(x)), u16(dev_bf16(w)), u16m(y), s.M, s.N, s.K);
    std::vector<uint16_t> want(size_t(s.M * s.N));
    for (int64_t m = 0; m < s.M; ++m)
      for (int64_t n = 0; n < s.N; ++n) {
        int64_t acc = 0;
        for (int64_t k = 0; k < s.K; ++k)
          acc += int64_t(xv[size_t(m * s.K + k)]) * int64_t(wv[size_t(n * s.K + k)]);
        want[size_t(m * s.N + n)] = f32_to_bf16(float(acc));
      }
    expect_same_bits(bits(y), want, "y");
  }
}

TEST(HopperGemmCuda, RandomOperandsWithinTheAccumulationBound) {
  SKIP_WITHOUT_HOPPER();
  const int64_t M = 200, N = 776, K = 1536;
  const Tensor x = gputest::round_bf16(randn({M, K}, 21)),
               w = gputest::round_bf16(randn({N, K}, 22, 0.05f));
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector();
  Tensor y = dev_empty_bf16(M, N);
  cuda::hopper_gemm_bf16(u16(dev_bf16(x)), u16(dev_bf16(w)), u16m(y), M, N, K);
  const std::vector<uint16_t> got = bits(y);
  int bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(xv[size_t(m * K + k)]) * double(wv[size_t(n * K + k)]);
        ref += p, mag += std::fabs(p);
      }
      const double g = double(bf16_to_f32(got[size_t(m * N + n)]));
      const double bound = std::ldexp(std::fabs(ref), -8) + double(K) * std::ldexp(mag, -22);
      if (!(std::fabs(g - ref) <= bound) && ++bad <= 3)
        ADD_FAILURE() << "y[" << m << "," << n << "] = " << g << ", f64 " << ref << ", bound "
                      << bound;
    }
  EXPECT_EQ(bad, 0);
}

TEST(HopperGemmCuda, SwigluIsThePlainGemmsAndSiluMul) {
  SKIP_WITHOUT_HOPPER();
  for (const Shape3 s : {Shape3{300, 136, 200}, Shape3{1024, 8960 / 4, 1536}}) {
    const int64_t M = s.M, I = s.N, K = s.K;
    SCOPED_TRACE("M " + std::to_string(M) + " I " + std::to_string(I) + " K " + std::to_string(K));
    const Tensor x = dev_bf16(randn({M, K}, 31)), wg = dev_bf16(randn({I, K}, 32, 0.05f)),
                 wu = dev_bf16(randn({I, K}, 33, 0.05f));
    Tensor gate = dev_empty_bf16(M, I), up = dev_empty_bf16(M, I), act = dev_empty_bf16(M, I);
    cuda::hopper_swiglu_bf16(u16(x), u16(wg), u16(wu), u16m(act), u16m(gate), u16m(up), M, I, K);
    Tensor gate_ref = dev_empty_bf16(M, I), up_ref = dev_empty_bf16(M, I),
           act_ref = dev_empty_bf16(M, I), act_only = dev_empty_bf16(M, I);
    cuda::hopper_gemm_bf16(u16(x), u16(wg), u16m(gate_ref), M, I, K);
    cuda::hopper_gemm_bf16(u16(x), u16(wu), u16m(up_ref), M, I, K);
    cuda::silu_mul_fwd_bf16(u16(gate_ref), u16(up_ref), u16m(act_ref), M * I);
    cuda::hopper_swiglu_bf16(u16(x), u16(wg), u16(wu), u16m(act_only), nullptr, nullptr, M, I, K);
    expect_same_bits(bits(gate), bits(gate_ref), "gate");
    expect_same_bits(bits(up), bits(up_ref), "up");
    expect_same_bits(bits(act), bits(act_ref), "act");
    expect_same_bits(bits(act_only), bits(act_ref), "act without gate/up outputs");
  }
}

TEST(HopperGemmCuda, RejectsShapesItCannotTake) {
  SKIP_WITHOUT_HOPPER();
  EXPECT_FALSE(cuda::hopper_gemm_supported(16, 12, 64));  // N % 8
  EXPECT_FALSE(cuda::hopper_gemm_supported(16, 16, 20));  // K % 8
  EXPECT_FALSE(cuda::hopper_gemm_supported(0, 16, 16));
  const Tensor x = dev_empty_bf16(16, 20, 0), w = dev_empty_bf16(16, 20, 0);
  Tensor y = dev_empty_bf16(16, 16, 0);
  EXPECT_THROW(cuda::hopper_gemm_bf16(u16(x), u16(w), u16m(y), 16, 16, 20), Error);
  // A null operand, a misaligned one, gate without up: errors, no launch.
  EXPECT_THROW(cuda::hopper_gemm_bf16(nullptr, u16(w), u16m(y), 16, 16, 16), Error);
  EXPECT_THROW(cuda::hopper_gemm_bf16(u16(x) + 1, u16(w), u16m(y), 16, 16, 16), Error);
  EXPECT_THROW(
      cuda::hopper_swiglu_bf16(u16(x), u16(w), u16(w), u16m(y), u16m(y), nullptr, 16, 16, 16),
      Error);
}

}  // namespace
}  // namespace gyre
