// TrainConfig::derive_and_validate rejects, before any work, an optimiser or a run that cannot
// train: a negative, NaN or infinite --lr (a negative rate is gradient ascent, and a NaN one used
// to surface as a misleading "not bitwise reproducible" error mid-training), a negative or
// non-finite --clip-grad, and --num-rollout / --num-epoch below 1 (which exited 0 having trained
// nothing). Each error names the flag.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "gyre/rl/loop/train_config.h"
#include "test_util.h"
#include "valid_train_config.h"

namespace gyre::rl {
namespace {

using test::error_of;

TrainConfig valid() { return test_support::valid_train_config(); }

TEST(TrainConfigOptimizerFlags, BadValuesNameTheFlag) {
  EXPECT_EQ(error_of([] { valid().derive_and_validate(64); }), "");
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  for (double lr : {-1.0, nan, inf}) {
    TrainConfig c = valid();
    c.lr = lr;
    EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("--lr must be"), std::string::npos)
        << lr;
  }
  {
    TrainConfig c = valid();
    c.lr = 0;  // allowed: a run that keeps the weights (e.g. to check rollout / trainer parity)
    EXPECT_EQ(error_of([&] { c.derive_and_validate(64); }), "");
  }
  for (double clip : {-1.0, nan, inf}) {
    TrainConfig c = valid();
    c.clip_grad = clip;
    EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("--clip-grad must be"),
              std::string::npos)
        << clip;
  }
  for (int64_t n : {0, -1}) {
    TrainConfig c = valid();
    c.num_rollout = n;
    EXPECT_NE(error_of([&] { c.derive_and_validate(64); }).find("--num-rollout must be >= 1"),
              std::string::npos)
        << n;
    TrainConfig e = valid();
    e.num_rollout.reset();
    e.num_epoch = n;
    EXPECT_NE(error_of([&] { e.derive_and_validate(64); }).find("--num-epoch must be >= 1"),
              std::string::npos)
        << n;
  }
}

}  // namespace
}  // namespace gyre::rl
