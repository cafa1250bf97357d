// `gyre bench train|logprob|rollout` end to end on the CPU with the tiny shape: exactly one JSON
// line on stdout whose figures are positive and agree with each other (tokens per step, tokens/s
// x time, output tokens = prompts x new tokens x runs, resident memory at least the weights and
// optimizer state); bad input exits 2 with a message naming the problem and prints nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "gyre/model/named_shapes.h"
#include "test_util.h"

using namespace gyre;
using nlohmann::json;

namespace {

test::CommandResult bench(const std::string& args) {
  return test::run_command("timeout 60 " + test::gyre_bin() + " bench " + args);
}

// The single JSON line of a successful run.
json one_line(const test::CommandResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

int64_t tiny_params() { return model::named_shape("tiny").num_parameters(); }

void expect_common(const json& j, const std::string& workload) {
  EXPECT_EQ(j["bench"], workload);
  EXPECT_EQ(j["shape"], "tiny");
  EXPECT_TRUE(j["model"].is_null());
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["precision"], "f32");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["params"].get<int64_t>(), tiny_params());
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
  EXPECT_FALSE(j.contains("mfu")) << "MFU is a GPU figure";
}

}  // namespace

TEST(BenchCli, TrainStep) {
  auto j = one_line(bench("train --shape tiny --device cpu --batch-size 2 --seq-len 48 --steps 2"));
  expect_common(j, "train");
  EXPECT_EQ(j["batch_size"], 2);
  EXPECT_EQ(j["seq_len"], 48);
  EXPECT_EQ(j["steps"], 2);
  EXPECT_EQ(j["tokens_per_step"], 96);
  const double ms = j["ms_per_step"].get<double>(), tps = j["tokens_per_s"].get<double>();
  EXPECT_GT(ms, 0.0);
  EXPECT_NEAR(tps * ms / 1e3, 96.0, 96.0 * 1e-6);
  EXPECT_GT(j["model_tflops"].get<double>(), 0.0);
  // Weights, gradients and the two AdamW moments stay resident: at least 4 f32 copies.
  EXPECT_GE(j["peak_memory_bytes"].get<int64_t>(), 16 * tiny_params());
  // Random weights (std 0.02) over a 512-token vocabulary: the loss is about ln 512.
  EXPECT_NEAR(j["loss"].get<double>(), std::log(512.0), 0.5);

  // The seed fixes weights and tokens: the same loss again; another seed, another loss.
  auto again = one_line(bench("train --shape tiny --batch-size 2 --seq-len 48 --steps 2"));
  EXPECT_EQ(again["loss"], j["loss"]);
  auto other = one_line(bench("train --shape tiny --batch-size 2 --seq-len 48 --steps 2 --seed 5"));
  EXPECT_NE(other["loss"], j["loss"]);
}

TEST(BenchCli, LogprobWithEntropy) {
  auto j = one_line(
      bench("logprob --shape tiny --device cpu --batch-size 3 --seq-len 40 --steps 2 --entropy"));
  expect_common(j, "logprob");
  EXPECT_EQ(j["entropy"], true);
  EXPECT_EQ(j["tokens_per_step"], 120);
  EXPECT_NEAR(j["tokens_per_s"].get<double>() * j["ms_per_step"].get<double>() / 1e3, 120.0,
              120.0 * 1e-6);
  EXPECT_GE(j["peak_memory_bytes"].get<int64_t>(), 4 * tiny_params());
  EXPECT_FALSE(j.contains("loss"));
}

TEST(BenchCli, RolloutBatch) {
  auto j = one_line(bench(
      "rollout --shape tiny --device cpu --batch-size 3 --prompt-len 10 --new-tokens 6 --steps 2"));
  expect_common(j, "rollout");
  EXPECT_EQ(j["prompt_len"], 10);
  EXPECT_EQ(j["new_tokens"], 6);
  EXPECT_EQ(j["output_tokens"], 3 * 6 * 2);  // ignore_eos: exactly new tokens per prompt
  const double run_s = j["ms_per_run"].get<double>() / 1e3;
  EXPECT_GT(run_s, 0.0);
  EXPECT_NEAR(j["tokens_per_s"].get<double>() * run_s * 2, 36.0, 36.0 * 1e-6);
  EXPECT_FALSE(j.contains("ms_per_token")) << "batch-1 figure only";
  EXPECT_GE(j["peak_memory_bytes"].get<int64_t>(), 4 * tiny_params());
}

