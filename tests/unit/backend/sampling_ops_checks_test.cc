// ops::sample_tokens_filtered's argument checks, which run before any device work: wrong shapes or
// dtypes name the argument; CPU tensors are Error(unsupported) (the CPU sampler samples host
// logits). The sampling itself is checked against infer::Sampler in
// tests/gpu/infer/sampling_filtered_cuda_test.cc.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/backend/sampling_ops.h"
#include "gyre/core/error.h"
#include "gyre/core/tensor.h"

namespace gyre {
namespace {

struct Args {
  Tensor logits = Tensor::zeros({3, 10}, DType::f32);
  Tensor temperature = Tensor::from_vector(std::vector<float>(3, 1.0f), {3});
  Tensor top_k = Tensor::from_vector(std::vector<int32_t>(3, 5), {3});
  Tensor top_p = Tensor::from_vector(std::vector<float>(3, 0.9f), {3});
  Tensor seeds = Tensor::from_vector(std::vector<int64_t>(3, 7), {3});
  Tensor steps = Tensor::from_vector(std::vector<int64_t>(3, 0), {3});
  Tensor tokens;
  void run() {
    ops::sample_tokens_filtered(logits, temperature, top_k, top_p, seeds, steps, 0.0f, tokens);
  }
};

Error thrown(Args& a) {
  try {
    a.run();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no gyre::Error thrown";
  return Error(ErrorKind::internal, "");
}

void expect_mentions(const Error& e, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
}

TEST(SampleTokensFiltered, CpuTensorsAreUnsupported) {
  Args a;
  Error e = thrown(a);
  EXPECT_EQ(e.kind(), ErrorKind::unsupported);
  expect_mentions(e, {"sample_tokens_filtered", "CUDA"});
}

TEST(SampleTokensFiltered, WrongShapesAndDtypesNameTheArgument) {
  {
    Args a;
    a.logits = Tensor::zeros({30}, DType::f32);
    expect_mentions(thrown(a), {"sample_tokens_filtered", "logits", "[R, V]"});
  }
  {
    Args a;
    a.logits = Tensor::zeros({3, 10}, DType::i32);
    expect_mentions(thrown(a), {"logits", "f32"});
  }
  {
    Args a;
    a.top_k = Tensor::from_vector(std::vector<int32_t>(4, 5), {4});
    expect_mentions(thrown(a), {"top_k", "[4]", "[3]"});
  }
  {
    Args a;
    a.top_p = Tensor::from_vector(std::vector<float>(2, 0.5f), {2});
    expect_mentions(thrown(a), {"top_p"});
  }
  {
    Args a;
    a.top_k = Tensor::from_vector(std::vector<int64_t>(3, 5), {3});
    expect_mentions(thrown(a), {"top_k i32", "i64"});
  }
  {
    Args a;
    a.top_p = Tensor::from_vector(std::vector<int32_t>(3, 1), {3});
    expect_mentions(thrown(a), {"top_p f32"});
  }
  {
    Args a;
    a.steps = Tensor();
    expect_mentions(thrown(a), {"steps", "undefined"});
  }
  {
    Args a;
    a.seeds = Tensor::from_vector(std::vector<float>(3, 1.0f), {3});
    expect_mentions(thrown(a), {"seeds and steps i64"});
  }
}

}  // namespace
}  // namespace gyre
