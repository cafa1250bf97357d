// TrainConfig: every flag of `gyre train`, one field per flag, registered in one FlagSet with
// slime's names and defaults (reference/slime.md §1) so slime launch scripts translate line by
// line. derive_and_validate() resolves slime's derived values (global batch size from
// --num-steps-per-rollout, over-sampling default, num_rollout from epochs) and rejects inconsistent
// configurations before any work, naming the numbers that disagree.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gyre/core/flags.h"
#include "gyre/rl/algorithms/config.h"
#include "gyre/rl/loop/megatron_args.h"

namespace gyre::rl {

struct TrainConfig {
  // model / checkpoints
  std::string hf_checkpoint, tokenizer_dir, ref_load, load, save, critic_load;
  std::optional<double> critic_lr;
  int64_t save_interval = 0;
  std::string save_dtype;
  bool recompute_activations = false;
  std::string device = "cpu";     // --device: where the actor/ref models, KV cache and training run
  std::string precision = "f32";  // --precision: GPU compute precision (model::Precision)
  int64_t seed = 1234;
  // data
  std::string prompt_data, input_key, label_key, metadata_key, tool_key;
  bool apply_chat_template = false;
  std::string apply_chat_template_kwargs;
  std::optional<int64_t> rollout_max_prompt_len;
  bool rollout_shuffle = false;
  int64_t rollout_seed = 42;
  std::optional<int64_t> num_rollout, num_epoch;
  std::optional<int64_t> start_rollout_id;  // --start-rollout-id (slime): the first rollout's id
  bool strict_data = false;
  // rollout
  int64_t rollout_batch_size = 0, n_samples_per_prompt = 1;
  std::optional<int64_t> over_sampling_batch_size;
  std::string dynamic_sampling_filter_path, custom_generate_function_path;
  bool partial_rollout = false, mask_offpolicy_in_partial_rollout = false;
  double rollout_temperature = 1.0, rollout_top_p = 1.0;
  int64_t rollout_top_k = -1;
  std::vector<std::string> rollout_stop;
  std::vector<int64_t> rollout_stop_token_ids;
  int64_t rollout_max_response_len = 1024;
  std::optional<int64_t> rollout_max_context_len;
  int64_t rollout_concurrency = 64;
  bool deterministic_inference = false;
  std::string kv_cache_dtype = "auto";    // --sglang-kv-cache-dtype (infer::EngineConfig)
  int64_t cuda_graph_max_bs = 256;        // --sglang-cuda-graph-max-bs
  bool disable_cuda_graph = false;        // --sglang-disable-cuda-graph
  bool disable_overlap_schedule = false;  // --sglang-disable-overlap-schedule
  bool rollout_skip_special_tokens = false;
  // engine (in-process)
  int64_t page_size = 16, max_total_tokens = 0, max_running_requests = 256,
          chunked_prefill_size = 2048;
  // disaggregated rollout (rl/loop/remote_rollout.h) and distribution (dist/bootstrap.h)
  std::vector<std::string> rollout_external_engine_addrs;
  std::string sglang_router_ip;
  int64_t sglang_router_port = 0;
  std::string update_weight_dir;  // where weight_v* folders for remote engines go
  // Remote engines: "auto" (NCCL when the trainer and the engines are on GPUs, else disk),
  // "nccl" (SGLang's /init_weights_update_group + /update_weights_from_distributed) or "disk".
  std::string update_weight_transport = "auto";
  int64_t update_weight_buffer_size = int64_t(512) << 20;  // bytes per NCCL bucket (slime's)
  std::string update_weight_master_address;  // this host as the engines reach it ("": derived)
  int64_t actor_num_nodes = 1, actor_num_gpus_per_node = 1, rollout_num_gpus = -1,
          rollout_num_gpus_per_engine = 1, num_gpus_per_node = 8, tensor_model_parallel_size = 1;
  bool colocate = false;
  std::string dp_mode;  // zero1 | all_reduce
  double distributed_timeout_minutes = 10;
  // reward
  std::string rm_type, reward_key, custom_rm_path, rm_url;
  bool group_rm = false;
  double rm_timeout = 30.0;
  // algorithm (fields mirror AlgorithmConfig)
  std::string advantage_estimator, kl_loss_type, loss_type;
  AlgorithmConfig algo;
  std::optional<double> eps_clip_high, eps_clip_c;
  // trainer
  std::optional<int64_t> global_batch_size, num_steps_per_rollout;
  int64_t micro_batch_size = 1;
  bool use_dynamic_batch_size = false;
  bool balance_data = false;  // --balance-data: DP ranks get token-balanced shares of each step
  int64_t max_tokens_per_gpu = 0;
  double lr = 1e-6, min_lr = 0.0, weight_decay = 0.0, adam_beta1 = 0.9, adam_beta2 = 0.999,
         adam_eps = 1e-8, clip_grad = 1.0;
  std::string lr_decay_style;
  int64_t lr_warmup_iters = 0;
  std::optional<int64_t> lr_decay_iters;
  // eval
  std::vector<std::string> eval_prompt_data;  // name path [name path ...]
  int64_t eval_interval = 0;
  std::optional<double> eval_temperature;
  int64_t n_samples_per_eval_prompt = 1;
  std::optional<int64_t> eval_max_response_len;
  // slime's --eval-* overrides: unset = the rollout's (or the data flags') value
  std::optional<double> eval_top_p;
  std::optional<int64_t> eval_top_k, eval_min_new_tokens, eval_max_prompt_len;
  std::optional<std::string> eval_input_key, eval_label_key, eval_tool_key, eval_reward_key;
  bool skip_eval_before_train = false;
  // debug / checks / output
  std::string save_debug_rollout_data, load_debug_rollout_data;
  bool debug_rollout_only = false, debug_train_only = false, skip_ratio_check = false;
  bool use_tensorboard = false, quiet = false;
  // Megatron / SGLang arguments of slime scripts: checked, mapped or ignored (megatron_args.h)
  MegatronArgs megatron;

  void register_flags(FlagSet& flags);
  // Every check and derived value that needs no data or model (batch sizes, optimizer, rollout,
  // sampling, engine and reward settings), so `gyre train` runs it before it loads anything;
  // throws Error(invalid_argument) naming the flags and numbers. Idempotent.
  void validate();
  // validate(), then the run length (--num-epoch counts in dataset passes).
  void derive_and_validate(int64_t dataset_size);
  int64_t total_rollouts = 0;  // resolved num_rollout
};

}  // namespace gyre::rl
