// TrainConfig::derive_and_validate rejects, before any work, rollout / sampling / reward settings
// that the engine or the reward function would only refuse per request or per sample, after the
// model had loaded (each group of the first rollout was dropped with a warning): --rollout-top-p
// outside (0, 1], --rollout-top-k below -1, an unknown --rm-type, remote_rm without --rm-url;
// sizes past what a rollout can hold (they failed in an allocation or a thread start); and a
// model-less run, whose error names --hf-checkpoint and its config key. Each error names the flag.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "gyre/rl/loop/train_config.h"
#include "test_util.h"
#include "valid_train_config.h"

namespace gyre::rl {
namespace {

using test::error_of;

TrainConfig valid() { return test_support::valid_train_config(); }

// The error of derive_and_validate() after `edit`, which must name `flag`.
void expect_flag_error(const std::function<void(TrainConfig&)>& edit, const std::string& flag) {
  TrainConfig c = valid();
  edit(c);
  const std::string e = error_of([&] { c.derive_and_validate(64); });
  EXPECT_NE(e.find(flag), std::string::npos) << "error '" << e << "' does not name " << flag;
}

TEST(TrainConfigRolloutFlags, BadValuesNameTheFlag) {
  EXPECT_EQ(error_of([] { valid().derive_and_validate(64); }), "");
  for (double p : {1.5, 0.0, -0.1, std::nan("")})
    expect_flag_error([&](TrainConfig& c) { c.rollout_top_p = p; }, "--rollout-top-p");
  expect_flag_error([](TrainConfig& c) { c.rollout_top_k = -5; }, "--rollout-top-k");
  expect_flag_error([](TrainConfig& c) { c.rollout_top_k = int64_t(1) << 32; }, "--rollout-top-k");
  expect_flag_error([](TrainConfig& c) { c.rollout_temperature = INFINITY; },
                    "--rollout-temperature");
  expect_flag_error([](TrainConfig& c) { c.rollout_max_response_len = int64_t(1) << 32; },
                    "--rollout-max-response-len");
  expect_flag_error(
      [](TrainConfig& c) {
        c.rollout_stop = {std::string("</s>"), std::string()};
      },
      "--rollout-stop");
  expect_flag_error([](TrainConfig& c) { c.rollout_stop_token_ids = {-1}; },
                    "--rollout-stop-token-ids");
  expect_flag_error([](TrainConfig& c) { c.rm_type = std::string("nonsense"); },
                    "--rm-type 'nonsense'");
  expect_flag_error([](TrainConfig& c) { c.rm_type = std::string("remote_rm"); }, "--rm-url");
  expect_flag_error([](TrainConfig& c) { c.rm_timeout = 0; }, "--rm-timeout");
  expect_flag_error([](TrainConfig& c) { c.eval_temperature = -1.0; }, "--eval-temperature");
  // slime's --eval-* sampling and data overrides.
  for (double p : {1.5, 0.0, std::nan("")})
    expect_flag_error([&](TrainConfig& c) { c.eval_top_p = p; }, "--eval-top-p");
  expect_flag_error([](TrainConfig& c) { c.eval_top_k = -2; }, "--eval-top-k");
  expect_flag_error([](TrainConfig& c) { c.eval_min_new_tokens = -1; }, "--eval-min-new-tokens");
  expect_flag_error([](TrainConfig& c) { c.eval_max_prompt_len = 0; }, "--eval-max-prompt-len");
  expect_flag_error([](TrainConfig& c) { c.eval_input_key = std::string(); }, "--eval-input-key");
  expect_flag_error([](TrainConfig& c) { c.start_rollout_id = -1; }, "--start-rollout-id");
  expect_flag_error([](TrainConfig& c) { c.start_rollout_id = 4; },
                    "--start-rollout-id 4 is past the run's 3 rollouts");
  expect_flag_error([](TrainConfig& c) { c.rollout_concurrency = 0; }, "--rollout-concurrency");
  expect_flag_error([](TrainConfig& c) { c.page_size = 0; }, "--page-size");
  // Absurd sizes are named with their limit instead of failing in an allocation (or a thread
  // start) later: samples per rollout and worker threads.
  expect_flag_error([](TrainConfig& c) { c.n_samples_per_prompt = int64_t(5) << 60; },
                    "--n-samples-per-prompt");
  expect_flag_error(
      [](TrainConfig& c) {
        c.rollout_batch_size = int64_t(1) << 40;
        c.global_batch_size = c.rollout_batch_size;
      },
      "--rollout-batch-size");
  expect_flag_error([](TrainConfig& c) { c.over_sampling_batch_size = int64_t(1) << 40; },
                    "--over-sampling-batch-size");
  expect_flag_error([](TrainConfig& c) { c.rollout_concurrency = int64_t(1) << 36; },
                    "--rollout-concurrency");

  // What stays allowed: top-k 0 / -1 (off), top-p 1, every built-in reward (boxed_ too), greedy
  // evaluation, no --rm-type (the prompts' metadata.rm_type then picks each reward: checked on the
  // loaded prompts, rewards::check_metadata_rm_type), no reward for SFT or a replay of saved
  // rollouts, any --rm-type next to a custom one.
  for (auto edit : std::vector<std::function<void(TrainConfig&)>>{
           [](TrainConfig& c) { c.rollout_top_k = 0; },
           [](TrainConfig& c) { c.rollout_top_p = 1; },
           [](TrainConfig& c) { c.rm_type = std::string("boxed_exact_match"); },
           [](TrainConfig& c) { c.rm_type = std::string("dapo"); },
           [](TrainConfig& c) { c.eval_temperature = 0.0; },
           [](TrainConfig& c) { c.rm_type.clear(); },
           [](TrainConfig& c) { c.rm_type.clear(), c.loss_type = std::string("sft_loss"); },
           [](TrainConfig& c) {
             c.rm_type = std::string("x"), c.custom_rm_path = std::string("rm.so");
           },
       }) {
    TrainConfig c = valid();
    edit(c);
    EXPECT_EQ(error_of([&] { c.derive_and_validate(64); }), "");
  }
}

TEST(TrainConfigRolloutFlags, NoModelNamesTheFlagAndItsConfigKey) {
  TrainConfig c = valid();
  c.hf_checkpoint.clear();
  const std::string e = error_of([&] { c.derive_and_validate(64); });
  EXPECT_NE(e.find("--hf-checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find("hf-checkpoint:"), std::string::npos) << e;  // the --config spelling
}

}  // namespace
}  // namespace gyre::rl
