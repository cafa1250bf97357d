// GEMM autotuning (backend/cuda/gemm_tune.h) never changes a bit: the launches after a problem is
// tuned give exactly the launches before it, and the chooser never takes a faster candidate whose
// output differs, nor one that cannot run.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/gemm_tune.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

std::vector<uint8_t> bytes_of(const Tensor& gpu_tensor) {
  Tensor h = cpu(gpu_tensor);
  const auto* p = h.data<uint8_t>();
  return std::vector<uint8_t>(p, p + h.nbytes());
}

// Autotuning on (or off) for one test, restored after.
struct AutotuneAs {
  bool was = cuda::gemm_autotune_enabled();
  explicit AutotuneAs(bool on) { cuda::set_gemm_autotune(on); }
  ~AutotuneAs() { cuda::set_gemm_autotune(was); }
};

// A problem past kTuneMinFlop launched more than kTuneAtLaunch times, with beta = 0 (bf16 D) and
// beta = 1 (f32 D accumulated, restarted from the same C each time): every launch's bits equal the
// first's, which ran the heuristic's algorithm before any tuning. (Sizes no other test uses, so
// their plans are made here, with tuning on.)
TEST(GemmTuneCuda, TunedLaunchesGiveTheHeuristicsBits) {
  GYRE_SKIP_WITHOUT_GPU();
  AutotuneAs on(true);
  const int64_t M = 2056, N = 1544, K = 1032;  // 6.6 GFLOP
  ASSERT_GE(2.0 * M * N * K, cuda::kTuneMinFlop);
  const size_t tuned_before = cuda::gemm_problems_tuned();
  Tensor a = gpu(randn({M, K}, 11).to(DType::bf16)), w = gpu(randn({N, K}, 12).to(DType::bf16));
  Tensor c0 = gpu(randn({M, N}, 13));
  std::vector<uint8_t> first16, first32;
  for (int launch = 0; launch < cuda::kTuneAtLaunch + 3; ++launch) {
    Tensor y16 = Tensor::empty({M, N}, DType::bf16, Device::cuda);
    cuda::gemm_bf16(false, true, M, N, K, 1.0f, a.data<uint16_t>(), K, w.data<uint16_t>(), K, 0.0f,
                    y16.data<uint16_t>(), N, true);
    Tensor y32 = c0.clone();
    cuda::gemm_bf16(false, true, M, N, K, 1.0f, a.data<uint16_t>(), K, w.data<uint16_t>(), K, 1.0f,
                    y32.f32(), N, false);
    if (launch == 0) {
      first16 = bytes_of(y16);
      first32 = bytes_of(y32);
      continue;
    }
    EXPECT_TRUE(bytes_of(y16) == first16) << "bf16 D, launch " << launch;
    EXPECT_TRUE(bytes_of(y32) == first32) << "f32 D with beta 1, launch " << launch;
  }
  // Both problems were tuned (on Hopper cuBLASLt offers eight candidates without split-K here).
  EXPECT_EQ(cuda::gemm_problems_tuned(), tuned_before + 2);
}

