// Bad input to small CLI commands exits 2 with a message naming the flag, before any work:
// `gyre init-model` refuses an --output folder that already holds a model (random weights used to
// replace a trained model.safetensors with exit 0) unless --force, and a --std that is not a
// finite number > 0 (NaN wrote an all-NaN model); `gyre reward` refuses a --rm-timeout <= 0
// (every remote attempt timed out at once and the retries ran until killed). `gyre train` checks
// its rollout / sampling / reward flags before it loads anything, names --hf-checkpoint when there
// is no model, and refuses a config file that sets a flag twice or leaves a quote open; output
// paths that cannot be written (train --save, init-model --output) are user errors naming the flag;
// `gyre bench` refuses sizes past what a step can index; a GYRE_NUM_THREADS that is not a whole
// number in [1, 4096] stops any command, naming the variable (it used to become 1 thread).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "gyre/model/named_shapes.h"
#include "test_util.h"

using namespace gyre;

namespace {

test::CommandResult gyre_cmd(const std::string& args) {
  return test::run_command("timeout 60 " + test::gyre_bin() + " " + args);
}

}  // namespace

TEST(CliBadInput, NumThreadsMustBeAWholeNumberInRange) {
  for (const char* v : {"abc", "0", "-2", "8x", "100000"}) {
    auto r = test::run_command(std::string("GYRE_NUM_THREADS=") + v + " timeout 60 " +
                               test::gyre_bin() + " version");
    EXPECT_EQ(r.exit_code, 2) << v << ": " << r.out << r.err;
    EXPECT_NE(r.err.find("GYRE_NUM_THREADS"), std::string::npos) << v << ": " << r.err;
  }
  auto r = test::run_command("GYRE_NUM_THREADS=3 timeout 60 " + test::gyre_bin() + " version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// --shape writes a named real shape's folder (the scale run serves random weights of real
// shapes); exactly one of --shape and --config.
TEST(CliBadInput, InitModelTakesANamedShapeOrAConfig) {
  const std::string out = test::temp_dir("init_model_shape") + "/m";
  auto r = gyre_cmd("init-model --shape tiny --output " + out + " --seed 3 --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(
      r.out.find("\"parameters\": " + std::to_string(model::named_shape("tiny").num_parameters())),
      std::string::npos)
      << r.out;
  r = gyre_cmd("inspect --model " + out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("qwen2"), std::string::npos) << r.out;
  r = gyre_cmd("init-model --shape qwen9 --output " + out + "_bad");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown model shape 'qwen9'; known shapes: tiny"), std::string::npos)
      << r.err;
  r = gyre_cmd("init-model --output " + out + "_none");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("exactly one of --config FILE or --shape NAME"), std::string::npos) << r.err;
  const std::string cfg = test::source_path("tests/fixtures/models/qwen3_tiny/config.json");
  r = gyre_cmd("init-model --shape tiny --config " + cfg + " --output " + out + "_both");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out + "_both/model.safetensors"));
}

TEST(CliBadInput, InitModelKeepsAnExistingModelAndChecksStd) {
  const std::string cfg = test::source_path("tests/fixtures/models/qwen3_tiny/config.json");
  const std::string out = test::temp_dir("init_model") + "/m";
  auto r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto written = std::filesystem::last_write_time(out + "/model.safetensors");
  r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already holds"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(std::filesystem::last_write_time(out + "/model.safetensors"), written);
  r = gyre_cmd("init-model --config " + cfg + " --output " + out + " --seed 2 --force");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* std_arg : {"nan", "-1", "0", "inf"}) {
    r = gyre_cmd("init-model --config " + cfg + " --output " + out + "_std --std " + std_arg);
    EXPECT_EQ(r.exit_code, 2) << std_arg;
    EXPECT_NE(r.err.find("--std"), std::string::npos) << std_arg << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(out + "_std/model.safetensors")) << std_arg;
  }
}

