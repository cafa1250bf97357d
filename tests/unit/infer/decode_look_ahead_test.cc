// Decode look-ahead's bookkeeping on the CPU (EngineConfig::decode_look_ahead_eager, the test
// hook: eager forwards and the host sampler stand in for the decode graphs and the device
// samplers). Placeholder tokens, rows dropped after a stop, the live rows' ids gathered for the
// next step and when a burst may go on are the GPU's code, so checking here that the outputs are
// bitwise those of stepping one at a time (tests/infer_look_ahead_cases.h) covers them on every
// build; tests/gpu/infer/decode_look_ahead_gpu_test.cc runs the same cases through graphs.
#include <gtest/gtest.h>

#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "infer_look_ahead_cases.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

std::unique_ptr<model::CausalLM> tiny() {
  return model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"), {});
}

TEST(DecodeLookAhead, EagerOnTheCpuGivesTheOutputsOfSteppingOneAtATime) {
  auto m = tiny();
  // f32 throughout: rows rounded differently in another batch size differ by ~1e-7 relative.
  look_ahead_cases::same_outputs_with_and_without(*m, /*eager=*/true, /*stop_tol=*/1e-5f);
}

TEST(DecodeLookAhead, CpuEnginesDoNotLookAheadWithoutTheHook) {
  auto m = tiny();
  Engine e(*m, nullptr, look_ahead_cases::config(true, /*eager=*/false));
  std::vector<GenerateRequest> reqs;
  for (uint64_t s = 0; s < 3; ++s)
    reqs.push_back(look_ahead_cases::request({1, 5, int32_t(7 + s)}, 8, 70 + s, int(s)));
  for (const auto& r : e.generate(reqs)) EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(e.stats().look_ahead_steps, 0);
}

}  // namespace
}  // namespace gyre::infer
