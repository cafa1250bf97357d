// ops::rms_norm_backward_add on CUDA (backend/fused_norm_ops.h, backend/cuda/rms_bwd_fused.cu):
// dx, dw and dx_bf16 are memcmp-equal to the composition rms_norm_backward, add_ and ops::copy
// f32 -> bf16 on the GPU, for H = 896, 1536 (Qwen2.5 0.5B / 1.5B), 64, 100 (not a multiple of 32)
// and 3 at R = 1, 7, 513 and 4099 rows (a partial last chunk of 128), and H = 2048, 3584, 5120
// (the one-pass kernel's wider instantiations) and 8320 (past its registers: always the row
// kernel); with and without dw, in place (dx is residual_grad) and into a fresh dx, with and
// without the bf16 copy, through both the one-pass kernel (dw partials in the same pass) and the
// row kernel plus rms_norm_backward's dw kernels (the chunk threshold forced each way), and the
// default threshold at a training micro-batch (16384 x 896); views at odd element offsets (rows
// not 16-byte aligned); zero rows; the kernel counts (2 or 3 against the composition's 5); errors
// of CUDA-only arguments. Skips without a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gpu/backend/kernel_count.h"
#include "gyre/backend/cuda/rms_bwd_fused.h"
#include "gyre/backend/fused_norm_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;

// Host bytes of a device tensor compared with memcmp (any dtype).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ha = cpu(a), hb = cpu(b);
  return std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

// Number of differing elements of two f32 device tensors (for the failure message).
int64_t count_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> va = cpu(a).to_vector(), vb = cpu(b).to_vector();
  if (va.size() != vb.size()) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < va.size(); ++i) n += std::memcmp(&va[i], &vb[i], sizeof(float)) != 0;
  return n;
}

// Forces the one-pass kernel (min chunks 1) or the two-kernel path (never one pass) while alive.
class ChunkThreshold {
 public:
  explicit ChunkThreshold(int64_t n) : old_(cuda::set_rms_bwd_add_min_fused_chunks(n)) {}
  ~ChunkThreshold() { cuda::set_rms_bwd_add_min_fused_chunks(old_); }

 private:
  int64_t old_;
};
constexpr int64_t kAlwaysOnePass = 1, kNeverOnePass = int64_t(1) << 62;

struct Inputs {
  Tensor dy, x, w, rstd, res, dw;  // on the GPU
};

Inputs make_inputs(int64_t R, int64_t H, uint64_t seed) {
  Inputs in;
  in.x = gpu(randn({R, H}, seed));
  in.w = gpu(randn({H}, seed + 1));
  in.dy = gpu(randn({R, H}, seed + 2));
  in.res = gpu(randn({R, H}, seed + 3));
  in.dw = gpu(randn({H}, seed + 4));
  Tensor y;
  ops::rms_norm(in.x, in.w, 1e-6f, y, in.rstd);
  return in;
}

struct Reference {
  Tensor dx, dw, dx16;
};

// The composition the fused op must equal bitwise.
Reference composition(const Inputs& in, bool with_dw) {
  Reference ref;
  ref.dw = with_dw ? in.dw.clone() : Tensor();
  ops::rms_norm_backward(in.dy, in.x, in.w, in.rstd, ref.dx, ref.dw);
  ops::add_(ref.dx, in.res);
  ref.dx16 = Tensor::empty(ref.dx.shape(), DType::bf16, Device::cuda);
  ops::copy(ref.dx, ref.dx16);
  return ref;
}

// One fused call against the reference: in place or into a fresh dx, with or without dw and the
// bf16 copy.
void check_fused(const Inputs& in, const Reference& ref, bool with_dw, bool in_place, bool want16) {
  Tensor res = in.res.clone(), dw = with_dw ? in.dw.clone() : Tensor(), dx, dx16;
  if (in_place) dx = res;
  ops::rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, res, dx, dw, want16 ? &dx16 : nullptr);
  EXPECT_TRUE(same_bits(dx, ref.dx)) << count_diff(dx, ref.dx) << " elements of dx differ";
  if (with_dw) {
    EXPECT_TRUE(same_bits(dw, ref.dw)) << count_diff(dw, ref.dw) << " of dw differ";
  }
  if (want16) {
    EXPECT_TRUE(same_bits(dx16, ref.dx16)) << "dx_bf16 differs";
  }
  if (!want16) {
    EXPECT_FALSE(dx16.defined());
  }
  if (in_place) {
    EXPECT_EQ(dx.raw(), res.raw());
  }
  if (!in_place) {
    EXPECT_TRUE(same_bits(res, in.res)) << "residual_grad was written";
  }
}