TEST(CliBadInput, RewardTimeoutsMustBePositive) {
  const std::string dir = test::temp_dir("reward_timeout");
  test::write_file(dir + "/r.jsonl", R"({"response":"4","label":"4"})"
                                     "\n");
  for (const char* flag : {"--rm-timeout", "--custom-rm-timeout"})
    for (const char* v : {"-1", "0"}) {
      const auto r =
          gyre_cmd(std::string("reward --rm-type remote_rm --rm-url http://127.0.0.1:1/x ") +
                   "--input " + dir + "/r.jsonl " + flag + " " + v);
      EXPECT_NE(r.exit_code, 0) << flag << " " << v;
      EXPECT_NE(r.exit_code, 124) << flag << " " << v << ": timed out";
      EXPECT_NE(r.err.find(flag), std::string::npos) << flag << " " << v << ": " << r.err;
    }
}

namespace {

// The quick-start's GRPO config, one short rollout, from the source tree (its paths are relative).
test::CommandResult train(const std::string& args) {
  return test::run_command(
      "cd " + test::source_path("") + " && timeout 120 " + test::gyre_bin() +
      " train --config examples/quickstart/grpo.yaml --num-rollout 1"
      " --rollout-batch-size 4 --n-samples-per-prompt 2"
      " --global-batch-size 8 --micro-batch-size 8 --eval-interval 0 --quiet " +
      args);
}

}  // namespace

// Rollout, sampling and reward settings are checked before anything is loaded: with a model
// folder that does not exist, the error is still about the flag (they used to be refused only per
// request or per sample, after the model loaded, each group of the first rollout dropped).
TEST(CliBadInput, TrainChecksRolloutSettingsBeforeLoading) {
  const std::pair<const char*, const char*> cases[] = {
      {"--rollout-top-p 1.5", "--rollout-top-p"},
      {"--rollout-top-p 0", "--rollout-top-p"},
      {"--rollout-top-k -5", "--rollout-top-k"},
      {"--rm-type nonsense", "--rm-type 'nonsense'"},
      {"--rm-type remote_rm", "--rm-url"},
      // One worker thread per concurrent sample: this many aborted the process in a thread start.
      {"--rollout-concurrency 100000000000", "--rollout-concurrency"},
  };
  for (const auto& [bad, named] : cases) {
    const auto r = train(std::string("--hf-checkpoint /nonexistent/model ") + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find(named), std::string::npos) << bad << ": " << r.err;
  }
  // A response budget the model's context cannot hold: named with the model's limit, before the
  // weights are read.
  const auto r = train("--rollout-max-response-len 1000000");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--rollout-max-response-len 1000000"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_position_embeddings"), std::string::npos) << r.err;
}

// slime's --eval-* overrides: an eval set with its own column names is read with --eval-input-key /
// --eval-label-key (without them its rows have no prompt, and the error names the eval flag);
// --skip-eval-before-train drops the evaluation before the first rollout.
TEST(CliBadInput, TrainEvalOverridesReadTheEvalSetAndSkipTheFirstEval) {
  const std::string dir = test::temp_dir("eval_keys");
  {
    std::ofstream f(dir + "/q.jsonl");
    f << "{\"question\": \"12+30=\", \"answer\": \"42\"}\n"
      << "{\"question\": \"7+8=\", \"answer\": \"15\"}\n";
  }
  const std::string eval = "--eval-prompt-data q " + dir + "/q.jsonl --eval-interval 1 ";
  auto r = train(eval + "--num-rollout 2 --save " + dir + "/a");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("no key 'prompt' (set --eval-input-key (or --input-key)"), std::string::npos)
      << r.err;
  const auto eval_rows = [](const std::string& metrics) {
    std::ifstream f(metrics);
    int n = 0;
    for (std::string line; std::getline(f, line);)
      n += line.find("\"eval/q\"") != std::string::npos;
    return n;
  };
  const std::string keys =
      "--eval-input-key question --eval-label-key answer --eval-top-p 0.9 "
      "--eval-top-k 5 --eval-min-new-tokens 1 --num-rollout 2 ";
  r = train(eval + keys + "--save " + dir + "/b");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(eval_rows(dir + "/b/metrics.jsonl"), 3);  // before training, after rollouts 0 and 1
  r = train(eval + keys + "--skip-eval-before-train --save " + dir + "/c");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(eval_rows(dir + "/c/metrics.jsonl"), 2);
  r = train(eval + keys + "--eval-top-p 2");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--eval-top-p must be in (0, 1]"), std::string::npos) << r.err;
}

