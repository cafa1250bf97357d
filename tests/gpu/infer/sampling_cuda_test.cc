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
  expect_same_tokens_as_cpu(1, 151936);  // batch-1 decode: 64 partial-max blocks for one row
  expect_same_tokens_as_cpu(5, 4097);    // 3 partial-max blocks, the last one short
}

// Greedy rows with NaN logits pick what the CPU's `if (w[i] > w[best])` loop picks: a NaN at id 0
// is never beaten; a NaN elsewhere never wins (a thread that met a NaN first must still find the
// maximum after it).
TEST(CudaSampling, GreedyNanLikeCpu) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device visible";
  const int64_t V = 151936, n = 3;
  std::vector<float> logits(static_cast<size_t>(n * V));
  PhiloxStream r(77);
  for (float& x : logits) x = r.next_normal();
  for (int64_t j = 1; j < 600; ++j) logits[size_t(j)] = NAN;  // row 0: early NaNs, max later
  logits[size_t(90001)] = 50.0f;
  logits[size_t(V)] = NAN;  // row 1: NaN at id 0
  logits[size_t(V + 5)] = 50.0f;
  logits[size_t(2 * V + 7)] = 9.0f;  // row 2: a tie, the lower id wins
  logits[size_t(2 * V + 140000)] = 9.0f;
  Tensor dl = Tensor::from_vector(logits, {n, V}).to(Device::cuda);
  Tensor dt = Tensor::from_vector(std::vector<float>(size_t(n), 0.0f), {n}).to(Device::cuda);
  Tensor ds = Tensor::from_vector(std::vector<int64_t>(size_t(n), 1), {n}).to(Device::cuda);
  Tensor dst = Tensor::from_vector(std::vector<int64_t>(size_t(n), 0), {n}).to(Device::cuda);
  Tensor tok = Tensor::empty({n}, DType::i32, Device::cuda);
  cuda::sample_rows(dl.f32(), n, V, dt.f32(), reinterpret_cast<const uint64_t*>(ds.i64()),
                    dst.i64(), 0.0f, tok.i32());
  Tensor got = tok.to(Device::cpu);
  EXPECT_EQ(got.i32()[0], 90001);
  EXPECT_EQ(got.i32()[1], 0);
  EXPECT_EQ(got.i32()[2], 7);
  infer::Sampler sampler;
  for (int64_t i = 0; i < n; ++i) {
    infer::SamplingParams sp;
    sp.temperature = 0.0f;
    infer::SampleInput in;
    in.logits = logits.data() + i * V;
    in.vocab = V;
    in.params = &sp;
    in.seed = 1;
    EXPECT_EQ(got.i32()[i], sampler.sample(in).token) << "row " << i;
  }
}

}  // namespace
}  // namespace gyre