void check_sizes(const std::vector<int64_t>& Hs, const std::vector<int64_t>& Rs) {
  for (int64_t H : Hs)
    for (int64_t R : Rs) {
      const Inputs in = make_inputs(R, H, uint64_t(H * 7919 + R));
      for (bool with_dw : {false, true}) {
        const Reference ref = composition(in, with_dw);
        for (int64_t threshold : {kAlwaysOnePass, kNeverOnePass}) {
          ChunkThreshold force(threshold);
          for (bool in_place : {false, true})
            for (bool want16 : {false, true}) {
              SCOPED_TRACE(::testing::Message() << "H " << H << " R " << R << " dw " << with_dw
                                                << " one-pass " << (threshold == kAlwaysOnePass)
                                                << " in place " << in_place << " bf16 " << want16);
              check_fused(in, ref, with_dw, in_place, want16);
            }
        }
      }
    }
}

TEST(CudaRmsNormBackwardAdd, BitwiseCompositionQwenWidths) {
  GYRE_SKIP_WITHOUT_GPU();
  check_sizes({896, 1536}, {1, 7, 513, 4096 + 3});
}

TEST(CudaRmsNormBackwardAdd, BitwiseCompositionOddWidths) {
  GYRE_SKIP_WITHOUT_GPU();
  check_sizes({64, 100, 3}, {1, 7, 513, 4096 + 3});
}

TEST(CudaRmsNormBackwardAdd, BitwiseCompositionWideRows) {
  GYRE_SKIP_WITHOUT_GPU();
  // 8320 > 32 columns per thread: always the row kernel plus the separate dw kernels. 2048,
  // 3584 and 5120: the one-pass kernel's wider instantiations.
  check_sizes({2048, 3584, 5120, 8320}, {7, 300});
}

TEST(CudaRmsNormBackwardAdd, DefaultThresholdAtTrainingSize) {
  GYRE_SKIP_WITHOUT_GPU();
  // A training micro-batch (16 Ki tokens) under the default threshold, in place with dw and bf16:
  // the decoder layer's call.
  const Inputs in = make_inputs(16384, 896, 5);
  const Reference ref = composition(in, true);
  check_fused(in, ref, true, true, true);
}

TEST(CudaRmsNormBackwardAdd, OddOffsetViews) {
  GYRE_SKIP_WITHOUT_GPU();
  // Every tensor a view one element into a larger buffer: rows start at addresses that are not
  // 16-byte aligned (scalar loads must not assume any alignment).
  for (int64_t H : {3, 100, 896})
    for (int64_t threshold : {kAlwaysOnePass, kNeverOnePass}) {
      SCOPED_TRACE(::testing::Message() << "H " << H << " one-pass " << (threshold == 1));
      ChunkThreshold force(threshold);
      const int64_t R = 300;
      const auto view = [](const Tensor& t) {
        Tensor buf = Tensor::zeros({t.numel() + 1}, DType::f32, Device::cuda);
        Tensor v = buf.narrow(1, t.numel()).reshape(t.shape());
        v.copy_from(t);
        return v;
      };
      const Inputs base = make_inputs(R, H, uint64_t(H + 3));
      Inputs in{view(base.dy),   view(base.x),   view(base.w),
                view(base.rstd), view(base.res), view(base.dw)};
      const Reference ref = composition(base, true);
      Tensor res = view(base.res), dw = view(base.dw), dx = res;
      Tensor buf16 = Tensor::zeros({R * H + 1}, DType::bf16, Device::cuda);
      Tensor dx16 = buf16.narrow(1, R * H).reshape({R, H});
      ops::rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, res, dx, dw, &dx16);
      EXPECT_TRUE(same_bits(dx, ref.dx)) << count_diff(dx, ref.dx);
      EXPECT_TRUE(same_bits(dw, ref.dw)) << count_diff(dw, ref.dw);
      EXPECT_TRUE(same_bits(dx16, ref.dx16));
      EXPECT_EQ(cpu(buf16).to_vector()[0], 0.0f);  // nothing written before the view
    }
}