// The residual GEMM (linear_gemm_bf16_add: y = x w^T + c through cuBLASLt's beta-1 epilogue) tunes
// its shared plan on its own launches, in place (c = y) and out of place: every launch's bits equal
// the first's (the heuristic's algorithm, before any tuning), which equal the plain GEMM then the
// add. Sizes no other test uses, so the plan is made here, with tuning on.
TEST(GemmTuneCuda, ResidualGemmTunesOnItsOwnLaunchesAndKeepsItsBits) {
  GYRE_SKIP_WITHOUT_GPU();
  AutotuneAs on(true);
  const int64_t M = 2072, N = 1560, K = 1048;  // 6.8 GFLOP
  ASSERT_GE(2.0 * M * N * K, cuda::kTuneMinFlop);
  const size_t tuned_before = cuda::gemm_problems_tuned();
  Tensor x = gpu(randn({M, K}, 31).to(DType::bf16)), w = gpu(randn({N, K}, 32).to(DType::bf16));
  Tensor c = gpu(randn({M, N}, 33));
  const std::vector<uint8_t> c_before = bytes_of(c);
  std::vector<uint8_t> first;
  for (int launch = 0; launch < cuda::kTuneAtLaunch + 3; ++launch) {
    Tensor in_place = c.clone(), out_of_place = Tensor::empty({M, N}, DType::f32, Device::cuda);
    ASSERT_TRUE(cuda::linear_gemm_bf16_add(x.data<uint16_t>(), w.data<uint16_t>(), in_place.f32(),
                                           M, N, K, in_place.f32()));
    ASSERT_TRUE(cuda::linear_gemm_bf16_add(x.data<uint16_t>(), w.data<uint16_t>(), c.f32(), M, N, K,
                                           out_of_place.f32()));
    if (launch == 0) first = bytes_of(in_place);
    EXPECT_TRUE(bytes_of(in_place) == first) << "in place, launch " << launch;
    EXPECT_TRUE(bytes_of(out_of_place) == first) << "out of place, launch " << launch;
  }
  EXPECT_TRUE(bytes_of(c) == c_before) << "the tuning trials wrote C";
  EXPECT_EQ(cuda::gemm_problems_tuned(), tuned_before + 1);
  // The plain GEMM into f32 then the add, on the (now tuned) shared plan: the same bits.
  Tensor t = Tensor::empty({M, N}, DType::f32, Device::cuda), sum = c.clone();
  cuda::linear_gemm_bf16(x.data<uint16_t>(), w.data<uint16_t>(), nullptr, M, N, K, t.f32());
  cuda::add(t.f32(), sum.f32(), sum.f32(), M * N);
  EXPECT_TRUE(bytes_of(sum) == first);
}

// The chooser on four "candidates" of one real GEMM: #0 launches it twice (the slow reference),
// #1 once with another alpha (faster, other bits), #2 once (faster, same bits), #3 cannot run.
// Only #2 may be chosen; D itself stays untouched.
TEST(GemmTuneCuda, ChoosesOnlyAFasterCandidateWithTheSameBits) {
  GYRE_SKIP_WITHOUT_GPU();
  AutotuneAs off(false);  // the candidates' own GEMM must not tune itself inside the timing
  const int64_t M = 2048, N = 2048, K = 2048;
  Tensor a = gpu(randn({M, K}, 21).to(DType::bf16)), w = gpu(randn({N, K}, 22).to(DType::bf16));
  Tensor d = gpu(randn({M, N}, 23));
  const std::vector<uint8_t> d_before = bytes_of(d);
  auto gemm = [&](float alpha, void* out) {
    cuda::gemm_bf16(false, true, M, N, K, alpha, a.data<uint16_t>(), K, w.data<uint16_t>(), K, 1.0f,
                    out, N, false);
  };
  cuda::TuneProblem p;
  p.d = d.f32();
  p.out_bytes = size_t(M * N) * 4;
  p.reads_d = true;  // beta = 1: every trial must start from D's contents, or #0 twice != #2 once
  p.stream = cuda::stream();
  p.candidates = 4;
  int twice = 0;
  p.run = [&](int i, void* out) {
    switch (i) {
      case 0:  // twice, the second over a restarted D: the same bits as one launch, twice the time
        gemm(1.0f, out);
        ++twice;
        cudaMemcpyAsync(out, d.f32(), p.out_bytes, cudaMemcpyDeviceToDevice, cuda::stream());
        gemm(1.0f, out);
        return true;
      case 1: gemm(1.0f + 1.0f / 64, out); return true;
      case 2: gemm(1.0f, out); return true;
      default: return false;
    }
  };
  std::string log;
  EXPECT_EQ(cuda::pick_fastest_same_bits(p, &log), 2) << log;
  EXPECT_GT(twice, 0);
  EXPECT_NE(log.find("#1 other bits"), std::string::npos) << log;
  EXPECT_NE(log.find("#3 cannot run"), std::string::npos) << log;
  EXPECT_TRUE(bytes_of(d) == d_before);

  // Past the scratch limit nothing is tried: the heuristic's choice stays.
  p.out_bytes = cuda::kTuneMaxOutBytes + 1;
  EXPECT_EQ(cuda::pick_fastest_same_bits(p, nullptr), 0);
}

}  // namespace
}  // namespace gyre
