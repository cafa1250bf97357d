// ops::decode_stack_ (backend/decode_stack_ops.h) off the GPU: the switch (off by default, set by
// set_decode_stack), decode_stack_fuses' host conditions (never on the CPU, one token only), and
// calls that cannot run refused with errors that say what is wrong before anything happens. The
// stack's numbers are tested on the device (tests/gpu/backend/decode_stack_cuda_test.cc).
#include "gyre/backend/decode_stack_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

// Restores the switch when a test ends.
struct SwitchScope {
  SwitchScope() : was(decode_stack_enabled()) {}
  ~SwitchScope() { set_decode_stack(was); }
  bool was;
};

TEST(DecodeStackOps, SwitchIsOffByDefaultAndSettable) {
  SwitchScope keep;
  const char* env = std::getenv("GYRE_DECODE_STACK");
  if (!env || std::string(env) != "1") {
    EXPECT_FALSE(decode_stack_enabled());
  }
  set_decode_stack(true);
  EXPECT_TRUE(decode_stack_enabled());
  set_decode_stack(false);
  EXPECT_FALSE(decode_stack_enabled());
}

TEST(DecodeStackOps, NeverFusesOnTheCpuOrPastOneToken) {
  SwitchScope keep;
  set_decode_stack(true);
  EXPECT_FALSE(decode_stack_fuses(Device::cpu, DType::bf16, 1, 24, 896, 14, 2, 64, 4864));
  EXPECT_FALSE(decode_stack_fuses(Device::cuda, DType::bf16, 2, 24, 896, 14, 2, 64, 4864));
  EXPECT_FALSE(decode_stack_fuses(Device::cuda, DType::f32, 1, 24, 896, 14, 2, 64, 4864));
  set_decode_stack(false);
  EXPECT_FALSE(decode_stack_fuses(Device::cuda, DType::bf16, 1, 24, 896, 14, 2, 64, 4864));
}

TEST(DecodeStackOps, CallsThatCannotRunAreRefusedWithTheReason) {
  SwitchScope keep;
  set_decode_stack(true);
  const Tensor none;
  const PagedDecodeStep step;
  Tensor undefined;
  EXPECT_THAT(error_of([&] { decode_stack_(undefined, {}, 1e-6f, 0.125f, none, none, step); }),
              HasSubstr("'x' is undefined"));
  Tensor two_rows = Tensor::from_vector(std::vector<float>(16, 0.0f), {2, 8});
  EXPECT_THAT(error_of([&] { decode_stack_(two_rows, {}, 1e-6f, 0.125f, none, none, step); }),
              HasSubstr("one row"));
  Tensor one_row = Tensor::from_vector(std::vector<float>(8, 0.0f), {1, 8});
  EXPECT_THAT(error_of([&] { decode_stack_(one_row, {}, 1e-6f, 0.125f, none, none, step); }),
              HasSubstr("no layers"));
  // A CPU model's layer: the stack is CUDA-only.
  Tensor w = Tensor::from_vector(std::vector<float>(64, 0.0f), {8, 8});
  Tensor cache = Tensor::empty({4, 16, 1, 8}, DType::f32);
  DecodeStackLayer L;
  L.input_norm = L.post_norm = &w;
  L.q_w = L.k_w = L.v_w = L.o_w = L.gate_w = L.up_w = L.down_w = &w;
  L.k_cache = L.v_cache = &cache;
  EXPECT_THAT(error_of([&] { decode_stack_(one_row, {L}, 1e-6f, 0.125f, none, none, step); }),
              HasSubstr("not available"));
}

}  // namespace
}  // namespace gyre::ops