TEST(CudaRmsNormBackwardAdd, ZeroRowsWriteNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  const Inputs in = make_inputs(0, 64, 9);
  Tensor dx, dw = in.dw.clone(), dx16;
  ops::rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, in.res, dx, dw, &dx16);
  EXPECT_EQ(dx.numel(), 0);
  EXPECT_EQ(dx16.numel(), 0);
  EXPECT_TRUE(same_bits(dw, in.dw));
}

TEST(CudaRmsNormBackwardAdd, KernelCounts) {
  GYRE_SKIP_WITHOUT_GPU();
  // One pass + the dw finish (2 kernels), or the row kernel + rms_norm_backward's two dw kernels
  // (3), against the composition's 5 (dx, dw partials, dw finish, add, f32 -> bf16).
  const int64_t R = 1024, H = 896;
  const Inputs in = make_inputs(R, H, 13);
  Tensor res = in.res.clone(), dw = in.dw.clone(), dx = res;
  Tensor dx16 = Tensor::empty({R, H}, DType::bf16, Device::cuda);
  const auto fused = [&] {
    ops::rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, res, dx, dw, &dx16);
  };
  {
    ChunkThreshold force(kAlwaysOnePass);
    fused();  // warm the allocator's cache for the partials
    EXPECT_EQ(gputest::kernels_launched(fused), 2u);
  }
  {
    ChunkThreshold force(kNeverOnePass);
    fused();
    EXPECT_EQ(gputest::kernels_launched(fused), 3u);
  }
  Tensor cdx = Tensor::empty({R, H}, DType::f32, Device::cuda);
  const auto composed = [&] {
    ops::rms_norm_backward(in.dy, in.x, in.w, in.rstd, cdx, dw);
    ops::add_(cdx, in.res);
    ops::copy(cdx, dx16);
  };
  composed();
  EXPECT_EQ(gputest::kernels_launched(composed), 5u);
}

TEST(CudaRmsNormBackwardAdd, CudaArgumentErrors) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t R = 4, H = 8;
  const Inputs in = make_inputs(R, H, 17);
  Tensor dx = Tensor::zeros({R, H}, DType::f32, Device::cuda), dw = in.dw.clone();
  const std::vector<float> dx_before = cpu(dx).to_vector(), dw_before = cpu(dw).to_vector();
  const auto err = [&](Tensor* d16) {
    return test::error_of(
        [&] { ops::rms_norm_backward_add(in.dy, in.x, in.w, in.rstd, in.res, dx, dw, d16); });
  };
  Tensor f32_16 = Tensor::zeros({R, H}, DType::f32, Device::cuda);
  EXPECT_THAT(err(&f32_16), ::testing::HasSubstr("output 'dx_bf16' is f32, expected bf16"));
  Tensor short16 = Tensor::zeros({R, H - 1}, DType::bf16, Device::cuda);
  EXPECT_THAT(err(&short16), ::testing::HasSubstr("tensor 'dx_bf16' has shape [4, 7]"));
  Tensor host16 = Tensor::zeros({R, H}, DType::bf16);
  EXPECT_THAT(err(&host16), ::testing::HasSubstr("'dx_bf16' is on cpu"));
  // f64 is the CPU's reference dtype only.
  Tensor dy64 = in.dy.to(Device::cpu).to(DType::f64).to(Device::cuda);
  Tensor x64 = in.x.to(Device::cpu).to(DType::f64).to(Device::cuda);
  Tensor w64 = in.w.to(Device::cpu).to(DType::f64).to(Device::cuda);
  Tensor rs64 = in.rstd.to(Device::cpu).to(DType::f64).to(Device::cuda);
  Tensor res64 = in.res.to(Device::cpu).to(DType::f64).to(Device::cuda), dx64, none;
  EXPECT_THAT(
      test::error_of([&] { ops::rms_norm_backward_add(dy64, x64, w64, rs64, res64, dx64, none); }),
      ::testing::HasSubstr("the CUDA backend runs f32 tensors, got f64"));
  EXPECT_EQ(cpu(dx).to_vector(), dx_before);
  EXPECT_EQ(cpu(dw).to_vector(), dw_before);
}

}  // namespace
}  // namespace gyre
