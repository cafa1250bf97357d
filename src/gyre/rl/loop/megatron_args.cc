#include "gyre/rl/loop/megatron_args.h"

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/rl/loop/train_config.h"

namespace gyre::rl {

namespace {

const char* const kGroup = "Megatron and SGLang arguments of slime scripts";

// Megatron / SGLang knobs with no gyre equivalent that slime scripts commonly pass, taking a value:
// performance and layout choices of Megatron (the attention kernel, checkpoint format, MoE
// dispatch), Megatron-side sizes that packing makes irrelevant (--seq-length: slime always packs;
// --max-position-embeddings: the context comes from config.json), logging to wandb, and SGLang
// memory / concurrency settings of slime's Ray-launched engines.
const char* const kIgnoredWithValue[] = {
    "attention-backend",
    "ckpt-format",
    "megatron-to-hf-mode",
    "seq-length",
    "max-position-embeddings",
    "make-vocab-size-divisible-by",
    "init-method-std",
    "recompute-method",
    "recompute-num-layers",
    "moe-router-score-function",
    "moe-token-dispatcher-type",
    "moe-router-dtype",
    "moe-aux-loss-coeff",
    "moe-router-load-balancing-type",
    "distributed-backend",
    "wandb-project",
    "wandb-group",
    "wandb-key",
    "wandb-host",
    "wandb-dir",
    "wandb-run-id",
    "sglang-dtype",
    "sglang-attention-backend",
    "transformer-impl",
    "tokenizer-model",
    "sglang-mem-fraction-static",
    "sglang-server-concurrency",
    "sglang-router-request-timeout-secs",
    "log-probs-chunk-size",
    "tokenizer-type",
};
// The same, as switches; Megatron's `--no-X` switches are registered as X (FlagSet reads --no-X
// as X false). Also slime's memory switches of colocated runs (--offload, --offload-train,
// --offload-rollout: a colocated gyre always releases the KV pool while training and activations
// while rolling out, in one process) and --keep-old-actor (a synchronous gyre run computes the
// old log-probs with the weights that generated the rollout anyway) and --get-mismatch-metrics
// (gyre logs train/train_rollout_logprob_abs_diff and its max every step).
const char* const kIgnoredSwitches[] = {
    "use-distributed-optimizer",
    "sequence-parallel",
    "gradient-accumulation-fusion",
    "masked-softmax-fusion",
    "bias-swiglu-fusion",
    "bias-dropout-fusion",
    "rope-fusion",
    "moe-grouped-gemm",
    "moe-permute-fusion",
    "overlap-grad-reduce",
    "overlap-param-gather",
    "load-optim",
    "load-rng",
    "save-optim",
    "finetune",
    "use-wandb",
    "use-precision-aware-optimizer",
    "optimizer-cpu-offload",
    "overlap-cpu-optimizer-d2h-h2d",
    "create-attention-mask-in-dataloader",
    "offload",
    "offload-train",
    "offload-rollout",
    "keep-old-actor",
    "get-mismatch-metrics",
    "use-flash-attn",
    "use-checkpoint-args",
};

[[noreturn]] void mismatch(const std::string& flag, const std::string& value,
                           const std::string& key, const std::string& actual,
                           const std::string& config_path) {
  GYRE_THROW(invalid_argument,
             "--{} {} does not match the model: {} has {} = {} (slime checks its Megatron model "
             "arguments against the HF config the same way); fix the script's MODEL_ARGS or point "
             "--hf-checkpoint at the model they describe",
             flag, value, config_path, key, actual);
}

void check_int(const char* flag, const std::optional<int64_t>& v, const char* key, int64_t actual,
               const std::string& path) {
  if (v && *v != actual) mismatch(flag, std::to_string(*v), key, std::to_string(actual), path);
}

// Scripts write 1e-6 / 1000000 where config.json may hold 1e-06 / 1000000.0: equal to ~1e-9
// relative.
void check_real(const char* flag, const std::optional<double>& v, const char* key, double actual,
                const std::string& path) {
  if (v && !(std::fabs(*v - actual) <= 1e-9 * std::fmax(std::fabs(*v), std::fabs(actual))))
    mismatch(flag, fmt::format("{}", *v), key, fmt::format("{}", actual), path);
}

// A MODEL_ARGS switch: `given` whether the script passes it, `implied` whether the config says the
// model has what it switches on (config key `key` = `value`).
void check_switch(const char* flag, bool given, bool implied, const char* key,
                  const std::string& value, const std::string& path) {
  if (given != implied)
    GYRE_THROW(invalid_argument,
               "the script's MODEL_ARGS {} --{}, but {} has {} = {}: that is a different model "
               "(slime checks its Megatron model arguments against the HF config the same way); "
               "{} --{} or point --hf-checkpoint at the model the MODEL_ARGS describe",
               given ? "pass" : "do not pass", flag, path, key, value, given ? "remove" : "add",
               flag);
}

}  // namespace

void MegatronArgs::register_flags(FlagSet& f) {
  const std::string G = kGroup;
  const std::string chk = " (checked against config.json)";
  f.add<std::optional<int64_t>>("num-layers", &num_layers, std::nullopt,
                                "Megatron: num_hidden_layers" + chk, G);
  f.add<std::optional<int64_t>>("hidden-size", &hidden_size, std::nullopt,
                                "Megatron: hidden_size" + chk, G);
  f.add<std::optional<int64_t>>("ffn-hidden-size", &ffn_hidden_size, std::nullopt,
                                "Megatron: intermediate_size" + chk, G);
  f.add<std::optional<int64_t>>("num-attention-heads", &num_attention_heads, std::nullopt,
                                "Megatron: num_attention_heads" + chk, G);
  f.add<std::optional<int64_t>>("num-query-groups", &num_query_groups, std::nullopt,
                                "Megatron: num_key_value_heads" + chk, G);
  f.add<std::optional<int64_t>>("kv-channels", &kv_channels, std::nullopt,
                                "Megatron: head_dim" + chk, G);
  f.add<std::optional<int64_t>>("vocab-size", &vocab_size, std::nullopt,
                                "Megatron: vocab_size" + chk, G);
  f.add<std::optional<int64_t>>("num-experts", &num_experts, std::nullopt,
                                "Megatron: num_experts" + chk, G);
  f.add<std::optional<int64_t>>("moe-ffn-hidden-size", &moe_ffn_hidden_size, std::nullopt,
                                "Megatron: moe_intermediate_size" + chk, G);
  f.add<std::optional<int64_t>>("moe-router-topk", &moe_router_topk, std::nullopt,
                                "Megatron: num_experts_per_tok" + chk, G);
  f.add<std::optional<double>>("norm-epsilon", &norm_epsilon, std::nullopt,
                               "Megatron: rms_norm_eps" + chk, G);
  f.add<std::optional<double>>("rotary-base", &rotary_base, std::nullopt,
                               "Megatron: rope_theta" + chk, G);
  f.add<std::optional<double>>("rotary-percent", &rotary_percent, std::nullopt,
                               "Megatron: 1.0 (every supported model rotates whole heads)", G);
  f.add<std::optional<bool>>("use-rope-scaling", &use_rope_scaling, std::nullopt,
                             "Megatron: Llama-3.1 RoPE scaling (checked against rope_scaling)", G);
  f.add<std::optional<double>>("rope-scaling-factor", &rope_scaling_factor, std::nullopt,
                               "Megatron: its factor, default 8 (checked against rope_scaling)", G);
  f.add<std::optional<std::string>>("normalization", &normalization, std::nullopt,
                                    "Megatron: RMSNorm (every supported model)", G);
  f.add<std::optional<std::string>>("position-embedding-type", &position_embedding_type,
                                    std::nullopt, "Megatron: rope (every supported model)", G);
  f.add<std::optional<bool>>("swiglu", &swiglu, std::nullopt,
                             "Megatron: SwiGLU MLP (every supported model)", G);
  f.add<std::optional<bool>>("group-query-attention", &group_query_attention, std::nullopt,
                             "Megatron: GQA (with --num-query-groups)", G);
  f.add<std::optional<bool>>("use-rotary-position-embeddings", &use_rotary_position_embeddings,
                             std::nullopt, "Megatron: RoPE (every supported model)", G);
  f.add<std::optional<bool>>("disable-bias-linear", &disable_bias_linear, std::nullopt,
                             "Megatron: no linear biases (q/k/v bias checked against the config)",
                             G);
  f.add<std::optional<bool>>("add-qkv-bias", &add_qkv_bias, std::nullopt,
                             "Megatron: q/k/v bias (checked against the config)", G);
  f.add<std::optional<bool>>("qk-layernorm", &qk_layernorm, std::nullopt,
                             "Megatron: RMSNorm on q and k (checked against the config)", G);
  f.add<std::optional<bool>>("untie-embeddings-and-output-weights",
                             &untie_embeddings_and_output_weights, std::nullopt,
                             "Megatron: separate lm_head (checked against tie_word_embeddings)", G);

  f.add<std::optional<double>>("attention-dropout", &attention_dropout, std::nullopt,
                               "Megatron: must be 0 (gyre trains without dropout)", G);
  f.add<std::optional<double>>("hidden-dropout", &hidden_dropout, std::nullopt,
                               "Megatron: must be 0 (gyre trains without dropout)", G);
  const std::string par = " (gyre parallelises with DP and --tensor-model-parallel-size)";
  f.add<std::optional<int64_t>>("pipeline-model-parallel-size", &pipeline_model_parallel_size,
                                std::nullopt, "Megatron: must be 1" + par, G);
  f.add<std::optional<int64_t>>("context-parallel-size", &context_parallel_size, std::nullopt,
                                "Megatron: must be 1" + par, G);
  f.add<std::optional<int64_t>>("expert-model-parallel-size", &expert_model_parallel_size,
                                std::nullopt, "Megatron: must be 1" + par, G);
  f.add<std::optional<int64_t>>("expert-tensor-parallel-size", &expert_tensor_parallel_size,
                                std::nullopt, "Megatron: must be 1" + par, G);
  f.add<std::optional<std::string>>("optimizer", &optimizer, std::nullopt,
                                    "Megatron: adam (gyre's AdamW)", G);
  f.add<std::optional<std::string>>(
      "recompute-granularity", &recompute_granularity, std::nullopt,
      "Megatron: full turns on --recompute-activations; selective is ignored", G);
  f.add<std::optional<bool>>("bf16", &bf16, std::nullopt,
                             "Megatron: bf16 training = --device cuda --precision bf16", G);
  f.add<std::optional<bool>>("fp16", &fp16, std::nullopt,
                             "Megatron: refused (gyre trains in f32 or bf16)", G);
  f.add<std::optional<bool>>("accumulate-allreduce-grads-in-fp32",
                             &accumulate_allreduce_grads_in_fp32, std::nullopt,
                             "Megatron: what gyre always does", G);
  f.add<std::optional<bool>>("attention-softmax-in-fp32", &attention_softmax_in_fp32, std::nullopt,
                             "Megatron: what gyre always does", G);

  f.add<std::optional<int64_t>>("sglang-max-running-requests", &sglang_max_running_requests,
                                std::nullopt, "SGLang: sets --max-running-requests", G);
  f.add<std::optional<int64_t>>("sglang-context-length", &sglang_context_length, std::nullopt,
                                "SGLang: sets --rollout-max-context-len", G);
  f.add<std::optional<int64_t>>("rollout-num-gpus-per-node", &rollout_num_gpus_per_node,
                                std::nullopt, "slime: sets --num-gpus-per-node", G);
  for (const char* name : kIgnoredWithValue) {
    ignored_text_.emplace_back(name, std::nullopt);
    f.add<std::optional<std::string>>(name, &ignored_text_.back().second, std::nullopt,
                                      "accepted and ignored (no gyre equivalent)", G);
  }
  // SGLang's CUDA-graph batch sizes: gyre captures its own buckets up to
  // --sglang-cuda-graph-max-bs.
  for (const char* name : {"sglang-cuda-graph-bs"}) {
    ignored_list_.emplace_back(name, std::vector<std::string>{});
    f.add<std::vector<std::string>>(name, &ignored_list_.back().second, {},
                                    "accepted and ignored (no gyre equivalent)", G);
  }
  for (const char* name : kIgnoredSwitches) {
    ignored_bool_.emplace_back(name, std::nullopt);
    f.add<std::optional<bool>>(name, &ignored_bool_.back().second, std::nullopt,
                               "accepted and ignored (no gyre equivalent)", G);
  }
}

void MegatronArgs::apply_and_validate(TrainConfig& c) const {
  const std::string& device = c.device;
  const std::string& precision = c.precision;
  bool& recompute_activations = c.recompute_activations;
  if (sglang_max_running_requests) c.max_running_requests = *sglang_max_running_requests;
  if (rollout_num_gpus_per_node) c.num_gpus_per_node = *rollout_num_gpus_per_node;
  if (sglang_context_length) {
    if (c.rollout_max_context_len && *c.rollout_max_context_len != *sglang_context_length)
      GYRE_THROW(invalid_argument,
                 "--sglang-context-length {} and --rollout-max-context-len {} disagree: they are "
                 "the same setting in gyre (the rollout engine's context); give one",
                 *sglang_context_length, *c.rollout_max_context_len);
    c.rollout_max_context_len = sglang_context_length;
  }
  for (const auto& [flag, v] :
       {std::pair{"attention-dropout", attention_dropout}, {"hidden-dropout", hidden_dropout}})
    if (v && *v != 0.0)
      GYRE_THROW(invalid_argument,
                 "--{} {}: gyre trains without dropout (slime's RL scripts set 0.0); pass 0 or "
                 "drop the flag",
                 flag, *v);
  for (const auto& [flag, v] :
       {std::pair{"pipeline-model-parallel-size", pipeline_model_parallel_size},
        {"context-parallel-size", context_parallel_size},
        {"expert-model-parallel-size", expert_model_parallel_size},
        {"expert-tensor-parallel-size", expert_tensor_parallel_size}})
    if (v && *v != 1)
      GYRE_THROW(invalid_argument,
                 "--{} {}: not supported; gyre trains with data parallelism "
                 "(--actor-num-gpus-per-node) and tensor parallelism "
                 "(--tensor-model-parallel-size) only: set it to 1 or drop it",
                 flag, *v);
  if (optimizer && *optimizer != "adam")
    GYRE_THROW(invalid_argument,
               "--optimizer {}: gyre's optimizer is AdamW (Megatron's adam with --weight-decay); "
               "use --optimizer adam or drop the flag",
               *optimizer);
  if (fp16 && *fp16)
    GYRE_THROW(invalid_argument,
               "--fp16: gyre has no fp16 training; on a GPU use bf16 mixed precision "
               "(--device cuda --precision bf16)");
  if (bf16 && *bf16) {
    if (device != "cuda")
      GYRE_THROW(invalid_argument,
                 "--bf16: the CPU backend trains in f32; drop --bf16, or train on a GPU with "
                 "--device cuda --precision bf16");
    if (precision != "bf16")
      GYRE_THROW(invalid_argument,
                 "--bf16 asks for bf16 mixed precision, which is gyre's --precision bf16 (now "
                 "--precision {}): pass --precision bf16",
                 precision);
  }
  for (const auto& [flag, v] :
       {std::pair{"accumulate-allreduce-grads-in-fp32", accumulate_allreduce_grads_in_fp32},
        {"attention-softmax-in-fp32", attention_softmax_in_fp32}})
    if (v && !*v)
      GYRE_THROW(invalid_argument,
                 "--no-{}: gyre always accumulates gradients and computes the attention softmax "
                 "in f32; drop the flag",
                 flag);
  if (recompute_granularity) {
    if (*recompute_granularity == "full")
      recompute_activations = true;
    else if (*recompute_granularity != "selective")
      GYRE_THROW(invalid_argument,
                 "--recompute-granularity {}: Megatron takes full or selective (full turns on "
                 "gyre's --recompute-activations)",
                 *recompute_granularity);
  }
  if (rotary_percent && *rotary_percent != 1.0)
    GYRE_THROW(invalid_argument,
               "--rotary-percent {}: every model gyre supports rotates whole heads (1.0)",
               *rotary_percent);
  if (normalization && *normalization != "RMSNorm")
    GYRE_THROW(invalid_argument,
               "--normalization {}: every model gyre supports uses RMSNorm (Llama, Qwen2, Qwen3, "
               "Qwen3-MoE)",
               *normalization);
  if (position_embedding_type && *position_embedding_type != "rope")
    GYRE_THROW(invalid_argument,
               "--position-embedding-type {}: every model gyre supports uses rope",
               *position_embedding_type);
  for (const auto& [flag, v] : {std::pair{"swiglu", swiglu},
                                {"use-rotary-position-embeddings", use_rotary_position_embeddings}})
    if (v && !*v)
      GYRE_THROW(invalid_argument, "--no-{}: every model gyre supports uses it; drop the flag",
                 flag);
}

void MegatronArgs::check_against_model(const model::ModelConfig& mc,
                                       const std::string& path) const {
  check_int("num-layers", num_layers, "num_hidden_layers", mc.num_hidden_layers, path);
  check_int("hidden-size", hidden_size, "hidden_size", mc.hidden_size, path);
  check_int("ffn-hidden-size", ffn_hidden_size, "intermediate_size", mc.intermediate_size, path);
  check_int("num-attention-heads", num_attention_heads, "num_attention_heads",
            mc.num_attention_heads, path);
  check_int("num-query-groups", num_query_groups, "num_key_value_heads", mc.num_key_value_heads,
            path);
  const int64_t head_dim = mc.head_dim > 0 ? mc.head_dim : mc.hidden_size / mc.num_attention_heads;
  check_int("kv-channels", kv_channels, "head_dim", head_dim, path);
  check_int("vocab-size", vocab_size, "vocab_size", mc.vocab_size, path);
  check_int("num-experts", num_experts, "num_experts", mc.num_experts, path);
  check_int("moe-ffn-hidden-size", moe_ffn_hidden_size, "moe_intermediate_size",
            mc.moe_intermediate_size, path);
  check_int("moe-router-topk", moe_router_topk, "num_experts_per_tok", mc.num_experts_per_tok,
            path);
  check_real("norm-epsilon", norm_epsilon, "rms_norm_eps", mc.rms_norm_eps, path);
  check_real("rotary-base", rotary_base, "rope_theta", mc.rope.theta, path);
  // GQA: Megatron without --group-query-attention has as many KV heads as query heads.
  if (group_query_attention && !*group_query_attention &&
      mc.num_key_value_heads != mc.num_attention_heads)
    check_switch("group-query-attention", false, true, "num_key_value_heads",
                 std::to_string(mc.num_key_value_heads), path);
  // Megatron's --use-rope-scaling is Llama 3.1's RoPE scaling (rope_scaling.rope_type llama3),
  // factor --rope-scaling-factor (default 8).
  const bool llama3 = mc.rope.type == "llama3";
  if (use_rope_scaling.value_or(false) || rope_scaling_factor) {
    if (!llama3)
      check_switch("use-rope-scaling", true, false, "rope_scaling type", mc.rope.type, path);
    check_real("rope-scaling-factor", rope_scaling_factor.value_or(8.0), "rope_scaling.factor",
               mc.rope.factor, path);
  }
  // The switches whose absence is a claim too: checked only with a MODEL_ARGS block.
  if (num_layers || hidden_size || num_attention_heads) {
    if (llama3 && !use_rope_scaling.value_or(false))
      check_switch("use-rope-scaling", false, true, "rope_scaling type", mc.rope.type, path);
    check_switch("untie-embeddings-and-output-weights",
                 untie_embeddings_and_output_weights.value_or(false), !mc.tie_word_embeddings,
                 "tie_word_embeddings", mc.tie_word_embeddings ? "true" : "false", path);
    check_switch("qk-layernorm", qk_layernorm.value_or(false), mc.qk_norm,
                 "q/k norm (qwen3, qwen3_moe)", mc.qk_norm ? "yes" : "no", path);
    // Megatron: --disable-bias-linear drops every linear bias, --add-qkv-bias brings back q/k/v's;
    // neither flag: every bias (Megatron's default), q/k/v's included.
    const bool add = add_qkv_bias.value_or(false), disable = disable_bias_linear.value_or(false);
    const bool qkv_bias = add || !disable;
    if (qkv_bias != mc.attention_bias)
      GYRE_THROW(
          invalid_argument,
          "the script's MODEL_ARGS describe a model {} q/k/v biases ({}--disable-bias-linear, "
          "{}--add-qkv-bias), but {} has attention_bias = {}: that is a different model; {} "
          "or point --hf-checkpoint at the model the MODEL_ARGS describe",
          qkv_bias ? "with" : "without", disable ? "" : "no ", add ? "" : "no ", path,
          mc.attention_bias ? "true" : "false",
          mc.attention_bias ? "add --add-qkv-bias"
                            : (add ? "remove --add-qkv-bias" : "add --disable-bias-linear"));
  }
}

std::string MegatronArgs::ignored() const {
  std::string out;
  const auto add = [&out](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  for (const auto& [name, v] : ignored_text_)
    if (v) add("--" + name + " " + *v);
  for (const auto& [name, v] : ignored_bool_)
    if (v) add((*v ? "--" : "--no-") + name);
  for (const auto& [name, v] : ignored_list_)
    if (!v.empty()) {
      std::string text = "--" + name;
      for (const auto& x : v) text += " " + x;
      add(text);
    }
  if (recompute_granularity && *recompute_granularity == "selective")
    add("--recompute-granularity selective");
  return out;
}

}  // namespace gyre::rl
