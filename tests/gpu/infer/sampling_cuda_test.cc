// Seeded sampling on the GPU (cuda::sample_rows) picks the same tokens as the CPU sampler
// (infer::Sampler) for the same seeds and steps: greedy, temperature and min_p.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"
#include "gyre/infer/sampler.h"

namespace gyre {
namespace {

// Vocabularies below, around and far above the kernel's 256 segments (Qwen2.5's 151,936), and rows
// with -inf logits (masked ids are never kept).
void expect_same_tokens_as_cpu(int64_t n, int64_t V) {
  std::vector<float> logits(static_cast<size_t>(n * V));
  PhiloxStream r(5 + uint64_t(V));
  for (float& x : logits) x = r.next_normal() * 3.0f;
  for (int64_t i = 0; i < n; i += 3)
    for (int64_t j = 0; j < V; j += 5) logits[size_t(i * V + j)] = -INFINITY;
  std::vector<float> temps(static_cast<size_t>(n));
  std::vector<uint64_t> seeds(static_cast<size_t>(n));
  std::vector<int64_t> steps(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    temps[size_t(i)] = i % 4 == 0 ? 0.0f : (i % 4 == 1 ? 0.7f : 1.3f);
    seeds[size_t(i)] = 1000 + uint64_t(i) * 7;
    steps[size_t(i)] = i % 9;
  }
  for (float min_p : {0.0f, 0.05f}) {
    Tensor dl = Tensor::from_vector(logits, {n, V}).to(Device::cuda);
    Tensor dt = Tensor::from_vector(temps, {n}).to(Device::cuda);
    Tensor ds = Tensor::empty({n}, DType::i64, Device::cuda), dst = ds.clone();
    Tensor hs = Tensor::empty({n}, DType::i64), hst = Tensor::empty({n}, DType::i64);
    for (int64_t i = 0; i < n; ++i) {
      hs.i64()[i] = int64_t(seeds[size_t(i)]);
      hst.i64()[i] = steps[size_t(i)];
    }
    ds.copy_from(hs);
    dst.copy_from(hst);
    Tensor tok = Tensor::empty({n}, DType::i32, Device::cuda);
    cuda::sample_rows(dl.f32(), n, V, dt.f32(), reinterpret_cast<const uint64_t*>(ds.i64()),
                      dst.i64(), min_p, tok.i32());
    Tensor got = tok.to(Device::cpu);
    infer::Sampler sampler;
    int mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      infer::SamplingParams sp;
      sp.temperature = temps[size_t(i)];
      sp.min_p = min_p;
      std::vector<int32_t> output(size_t(steps[size_t(i)]), 0);  // its size is the step counter
      infer::SampleInput in;
      in.logits = logits.data() + i * V;
      in.vocab = V;
      in.params = &sp;
      in.output = output;
      in.seed = seeds[size_t(i)];
      const int32_t want = sampler.sample(in).token;
      if (got.i32()[i] != want) ++mismatches;
      EXPECT_EQ(got.i32()[i], want)
          << "row " << i << " T=" << temps[size_t(i)] << " min_p=" << min_p;
    }
    EXPECT_EQ(mismatches, 0) << "V " << V;
  }
}

TEST(CudaSampling, SameTokensAsCpuSampler) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device visible";
  expect_same_tokens_as_cpu(192, 1003);
  expect_same_tokens_as_cpu(64, 7);
  expect_same_tokens_as_cpu(96, 300);
  expect_same_tokens_as_cpu(24, 151936);
}

}  // namespace
}  // namespace gyre
