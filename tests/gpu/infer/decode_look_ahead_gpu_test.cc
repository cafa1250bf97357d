// Decode look-ahead on the GPU (EngineConfig::decode_look_ahead, infer/engine_look_ahead.cc):
// through captured decode graphs with device-side ids, the outputs are bitwise those of stepping
// one at a time (the cases: tests/infer_look_ahead_cases.h), on f32 and bf16 engines. Skips
// without a GPU.
#include <gtest/gtest.h>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "infer_look_ahead_cases.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

using look_ahead_cases::same_outputs_with_and_without;

TEST(DecodeLookAheadGpu, SameOutputsWithAndWithoutF32) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                                 {.device = Device::cuda});
  same_outputs_with_and_without(*m, /*eager=*/false, /*stop_tol=*/1e-5f);
}

TEST(DecodeLookAheadGpu, SameOutputsWithAndWithoutBf16) {
  GYRE_SKIP_WITHOUT_GPU();
  auto m = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"),
                                 {.device = Device::cuda});
  m->set_precision(model::Precision::bf16);
  // bf16 activations: a row rounded differently moves a log-prob by up to ~1e-3.
  same_outputs_with_and_without(*m, /*eager=*/false, /*stop_tol=*/2e-3f);
}

}  // namespace
}  // namespace gyre::infer
