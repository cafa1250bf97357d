// A slime launch script's Megatron and SGLang arguments under `gyre train`
// (rl/loop/megatron_args.h): the MODEL_ARGS blocks of slime's scripts/models/qwen2.5-7B.sh and
// qwen3-8B.sh are accepted and match those models' configs; each architecture value that disagrees
// with config.json is an error naming the flag and the config key (slime's HF-config validation);
// knobs gyre has one answer for are refused when they ask for another; --recompute-granularity full
// turns recomputation on; the performance knobs are accepted and listed as ignored.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gyre/core/flags.h"
#include "gyre/model/named_shapes.h"
#include "gyre/rl/loop/train_config.h"
#include "test_util.h"

namespace gyre::rl {
namespace {

using test::error_of;

const std::vector<std::string> kQwen25_7B = {"--swiglu",
                                             "--num-layers",
                                             "28",
                                             "--hidden-size",
                                             "3584",
                                             "--ffn-hidden-size",
                                             "18944",
                                             "--num-attention-heads",
                                             "28",
                                             "--group-query-attention",
                                             "--num-query-groups",
                                             "4",
                                             "--use-rotary-position-embeddings",
                                             "--disable-bias-linear",
                                             "--add-qkv-bias",
                                             "--normalization",
                                             "RMSNorm",
                                             "--norm-epsilon",
                                             "1e-06",
                                             "--rotary-base",
                                             "1000000",
                                             "--vocab-size",
                                             "152064",
                                             "--untie-embeddings-and-output-weights"};
const std::vector<std::string> kQwen3_8B = {"--swiglu",
                                            "--num-layers",
                                            "36",
                                            "--hidden-size",
                                            "4096",
                                            "--ffn-hidden-size",
                                            "12288",
                                            "--num-attention-heads",
                                            "32",
                                            "--group-query-attention",
                                            "--num-query-groups",
                                            "8",
                                            "--use-rotary-position-embeddings",
                                            "--disable-bias-linear",
                                            "--normalization",
                                            "RMSNorm",
                                            "--norm-epsilon",
                                            "1e-6",
                                            "--rotary-base",
                                            "1000000",
                                            "--vocab-size",
                                            "151936",
                                            "--kv-channels",
                                            "128",
                                            "--qk-layernorm",
                                            "--untie-embeddings-and-output-weights"};
// slime's PERF_ARGS / MISC_ARGS / WANDB_ARGS / SGLANG_ARGS lines of the same scripts.
const std::vector<std::string> kPerfAndMisc = {"--tensor-model-parallel-size",
                                               "2",
                                               "--sequence-parallel",
                                               "--pipeline-model-parallel-size",
                                               "1",
                                               "--context-parallel-size",
                                               "1",
                                               "--expert-model-parallel-size",
                                               "1",
                                               "--expert-tensor-parallel-size",
                                               "1",
                                               "--recompute-granularity",
                                               "full",
                                               "--recompute-method",
                                               "uniform",
                                               "--recompute-num-layers",
                                               "1",
                                               "--optimizer",
                                               "adam",
                                               "--attention-dropout",
                                               "0.0",
                                               "--hidden-dropout",
                                               "0.0",
                                               "--accumulate-allreduce-grads-in-fp32",
                                               "--attention-softmax-in-fp32",
                                               "--attention-backend",
                                               "flash",
                                               "--use-wandb",
                                               "--wandb-project",
                                               "slime-dev",
                                               "--sglang-mem-fraction-static",
                                               "0.7",
                                               "--no-gradient-accumulation-fusion",
                                               "--use-distributed-optimizer",
                                               "--offload-train",
                                               "--no-offload-rollout",
                                               "--keep-old-actor",
                                               "--wandb-run-id",
                                               "run-7",
                                               "--sglang-cuda-graph-bs",
                                               "1",
                                               "2",
                                               "4"};

// Parses `args` into a fresh config (the required flags set) and runs both checks against `mc`;
// returns the error text ("" when both pass).
struct Parsed {
  TrainConfig cfg;
  std::string error;
};
Parsed run(std::vector<std::string> args, const model::ModelConfig& mc,
           const std::string& device = "cpu") {
  Parsed p;
  FlagSet flags;
  p.cfg.register_flags(flags);
  for (const char* a : {"--hf-checkpoint", "m", "--rm-type", "math", "--num-rollout", "3",
                        "--rollout-batch-size", "4", "--n-samples-per-prompt", "2"})
    args.push_back(a);
  args.push_back("--device");
  args.push_back(device);
  p.error = error_of([&] {
    flags.parse(args);
    p.cfg.validate();
    p.cfg.megatron.check_against_model(mc, "m/config.json");
  });
  return p;
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(TrainConfigMegatronArgs, SlimeScriptsOfRealModelsPass) {
  const auto q25 = run(with(kQwen25_7B, kPerfAndMisc), model::named_shape("qwen2.5-7b"));
  EXPECT_EQ(q25.error, "");
  EXPECT_TRUE(q25.cfg.recompute_activations);        // --recompute-granularity full
  EXPECT_EQ(q25.cfg.tensor_model_parallel_size, 2);  // a gyre flag, taken as it is
  EXPECT_EQ(q25.cfg.megatron.ignored(),
            "--attention-backend flash, --recompute-method uniform, --recompute-num-layers 1, "
            "--wandb-project slime-dev, --wandb-run-id run-7, --sglang-mem-fraction-static 0.7, "
            "--use-distributed-optimizer, --sequence-parallel, --no-gradient-accumulation-fusion, "
            "--use-wandb, --offload-train, --no-offload-rollout, --keep-old-actor, "
            "--sglang-cuda-graph-bs 1 2 4");
  EXPECT_EQ(run(kQwen3_8B, model::named_shape("qwen3-8b")).error, "");
  // Without any of them nothing is checked or ignored.
  const auto none = run({}, model::named_shape("qwen3-8b"));
  EXPECT_EQ(none.error, "");
  EXPECT_FALSE(none.cfg.recompute_activations);
  EXPECT_EQ(none.cfg.megatron.ignored(), "");
}

// slime's flagship script, scripts/run-qwen3-4B.sh (with scripts/models/qwen3-4B.sh's MODEL_ARGS),
// argument for argument: every flag is known, the whole list validates, and the MODEL_ARGS match
// Qwen/Qwen3-4B's config.json.
TEST(TrainConfigMegatronArgs, SlimesRunQwen3_4BArgumentListIsAccepted) {
  const std::vector<std::string> args = {
      "--actor-num-nodes", "1", "--actor-num-gpus-per-node", "8", "--colocate",
      // MODEL_ARGS
      "--swiglu", "--num-layers", "36", "--hidden-size", "2560", "--ffn-hidden-size", "9728",
      "--num-attention-heads", "32", "--group-query-attention", "--num-query-groups", "8",
      "--use-rotary-position-embeddings", "--disable-bias-linear", "--normalization", "RMSNorm",
      "--norm-epsilon", "1e-6", "--rotary-base", "1000000", "--vocab-size", "151936",
      "--kv-channels", "128", "--qk-layernorm",
      // CKPT_ARGS
      "--hf-checkpoint", "/root/Qwen3-4B", "--ref-load", "/root/Qwen3-4B_torch_dist", "--load",
      "/root/Qwen3-4B_slime/", "--save", "/root/Qwen3-4B_slime/", "--save-interval", "20",
      // ROLLOUT_ARGS
      "--prompt-data", "/root/dapo-math-17k/dapo-math-17k.jsonl", "--input-key", "prompt",
      "--label-key", "label", "--apply-chat-template", "--rollout-shuffle", "--rm-type",
      "deepscaler", "--num-rollout", "3000", "--rollout-batch-size", "32", "--n-samples-per-prompt",
      "8", "--rollout-max-response-len", "8192", "--rollout-temperature", "0.8",
      "--global-batch-size", "256", "--balance-data",
      // EVAL_ARGS
      "--eval-interval", "20", "--eval-prompt-data", "aime", "/root/aime-2024/aime-2024.jsonl",
      "--n-samples-per-eval-prompt", "16", "--eval-max-response-len", "16384", "--eval-top-p",
      "0.7",
      // PERF_ARGS
      "--tensor-model-parallel-size", "2", "--sequence-parallel", "--pipeline-model-parallel-size",
      "1", "--context-parallel-size", "1", "--expert-model-parallel-size", "1",
      "--expert-tensor-parallel-size", "1", "--recompute-granularity", "full", "--recompute-method",
      "uniform", "--recompute-num-layers", "1", "--use-dynamic-batch-size", "--max-tokens-per-gpu",
      "9216",
      // GRPO_ARGS
      "--advantage-estimator", "grpo", "--use-kl-loss", "--kl-loss-coef", "0.00", "--kl-loss-type",
      "low_var_kl", "--entropy-coef", "0.00", "--eps-clip", "0.2", "--eps-clip-high", "0.28",
      // OPTIMIZER_ARGS
      "--optimizer", "adam", "--lr", "1e-6", "--lr-decay-style", "constant", "--weight-decay",
      "0.1", "--adam-beta1", "0.9", "--adam-beta2", "0.98",
      // SGLANG_ARGS
      "--rollout-num-gpus-per-engine", "2", "--sglang-mem-fraction-static", "0.7",
      // MISC_ARGS
      "--attention-dropout", "0.0", "--hidden-dropout", "0.0",
      "--accumulate-allreduce-grads-in-fp32", "--attention-softmax-in-fp32", "--attention-backend",
      "flash"};
  TrainConfig cfg;
  FlagSet flags;
  cfg.register_flags(flags);
  const auto qwen3_4b = model::parse_config_json(
      R"({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560, "intermediate_size": 9728,
          "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
          "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
          "tie_word_embeddings": true, "attention_bias": false,
          "max_position_embeddings": 40960})",
      "Qwen3-4B/config.json");
  EXPECT_EQ(error_of([&] {
              flags.parse(args);
              cfg.validate();
              cfg.megatron.check_against_model(qwen3_4b, "Qwen3-4B/config.json");
            }),
            "");
  EXPECT_TRUE(cfg.balance_data);
  EXPECT_TRUE(cfg.recompute_activations);
  ASSERT_TRUE(cfg.eval_top_p.has_value());
  EXPECT_DOUBLE_EQ(*cfg.eval_top_p, 0.7);
  EXPECT_EQ(cfg.megatron.ignored(),
            "--attention-backend flash, --recompute-method uniform, --recompute-num-layers 1, "
            "--sglang-mem-fraction-static 0.7, --sequence-parallel");
}

TEST(TrainConfigMegatronArgs, AnArchitectureValueThatDisagreesNamesFlagAndKey) {
  const auto q3 = model::named_shape("qwen3-8b");
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--hidden-size", "3584"},
       "--hidden-size 3584 does not match the model: m/config.json has "
       "hidden_size = 4096"},
      {{"--num-layers", "28"}, "num_hidden_layers = 36"},
      {{"--ffn-hidden-size", "18944"}, "intermediate_size = 12288"},
      {{"--num-attention-heads", "28"}, "num_attention_heads = 32"},
      {{"--num-query-groups", "4"}, "num_key_value_heads = 8"},
      {{"--kv-channels", "64"}, "head_dim = 128"},
      {{"--vocab-size", "152064"}, "vocab_size = 151936"},
      {{"--rotary-base", "10000"},
       "--rotary-base 10000 does not match the model: m/config.json "
       "has rope_theta = 1000000"},
      {{"--norm-epsilon", "1e-5"}, "rms_norm_eps = 1e-06"},
      {{"--num-experts", "128"}, "num_experts = 0"},
  };
  for (const auto& [args, want] : cases) {
    // After the full block, so the later (wrong) value wins as in argparse.
    const std::string e = run(with(kQwen3_8B, args), q3).error;
    EXPECT_NE(e.find(want), std::string::npos) << args[0] << ": " << e;
    EXPECT_NE(e.find("slime checks its Megatron model arguments"), std::string::npos) << e;
  }
  // Written differently, the same number: accepted.
  EXPECT_EQ(run(with(kQwen3_8B, {"--norm-epsilon", "0.000001", "--rotary-base", "1e6"}), q3).error,
            "");
}

