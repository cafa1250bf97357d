// One Qwen3-MoE sparse block (model/moe_block.h) on the GPU: the sorted dispatch against the same
// block on the CPU (f32: 1e-4 relative like the whole-model fixture test, which runs qwen3moe_tiny
// through this path in golden_gpu_test.cc), and against the former per-expert path on the GPU in
// f32 and under bf16 autocast (both run each expert's GEMMs on the same rows, so they differ only
// in the order a token's k contributions are summed: 1e-5). Skips without a visible GPU.
#include <gtest/gtest.h>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/ops.h"
#include "unit/model/moe_layer_util.h"

namespace gyre::model {
namespace {

struct Result {
  Tensor y, dx;
  LayerTensors g;
};

enum class Path { sorted, per_expert };

Result run(const test::MoeLayer& L, const LayerTensors& w, const Tensor& xn, const Tensor& dout,
           Path path) {
  Result r;
  MoeSaved s;
  r.g = test::zero_moe_grads(w);
  if (path == Path::sorted) {
    r.y = moe_forward(L.config, w, xn, &s);
    r.dx = moe_backward(L.config, w, r.g, xn, s, dout);
  } else {
    r.y = moe_forward_per_expert(L.config, w, xn, &s);
    r.dx = moe_backward_per_expert(L.config, w, r.g, xn, s, dout);
  }
  return r;
}

void expect_close(const Result& got, const Result& want, double tol, const char* what) {
  EXPECT_LE(gputest::rel_err(got.y.to(Device::cpu), want.y.to(Device::cpu)), tol) << what;
  EXPECT_LE(gputest::rel_err(got.dx.to(Device::cpu), want.dx.to(Device::cpu)), tol) << what;
  EXPECT_LE(gputest::rel_err(got.g.router_w.to(Device::cpu), want.g.router_w.to(Device::cpu)), tol)
      << what;
  for (size_t e = 0; e < got.g.expert_gate.size(); ++e)
    for (auto [a, b] : {std::pair{&got.g.expert_gate[e], &want.g.expert_gate[e]},
                        {&got.g.expert_up[e], &want.g.expert_up[e]},
                        {&got.g.expert_down[e], &want.g.expert_down[e]}})
      EXPECT_LE(gputest::rel_err(a->to(Device::cpu), b->to(Device::cpu)), tol)
          << what << " expert " << e;
}

TEST(MoeGpu, SortedDispatchMatchesCpuAndPerExpertPath) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 300, H = 64, E = 32, k = 4, I = 48;
  test::MoeLayer L = test::random_moe_layer(H, E, k, I, /*norm_topk=*/true, 5);
  std::mt19937_64 rng(6);
  const Tensor xn = test::random_f32({T, H}, 1.0, rng), dout = test::random_f32({T, H}, 1.0, rng);
  const LayerTensors wg = test::moe_to(L.w, Device::cuda);
  const Tensor gx = xn.to(Device::cuda), gd = dout.to(Device::cuda);

  const Result cpu = run(L, L.w, xn, dout, Path::sorted);
  const Result gpu = run(L, wg, gx, gd, Path::sorted);
  expect_close(gpu, cpu, 1e-4, "gpu vs cpu");
  expect_close(gpu, run(L, wg, gx, gd, Path::per_expert), 1e-5, "sorted vs per-expert, f32");
  {
    ops::Bf16Autocast bf16;
    const Result a = run(L, wg, gx, gd, Path::sorted);
    const Result b = run(L, wg, gx, gd, Path::per_expert);
    expect_close(a, b, 1e-5, "sorted vs per-expert, bf16 autocast");
  }
  // Run to run: bitwise (no atomics in the dispatch).
  const Result again = run(L, wg, gx, gd, Path::sorted);
  EXPECT_EQ(again.y.to_vector(), gpu.y.to_vector());
  EXPECT_EQ(again.dx.to_vector(), gpu.dx.to_vector());
}

}  // namespace
}  // namespace gyre::model
