// The Megatron-LM and SGLang arguments of slime launch scripts that gyre has no flag of its own
// for, so that a slime script's argument list runs under `gyre train` as it is.
//
// slime parses every Megatron argument natively and, at startup, checks the model arguments
// (scripts/models/<model>.sh: MODEL_ARGS) against the HF config — hidden size, heads, layers, FFN
// and MoE sizes, tied embeddings, norm epsilon, RoPE theta — failing on a mismatch
// (reference/slime.md §checkpoints; a script pointing at the wrong checkpoint otherwise trains
// silent garbage, slime issue #1059). gyre reads the architecture from the HF config.json alone,
// so here:
//  - model arguments are accepted and checked against config.json (check_against_model): a
//    mismatch is an error naming the flag, its value, the config key and its value. The boolean
//    ones (tied embeddings, q/k/v bias, q/k norm) are checked when the script passes a MODEL_ARGS
//    block (any of --num-layers / --hidden-size / --num-attention-heads), since Megatron's
//    default for an absent flag is itself a claim (no --untie-embeddings-and-output-weights =
//    tied);
//  - arguments whose only meaning here is what gyre always does are accepted when they ask for
//    it and refused, saying what gyre does, when they ask for something else (validate): dropout
//    0 (slime's RL scripts set 0; gyre has none), pipeline / context / expert parallel size 1
//    (gyre parallelises training with DP and TP), --optimizer adam (AdamW), f32 softmax and f32
//    gradient accumulation (always), --bf16 (gyre's --precision bf16 on --device cuda: asked for
//    by that flag, not silently), no --fp16;
//  - --recompute-granularity full turns on --recompute-activations (whole layers, as gyre does);
//  - Megatron / SGLang performance, checkpoint-format and logging knobs with no equivalent
//    (fusions, --attention-backend, --use-distributed-optimizer, --ckpt-format, wandb,
//    --sglang-mem-fraction-static, ...) are accepted and listed once in the log (ignored()).
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "gyre/core/flags.h"
#include "gyre/model/config.h"

namespace gyre::rl {

struct TrainConfig;

struct MegatronArgs {
  // ---- model (MODEL_ARGS), checked against config.json
  std::optional<int64_t> num_layers, hidden_size, ffn_hidden_size, num_attention_heads,
      num_query_groups, kv_channels, vocab_size, num_experts, moe_ffn_hidden_size, moe_router_topk;
  std::optional<double> norm_epsilon, rotary_base, rotary_percent, rope_scaling_factor;
  std::optional<std::string> normalization, position_embedding_type;
  std::optional<bool> swiglu, group_query_attention, disable_bias_linear, add_qkv_bias,
      qk_layernorm, untie_embeddings_and_output_weights, use_rotary_position_embeddings,
      use_rope_scaling;
  // ---- numerics and parallelism gyre has one answer for
  std::optional<double> attention_dropout, hidden_dropout;
  std::optional<int64_t> pipeline_model_parallel_size, context_parallel_size,
      expert_model_parallel_size, expert_tensor_parallel_size;
  std::optional<std::string> optimizer, recompute_granularity;
  std::optional<bool> bf16, fp16, accumulate_allreduce_grads_in_fp32, attention_softmax_in_fp32;

  // ---- slime / SGLang spellings of gyre flags: set them (apply_and_validate)
  std::optional<int64_t> sglang_max_running_requests;  // --max-running-requests
  std::optional<int64_t> sglang_context_length;        // --rollout-max-context-len
  std::optional<int64_t> rollout_num_gpus_per_node;    // --num-gpus-per-node

  void register_flags(FlagSet& f);
  // The flag-only checks (no model needed), and what these flags set in `c`: gyre's
  // --recompute-activations (--recompute-granularity full), --max-running-requests,
  // --rollout-max-context-len (an explicit different value is an error), --num-gpus-per-node;
  // reads c.device / c.precision (--bf16). Throws Error(invalid_argument) naming the flag.
  // Idempotent.
  void apply_and_validate(TrainConfig& c) const;
  // The model arguments against the HF config read from `config_path`; throws
  // Error(invalid_argument) naming both sides of the first mismatch.
  void check_against_model(const model::ModelConfig& mc, const std::string& config_path) const;
  // "--attention-backend flash, --use-distributed-optimizer, ..." or "" when none was set.
  std::string ignored() const;

 private:
  // The ignored flags' storage: (name, value), registered as optional strings (any value),
  // optional bools (`--flag` / `--no-flag`) or lists (several values). Deques: FlagSet keeps
  // pointers to the values.
  std::deque<std::pair<std::string, std::optional<std::string>>> ignored_text_;
  std::deque<std::pair<std::string, std::optional<bool>>> ignored_bool_;
  std::deque<std::pair<std::string, std::vector<std::string>>> ignored_list_;
};

}  // namespace gyre::rl