TEST(TrainConfigMegatronArgs, MissingOrExtraSwitchesOfAModelArgsBlockAreErrors) {
  const auto q25 = model::named_shape("qwen2.5-7b"), q3 = model::named_shape("qwen3-8b");
  const auto without = [](std::vector<std::string> a, const std::string& flag) {
    std::erase(a, flag);
    return a;
  };
  std::string e = run(without(kQwen25_7B, "--untie-embeddings-and-output-weights"), q25).error;
  EXPECT_NE(e.find("do not pass --untie-embeddings-and-output-weights, but m/config.json has "
                   "tie_word_embeddings = false"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("add --untie-embeddings-and-output-weights"), std::string::npos) << e;
  e = run(without(kQwen3_8B, "--qk-layernorm"), q3).error;
  EXPECT_NE(e.find("add --qk-layernorm"), std::string::npos) << e;
  e = run(with(kQwen25_7B, {"--qk-layernorm"}), q25).error;
  EXPECT_NE(e.find("remove --qk-layernorm"), std::string::npos) << e;
  e = run(without(kQwen25_7B, "--add-qkv-bias"), q25).error;
  EXPECT_NE(e.find("without q/k/v biases"), std::string::npos) << e;
  EXPECT_NE(e.find("add --add-qkv-bias"), std::string::npos) << e;
  e = run(with(kQwen3_8B, {"--add-qkv-bias"}), q3).error;
  EXPECT_NE(e.find("remove --add-qkv-bias"), std::string::npos) << e;
  e = run(without(kQwen3_8B, "--disable-bias-linear"), q3).error;
  EXPECT_NE(e.find("add --disable-bias-linear"), std::string::npos) << e;
  // A lone value without a MODEL_ARGS block checks that value only.
  EXPECT_EQ(run({"--rotary-base", "1000000"}, q25).error, "");
  // Megatron without GQA has as many KV heads as query heads.
  e = run({"--no-group-query-attention"}, q3).error;
  EXPECT_NE(e.find("add --group-query-attention"), std::string::npos) << e;
}

TEST(TrainConfigMegatronArgs, KnobsGyreHasOneAnswerForAreRefusedOtherwise) {
  const auto mc = model::named_shape("qwen3-8b");
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--pipeline-model-parallel-size", "2"}, "--pipeline-model-parallel-size 2: not supported"},
      {{"--context-parallel-size", "2"}, "--context-parallel-size 2: not supported"},
      {{"--expert-model-parallel-size", "8"}, "--expert-model-parallel-size 8: not supported"},
      {{"--expert-tensor-parallel-size", "2"}, "--expert-tensor-parallel-size 2: not supported"},
      {{"--attention-dropout", "0.1"}, "--attention-dropout 0.1: gyre trains without dropout"},
      {{"--hidden-dropout", "0.1"}, "--hidden-dropout 0.1: gyre trains without dropout"},
      {{"--optimizer", "sgd"}, "--optimizer sgd: gyre's optimizer is AdamW"},
      {{"--fp16"}, "--fp16: gyre has no fp16 training"},
      {{"--bf16"}, "--bf16: the CPU backend trains in f32"},
      {{"--no-attention-softmax-in-fp32"}, "--no-attention-softmax-in-fp32: gyre always"},
      {{"--recompute-granularity", "half"},
       "--recompute-granularity half: Megatron takes full "
       "or selective"},
      {{"--normalization", "LayerNorm"},
       "--normalization LayerNorm: every model gyre supports "
       "uses RMSNorm"},
      {{"--position-embedding-type", "learned_absolute"}, "uses rope"},
      {{"--no-swiglu"}, "--no-swiglu: every model gyre supports uses it"},
  };
  for (const auto& [args, want] : cases) {
    const std::string e = run(args, mc).error;
    EXPECT_NE(e.find(want), std::string::npos) << args[0] << ": " << e;
  }
  // --bf16 is gyre's --precision bf16 on a GPU: asked for by that flag too, not implied.
  const std::string e = run({"--bf16"}, mc, "cuda").error;
  EXPECT_NE(e.find("--bf16 asks for bf16 mixed precision, which is gyre's --precision bf16 (now "
                   "--precision f32)"),
            std::string::npos)
      << e;
  EXPECT_EQ(run({"--bf16", "--precision", "bf16"}, mc, "cuda").error, "");
  // Selective recomputation is not separate in gyre: ignored, and recomputation stays off.
  const auto sel = run({"--recompute-granularity", "selective"}, mc);
  EXPECT_EQ(sel.error, "");
  EXPECT_FALSE(sel.cfg.recompute_activations);
  EXPECT_EQ(sel.cfg.megatron.ignored(), "--recompute-granularity selective");
}