// --start-rollout-id (slime): the run starts at that rollout id (no evaluation before training,
// which belongs to rollout 0) and a start past the run's end is refused.
TEST(CliBadInput, TrainStartRolloutId) {
  const std::string dir = test::temp_dir("start_rollout_id");
  auto r = train("--num-rollout 3 --start-rollout-id 2 --save " + dir + "/a");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(dir + "/a/metrics.jsonl");
  std::vector<std::string> rows;
  for (std::string line; std::getline(f, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].rfind("{\"step\":3,", 0), 0u) << rows[0];  // a row's step: rollouts done
  EXPECT_TRUE(std::filesystem::exists(dir + "/a/iter_0000002")) << dir;
  r = train("--num-rollout 3 --start-rollout-id 4");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--start-rollout-id 4 is past the run's 3 rollouts"), std::string::npos)
      << r.err;
}

// A slime script's Megatron arguments (rl/loop/megatron_args.h): the quick-start model's MODEL_ARGS
// and the usual PERF / MISC knobs run; a MODEL_ARGS value that disagrees with config.json stops the
// run before any work, naming both.
TEST(CliBadInput, TrainChecksMegatronModelArgsAgainstTheConfig) {
  const std::string model_args =
      "--swiglu --num-layers 2 --hidden-size 64 --ffn-hidden-size 192 --num-attention-heads 4 "
      "--group-query-attention --num-query-groups 2 --use-rotary-position-embeddings "
      "--disable-bias-linear --normalization RMSNorm --norm-epsilon 1e-6 --rotary-base 10000 "
      "--vocab-size 16 --kv-channels 16 --qk-layernorm ";
  const std::string knobs =
      "--attention-dropout 0.0 --hidden-dropout 0.0 --accumulate-allreduce-grads-in-fp32 "
      "--attention-softmax-in-fp32 --attention-backend flash --optimizer adam "
      "--recompute-granularity full --recompute-method uniform --use-distributed-optimizer ";
  auto r = train(model_args + knobs);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("accepted and ignored (no separate gyre knob): --attention-backend flash, "
                       "--recompute-method uniform, --use-distributed-optimizer"),
            std::string::npos)
      << r.err;
  r = train(model_args + "--hidden-size 896");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--hidden-size 896 does not match the model: "
                       "examples/quickstart/base_model/config.json has hidden_size = 64"),
            std::string::npos)
      << r.err;
  r = train(model_args + "--pipeline-model-parallel-size 2");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--pipeline-model-parallel-size 2: not supported"), std::string::npos)
      << r.err;
}

// Without a model, the error says which flag (and config key) sets it and, when it is set, the
// folder that was searched (it used to be ": no tokenizer.json in this directory").
TEST(CliBadInput, TrainNamesTheModelFlag) {
  const std::string dir = test::temp_dir("train_no_model");
  test::write_file(dir + "/empty.yaml", "");
  auto r = test::run_command("timeout 60 " + test::gyre_bin() + " train --config " + dir +
                             "/empty.yaml");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--hf-checkpoint"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("hf-checkpoint:"), std::string::npos) << r.err;
  r = train("--hf-checkpoint " + dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--hf-checkpoint"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no tokenizer.json in " + dir), std::string::npos) << r.err;
}