TEST(BenchCli, RolloutBatchOneReportsMsPerToken) {
  auto j = one_line(
      bench("rollout --shape tiny --batch-size 1 --prompt-len 16 --new-tokens 8 --steps 1"));
  EXPECT_EQ(j["output_tokens"], 8);
  EXPECT_GT(j["ms_per_token"].get<double>(), 0.0);
  EXPECT_GT(j["ms_per_token_e2e"].get<double>(), 0.0);
  EXPECT_GT(j["prefill_step_ms"].get<double>(), 0.0);
}

TEST(BenchCli, ModelFolder) {
  const std::string dir = test::source_path("tests/fixtures/models/qwen2_tiny");
  auto j = one_line(bench("logprob --model " + dir + " --batch-size 2 --seq-len 16 --steps 1"));
  EXPECT_EQ(j["bench"], "logprob");
  EXPECT_TRUE(j["shape"].is_null());
  EXPECT_EQ(j["model"], dir);
  EXPECT_EQ(j["tokens_per_step"], 32);
}

TEST(BenchCli, CudaWithoutGpuIsAnError) {
  auto r = bench("train --shape tiny --device cuda --batch-size 1 --seq-len 16 --steps 1");
  if (r.exit_code == 0) {  // a CUDA build on a GPU machine: then it must report the GPU figures
    auto j = one_line(r);
    EXPECT_EQ(j["device"], "cuda");
    EXPECT_GT(j["mfu"].get<double>(), 0.0);
    return;
  }
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.err.find("built without the CUDA backend") != std::string::npos ||
              r.err.find("no CUDA device is visible") != std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(BenchCli, BadInputExits2WithMessage) {
  const std::pair<std::string, std::string> cases[] = {
      {"--shape tiny", "missing the workload"},
      {"train logprob --shape tiny", "one workload at a time"},
      {"generate --shape tiny", "unknown workload 'generate': use train, logprob or rollout"},
      {"train --shape qwen9",
       "unknown model shape 'qwen9'; known shapes: tiny, qwen2.5-0.5b, "
       "qwen2.5-1.5b, qwen2.5-7b, qwen3-8b"},
      {"train", "give exactly one of --model DIR"},
      {"train --shape tiny --model /nonexistent", "give exactly one of --model DIR"},
      {"train --shape tiny --batch-size 0", "--batch-size must be >= 1, got 0"},
      {"logprob --shape tiny --seq-len -4", "--seq-len must be >= 1, got -4"},
      {"train --shape tiny --steps 0", "--steps must be >= 1, got 0"},
      {"train --shape tiny --warmup -1", "--warmup must be >= 0, got -1"},
      {"rollout --shape tiny --prompt-len 0", "--prompt-len must be >= 1, got 0"},
      {"rollout --shape tiny --new-tokens 0", "--new-tokens must be >= 1, got 0"},
      {"train --shape tiny --device tpu", "flag --device: 'tpu' is not one of [cpu, cuda]"},
      {"train --shape tiny --precision bf16", "--precision bf16 is a GPU mode"},
      {"train --shape tiny --layers 3", "--layers 3: shape tiny has 2 layers"},
      {"train --shape tiny --batchsize 2", "did you mean --batch-size?"},
      {"logprob --model /nonexistent/folder", "/nonexistent/folder/config.json"},
      {"rollout --shape tiny --batch-size 1 --prompt-len 4000 --new-tokens 200",
       "exceeds the context length 4096"},
      // Fits int32 (2.05e9 tokens) but not memory: the KV pool of the tiny shape would be ~1 TB.
      {"rollout --shape tiny --batch-size 500000 --prompt-len 2048 --new-tokens 2048",
       "the KV cache for --batch-size 500000 x (--prompt-len 2048 + --new-tokens 2048) tokens"},
  };
  for (const auto& [args, message] : cases) {
    auto r = bench(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\nstderr: " << r.err;
    EXPECT_EQ(r.out, "") << args;
  }
}