// Llama 3.1's RoPE scaling: Megatron's --use-rope-scaling (factor --rope-scaling-factor, default 8)
// against config.json's rope_scaling; --rotary-percent must be 1.
TEST(TrainConfigMegatronArgs, Llama31RopeScalingIsCheckedToo) {
  const auto llama = model::parse_config_json(
      R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
          "vocab_size": 128256, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "tie_word_embeddings": false, "max_position_embeddings": 131072})",
      "Llama-3.1-8B/config.json");
  const std::vector<std::string> model_args = {"--swiglu",
                                               "--num-layers",
                                               "32",
                                               "--hidden-size",
                                               "4096",
                                               "--ffn-hidden-size",
                                               "14336",
                                               "--num-attention-heads",
                                               "32",
                                               "--group-query-attention",
                                               "--num-query-groups",
                                               "8",
                                               "--max-position-embeddings",
                                               "131072",
                                               "--use-rotary-position-embeddings",
                                               "--disable-bias-linear",
                                               "--normalization",
                                               "RMSNorm",
                                               "--norm-epsilon",
                                               "1e-5",
                                               "--rotary-base",
                                               "500000",
                                               "--rotary-percent",
                                               "1.0",
                                               "--vocab-size",
                                               "128256",
                                               "--kv-channels",
                                               "128",
                                               "--use-rope-scaling",
                                               "--untie-embeddings-and-output-weights",
                                               "--transformer-impl",
                                               "transformer_engine"};
  EXPECT_EQ(run(model_args, llama).error, "");
  EXPECT_EQ(run(with(model_args, {"--rope-scaling-factor", "8"}), llama).error, "");
  std::string e = run(with(model_args, {"--rope-scaling-factor", "4"}), llama).error;
  EXPECT_NE(e.find("--rope-scaling-factor 4 does not match the model: m/config.json has "
                   "rope_scaling.factor = 8"),
            std::string::npos)
      << e;
  auto without = model_args;
  std::erase(without, std::string("--use-rope-scaling"));
  e = run(without, llama).error;
  EXPECT_NE(e.find("add --use-rope-scaling"), std::string::npos) << e;
  e = run(with(kQwen3_8B, {"--use-rope-scaling"}), model::named_shape("qwen3-8b")).error;
  EXPECT_NE(e.find("remove --use-rope-scaling"), std::string::npos) << e;
  e = run({"--rotary-percent", "0.5"}, llama).error;
  EXPECT_NE(e.find("--rotary-percent 0.5: every model gyre supports rotates whole heads"),
            std::string::npos)
      << e;
}

