// cuda::CudaGraph: a captured sequence of ops replays with new input contents and gives exactly the
// eager results; the capture's allocations live in the graph's private pool; a host sync inside
// the captured function is rejected. Skips without a GPU.
#include <gtest/gtest.h>

#include <random>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/graph.h"
#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

Tensor random_host(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(size_t(shape_numel(shape)));
  for (float& x : v) x = nd(rng);
  return Tensor::from_vector(v, shape);
}

// y = silu(x W1^T) * (x W2^T) + x W3^T: a few GEMMs, temporaries and elementwise ops.
Tensor mlp(const Tensor& x, const Tensor& w1, const Tensor& w2, const Tensor& w3, Tensor& y) {
  Tensor a, b, h, c;
  ops::linear(x, w1, Tensor(), a);
  ops::linear(x, w2, Tensor(), b);
  ops::silu_mul(a, b, h);
  ops::linear(x, w3, Tensor(), c);
  ops::add(h, c, y);
  return y;
}

TEST(CudaGraph, ReplayWithNewInputsEqualsEager) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 37, K = 64, N = 96;
  Tensor w1 = random_host({N, K}, 1).to(Device::cuda), w2 = random_host({N, K}, 2).to(Device::cuda);
  Tensor w3 = random_host({N, K}, 3).to(Device::cuda);
  Tensor x = Tensor::zeros({M, K}, DType::f32, Device::cuda);  // static input buffer
  Tensor y = Tensor::zeros({M, N}, DType::f32, Device::cuda);  // static output buffer
  cuda::CudaGraph graph;
  x.copy_from(random_host({M, K}, 10));
  graph.capture([&] { mlp(x, w1, w2, w3, y); });
  EXPECT_TRUE(graph.captured());
  EXPECT_GT(graph.pool_bytes(), 0u);  // the temporaries live in the graph's pool
  for (uint64_t seed : {11, 12, 13}) {
    Tensor xin = random_host({M, K}, seed);
    x.copy_from(xin);  // new contents, same address
    graph.replay();
    Tensor ref;
    Tensor xd = xin.to(Device::cuda);
    mlp(xd, w1, w2, w3, ref);
    EXPECT_EQ(y.to(Device::cpu).to_vector(), ref.to(Device::cpu).to_vector()) << "seed " << seed;
  }
  // Under autocast (bf16 GEMMs with per-call scratch) too.
  ops::Bf16Autocast autocast(true);
  cuda::CudaGraph g16;
  Tensor y16 = Tensor::zeros({M, N}, DType::f32, Device::cuda);
  g16.capture([&] { mlp(x, w1, w2, w3, y16); });
  Tensor xin = random_host({M, K}, 21);
  x.copy_from(xin);
  g16.replay();
  Tensor ref;
  mlp(xin.to(Device::cuda), w1, w2, w3, ref);
  EXPECT_EQ(y16.to(Device::cpu).to_vector(), ref.to(Device::cpu).to_vector());
}

TEST(CudaGraph, AHostSyncInsideTheCaptureIsAnError) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor x = Tensor::zeros({4}, DType::f32, Device::cuda);
  cuda::CudaGraph graph;
  EXPECT_THROW(graph.capture([&] {
    ops::scale_(x, 2.0f);
    (void)x.to(Device::cpu);  // device-to-host copy: not capturable
  }),
               Error);
  EXPECT_FALSE(graph.captured());
  // The stream is usable afterwards.
  ops::scale_(x, 2.0f);
  EXPECT_EQ(x.to(Device::cpu).to_vector(), std::vector<float>(4, 0.0f));
}

}  // namespace
}  // namespace gyre