// Without --rm-type the prompts' metadata.rm_type picks each reward (slime's dispatch); prompts
// without one stop the run before the models load, naming the first such prompt and the flags.
TEST(CliBadInput, TrainPromptsWithoutARewardNameTheFirst) {
  auto r = test::run_command("cd " + test::source_path("") + " && timeout 60 " + test::gyre_bin() +
                             " train --config examples/quickstart/grpo.yaml --rm-type '' "
                             "--num-rollout 1");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("no reward for prompt 0 of --prompt-data examples/quickstart/train.jsonl"),
            std::string::npos)
      << r.err;
}

// A --load folder that cannot be read is an error about --load (it escaped as an unlabelled
// filesystem exception). A symlink loop stands in for a permission problem, which root (CI) never
// meets.
TEST(CliBadInput, TrainUnreadableLoadNamesTheFlag) {
  const std::string dir = test::temp_dir("train_load_loop");
  ASSERT_EQ(test::run_command("ln -sfn " + dir + "/loop " + dir + "/loop").exit_code, 0);
  const auto r = train("--load " + dir + "/loop");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--load " + dir + "/loop: cannot read"), std::string::npos) << r.err;
}

// A config file that sets a flag twice or leaves a quote open fails naming the file, line and key
// (yaml-cpp took the last value, and read an open quote to the end of the file).
TEST(CliBadInput, TrainConfigDuplicateKeyAndOpenQuote) {
  const std::string dir = test::temp_dir("train_yaml");
  test::write_file(dir + "/dup.yaml", "lr: 0.001\nseed: 1\nlr: 0.5\n");
  auto r = test::run_command(test::gyre_bin() + " train --config " + dir + "/dup.yaml");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("dup.yaml:3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("`lr` is set twice"), std::string::npos) << r.err;
  test::write_file(dir + "/quote.yaml", "seed: 1\nhf-checkpoint: \"examples/quickstart\n");
  r = test::run_command(test::gyre_bin() + " train --config " + dir + "/quote.yaml");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("quote.yaml:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("`hf-checkpoint`"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("never closed"), std::string::npos) << r.err;
}

// Output paths that cannot be written are the user's to fix: exit 2 with the flag and the path
// (they used to be "internal: filesystem error", exit 3).
TEST(CliBadInput, OutputPathErrorsNameTheFlag) {
  const std::string dir = test::temp_dir("out_paths");
  const std::string file = dir + "/a_file";
  test::write_file(file, "x");
  auto r = train("--save " + file);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--save " + file), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("internal"), std::string::npos) << r.err;
  r = train("--save-debug-rollout-data " + file + "/r_{rollout_id}.jsonl");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--save-debug-rollout-data"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("internal"), std::string::npos) << r.err;
  const std::string cfg = test::source_path("tests/fixtures/models/qwen3_tiny/config.json");
  for (const std::string& out : {file, file + "/m"}) {
    r = gyre_cmd("init-model --config " + cfg + " --output " + out);
    EXPECT_EQ(r.exit_code, 2) << out << ": " << r.err;
    EXPECT_NE(r.err.find("--output " + out), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("internal"), std::string::npos) << r.err;
  }
}

// Sizes past what a step can index are refused up front, naming the flags and the limit (they used
// to end in "internal: std::bad_alloc").
TEST(CliBadInput, BenchRejectsAbsurdSizes) {
  const std::string model = test::source_path("examples/quickstart/base_model");
  for (const std::string& args :
       {std::string("train --seq-len 99999999999"), std::string("logprob --batch-size 99999999999"),
        std::string("rollout --batch-size 3000000000 --prompt-len 4 --new-tokens 4")}) {
    const auto r = gyre_cmd("bench " + args + " --model " + model + " --steps 1 --warmup 0");
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find("--batch-size"), std::string::npos) << args << ": " << r.err;
    EXPECT_NE(r.err.find("2147483647"), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(r.err.find("bad_alloc"), std::string::npos) << args << ": " << r.err;
  }
}