// slime's SGLang spellings of gyre's own settings (scripts/run-llama3.1-8B.sh) set them.
TEST(TrainConfigMegatronArgs, SglangSpellingsSetGyresFlags) {
  const auto mc = model::named_shape("qwen3-8b");
  const auto p = run({"--sglang-max-running-requests", "48", "--sglang-context-length", "2048",
                      "--rollout-num-gpus-per-node", "4", "--sglang-dtype", "float16",
                      "--sglang-attention-backend", "fa3"},
                     mc);
  EXPECT_EQ(p.error, "");
  EXPECT_EQ(p.cfg.max_running_requests, 48);
  ASSERT_TRUE(p.cfg.rollout_max_context_len.has_value());
  EXPECT_EQ(*p.cfg.rollout_max_context_len, 2048);
  EXPECT_EQ(p.cfg.num_gpus_per_node, 4);
  EXPECT_EQ(p.cfg.megatron.ignored(), "--sglang-dtype float16, --sglang-attention-backend fa3");
  // The same setting twice, two values: refused.
  const std::string e =
      run({"--sglang-context-length", "2048", "--rollout-max-context-len", "4096"}, mc).error;
  EXPECT_NE(e.find("--sglang-context-length 2048 and --rollout-max-context-len 4096 disagree"),
            std::string::npos)
      << e;
  // Set through it, still checked like gyre's own flag.
  EXPECT_NE(run({"--sglang-max-running-requests", "0"}, mc).error.find("--max-running-requests"),
            std::string::npos);
}

}  // namespace
}  // namespace gyre::rl
