// MoE dispatch ops (backend/moe_ops.h) on CUDA tensors against the CPU reference: the permutation
// exactly (random routing, idle experts, T = 0, k = 1, one busy expert, several chunks of the
// counting sort), moe_unpermute and its backward within 1e-5 relative; bad expert indices raise the
// CPU's error; the permutation needs no host synchronisation inside a KnownIndices scope.
#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/moe_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::kF32Tol;
using gputest::rand_ids;
using gputest::randn;
using gputest::rel_err;

std::vector<int32_t> ints(const Tensor& t) {
  const Tensor h = cpu(t);
  return {h.i32(), h.i32() + h.numel()};
}

void expect_same_permutation(const Tensor& indices, int64_t E) {
  Tensor perm, pos, rows, off, gperm, gpos, grows, goff;
  ops::moe_permute(indices, E, perm, pos, rows, off);
  ops::moe_permute(gpu(indices), E, gperm, gpos, grows, goff);
  EXPECT_EQ(gperm.device(), Device::cuda);
  EXPECT_EQ(ints(gperm), ints(perm));
  EXPECT_EQ(ints(gpos), ints(pos));
  EXPECT_EQ(ints(grows), ints(rows));
  EXPECT_EQ(ints(goff), ints(off));
}

TEST(CudaMoeOps, PermuteIsExact) {
  GYRE_SKIP_WITHOUT_GPU();
  expect_same_permutation(rand_ids(4096 * 8, 128, 1).reshape({4096, 8}), 128);  // 128 chunks
  expect_same_permutation(rand_ids(37 * 4, 9, 2).reshape({37, 4}), 9);
  expect_same_permutation(rand_ids(3 * 2, 40, 3).reshape({3, 2}), 40);          // idle experts
  expect_same_permutation(Tensor::empty({0, 8}, DType::i32), 16);               // T = 0
  expect_same_permutation(rand_ids(1000, 7, 4).reshape({1000, 1}), 7);          // k = 1
  expect_same_permutation(rand_ids(999 * 3, 1, 5).reshape({999, 3}), 5);        // all on expert 0
  expect_same_permutation(rand_ids(700 * 2, 3000, 6).reshape({700, 2}), 3000);  // large E
}

TEST(CudaMoeOps, UnpermuteForwardAndBackward) {
  GYRE_SKIP_WITHOUT_GPU();
  for (auto [T, k, E, H] :
       {std::array<int64_t, 4>{333, 8, 64, 200}, {17, 1, 4, 1031}, {5, 3, 2, 7}, {0, 2, 4, 16}}) {
    const int64_t N = T * k;
    Tensor idx = rand_ids(N, int32_t(E), 10 + T).reshape({T, k});
    Tensor perm, pos, rows, off;
    ops::moe_permute(idx, E, perm, pos, rows, off);
    Tensor y = randn({N, H}, 20 + T), w = randn({T, k}, 30 + T), dout = randn({T, H}, 40 + T);
    Tensor out, gout, out1, gout1, none;
    ops::moe_unpermute(y, pos, w, out);
    ops::moe_unpermute(gpu(y), gpu(pos), gpu(w), gout);
    EXPECT_LE(rel_err(cpu(gout), out), kF32Tol) << "T " << T << " H " << H;
    ops::moe_unpermute(y, pos, none, out1);
    ops::moe_unpermute(gpu(y), gpu(pos), none, gout1);
    EXPECT_LE(rel_err(cpu(gout1), out1), kF32Tol);
    Tensor dy = Tensor::empty({N, H}, DType::f32), dw = Tensor::empty({T, k}, DType::f32);
    Tensor gdy = Tensor::empty({N, H}, DType::f32, Device::cuda);
    Tensor gdw = Tensor::empty({T, k}, DType::f32, Device::cuda);
    ops::moe_unpermute_backward(dout, y, perm, w, dy, dw);
    ops::moe_unpermute_backward(gpu(dout), gpu(y), gpu(perm), gpu(w), gdy, gdw);
    EXPECT_LE(rel_err(cpu(gdy), dy), kF32Tol);
    EXPECT_LE(rel_err(cpu(gdw), dw), kF32Tol);
  }
}

TEST(CudaMoeOps, BadIndicesRaiseTheCpuError) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor bad = gpu(Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 9}, {2, 2}));
  Tensor perm, pos, rows, off;
  try {
    ops::moe_permute(bad, 4, perm, pos, rows, off);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert index 9"), std::string::npos) << e.what();
  }
}

TEST(CudaMoeOps, KnownIndicesSkipTheHostCopy) {
  GYRE_SKIP_WITHOUT_GPU();
  // Values outside [0, E) would raise on the host check; registered as in range, the op trusts
  // the caller (the check is skipped), which is what lets the MoE forward avoid a sync here.
  Tensor idx = gpu(rand_ids(64 * 4, 16, 50).reshape({64, 4}));
  ops::KnownIndices known;
  known.add_range(idx, 0, 16);
  Tensor perm, pos, rows, off;
  ops::moe_permute(idx, 16, perm, pos, rows, off);
  EXPECT_EQ(ints(off).back(), 256);
}

}  // namespace
}  // namespace gyre
