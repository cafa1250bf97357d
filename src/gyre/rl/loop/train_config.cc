#include "gyre/rl/loop/train_config.h"

#include <cmath>
#include <cstdint>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/reward.h"

namespace gyre::rl {

namespace {

// The engine and the reward functions check these too, but only per request / per sample: a bad
// value would fail every group of the first rollout (each dropped with a warning) instead of
// stopping the run before it loads anything.
void validate_rollout_settings(const TrainConfig& c) {
  constexpr int64_t kInt32Max = INT32_MAX;  // the engine's sampling parameters are int32
  if (!(c.rollout_top_p > 0 && c.rollout_top_p <= 1))
    GYRE_THROW(invalid_argument, "--rollout-top-p must be in (0, 1] (got {}); 1 turns it off",
               c.rollout_top_p);
  if (c.rollout_top_k < -1 || c.rollout_top_k > kInt32Max)
    GYRE_THROW(invalid_argument,
               "--rollout-top-k must be in [-1, {}] tokens (-1 or 0: off; got {})", kInt32Max,
               c.rollout_top_k);
  if (c.rollout_max_response_len > kInt32Max)
    GYRE_THROW(invalid_argument, "--rollout-max-response-len must be <= {} tokens (got {})",
               kInt32Max, c.rollout_max_response_len);
  for (size_t i = 0; i < c.rollout_stop.size(); ++i)
    if (c.rollout_stop[i].empty())
      GYRE_THROW(invalid_argument,
                 "--rollout-stop: stop string {} is empty (it would match everywhere); remove it",
                 i);
  for (int64_t id : c.rollout_stop_token_ids)
    if (id < 0 || id > kInt32Max)
      GYRE_THROW(invalid_argument, "--rollout-stop-token-ids: {} is not a token id (ids are >= 0)",
                 id);
  if (c.rollout_max_prompt_len && *c.rollout_max_prompt_len < 1)
    GYRE_THROW(invalid_argument, "--rollout-max-prompt-len must be >= 1 (got {})",
               *c.rollout_max_prompt_len);
  if (c.rollout_max_context_len &&
      (*c.rollout_max_context_len < 2 || *c.rollout_max_context_len > kInt32Max))
    GYRE_THROW(invalid_argument,
               "--rollout-max-context-len must be in [2, {}] (a prompt token and a response token; "
               "got {}); leave it unset for the model's context length",
               kInt32Max, *c.rollout_max_context_len);
  // One worker thread per concurrent sample (rl/rollout/rollout_manager.cc): past a few tens of
  // thousands the OS refuses threads, and a failed thread start aborted the process.
  constexpr int64_t kMaxConcurrency = 65536;
  if (c.rollout_concurrency < 1 || c.rollout_concurrency > kMaxConcurrency)
    GYRE_THROW(invalid_argument,
               "--rollout-concurrency must be in [1, {}] (got {}): each concurrent sample is a "
               "worker thread",
               kMaxConcurrency, c.rollout_concurrency);
  if (c.page_size < 1 || c.page_size > kInt32Max)
    GYRE_THROW(invalid_argument, "--page-size must be in [1, {}] tokens (got {})", kInt32Max,
               c.page_size);
  if (c.max_running_requests < 1 || c.max_running_requests > kInt32Max)
    GYRE_THROW(invalid_argument, "--max-running-requests must be in [1, {}] (got {})", kInt32Max,
               c.max_running_requests);
  if (c.chunked_prefill_size < 1)
    GYRE_THROW(invalid_argument, "--chunked-prefill-size must be >= 1 token (got {})",
               c.chunked_prefill_size);
  if (c.max_total_tokens < 0)
    GYRE_THROW(invalid_argument,
               "--max-total-tokens must be >= 0 (0: sized from the batch; got {})",
               c.max_total_tokens);
  if (c.eval_interval < 0)
    GYRE_THROW(invalid_argument, "--eval-interval must be >= 0 (0: off; got {})", c.eval_interval);
  if (c.eval_temperature && (!(*c.eval_temperature >= 0) || std::isinf(*c.eval_temperature)))
    GYRE_THROW(invalid_argument,
               "--eval-temperature must be a finite number >= 0 (0: greedy; got {})",
               *c.eval_temperature);
  if (c.eval_max_response_len &&
      (*c.eval_max_response_len < 1 || *c.eval_max_response_len > kInt32Max))
    GYRE_THROW(invalid_argument, "--eval-max-response-len must be in [1, {}] (got {})", kInt32Max,
               *c.eval_max_response_len);
  if (c.eval_top_p && !(*c.eval_top_p > 0 && *c.eval_top_p <= 1))
    GYRE_THROW(invalid_argument, "--eval-top-p must be in (0, 1] (got {}); 1 turns it off",
               *c.eval_top_p);
  if (c.eval_top_k && (*c.eval_top_k < -1 || *c.eval_top_k > kInt32Max))
    GYRE_THROW(invalid_argument, "--eval-top-k must be in [-1, {}] tokens (-1 or 0: off; got {})",
               kInt32Max, *c.eval_top_k);
  if (c.eval_min_new_tokens && (*c.eval_min_new_tokens < 0 || *c.eval_min_new_tokens > kInt32Max))
    GYRE_THROW(invalid_argument, "--eval-min-new-tokens must be in [0, {}] (got {})", kInt32Max,
               *c.eval_min_new_tokens);
  if (c.eval_max_prompt_len && *c.eval_max_prompt_len < 1)
    GYRE_THROW(invalid_argument, "--eval-max-prompt-len must be >= 1 (got {})",
               *c.eval_max_prompt_len);
  if (c.eval_input_key && c.eval_input_key->empty())
    GYRE_THROW(invalid_argument, "--eval-input-key is empty: name the JSON key of the eval prompt");
  if (c.n_samples_per_eval_prompt < 1 || c.n_samples_per_eval_prompt > kInt32Max)
    GYRE_THROW(invalid_argument, "--n-samples-per-eval-prompt must be in [1, {}] (got {})",
               kInt32Max, c.n_samples_per_eval_prompt);
  // The reward runs only where samples are generated and trained on (not for SFT or a replay of
  // saved rollouts). Without --rm-type and --custom-rm-path each prompt's metadata.rm_type picks
  // its reward (slime's dispatch): run_train checks the loaded prompts for it
  // (rewards::check_metadata_rm_type) before the models load.
  if (c.loss_type != "sft_loss" && !c.debug_train_only) {
    if (c.custom_rm_path.empty()) {
      rewards::check_rm_type(c.rm_type);
      if (c.rm_type == "remote_rm" && c.rm_url.empty())
        GYRE_THROW(invalid_argument, "--rm-type remote_rm needs --rm-url http://host:port/path");
    }
    if (!(c.rm_timeout > 0) || std::isinf(c.rm_timeout))
      GYRE_THROW(invalid_argument, "--rm-timeout must be a finite number of seconds > 0 (got {})",
                 c.rm_timeout);
  }
}

}  // namespace

void TrainConfig::register_flags(FlagSet& f) {
  const std::string M = "Model and checkpoints", D = "Data", R = "Rollout", E = "Rollout engine",
                    W = "Reward", A = "Algorithm", T = "Trainer", V = "Evaluation", G = "Debug",
                    P = "Distributed and disaggregated";
  f.add<std::string>("hf-checkpoint", &hf_checkpoint, "", "HF model folder the policy starts from",
                     M);
  f.add<std::string>("tokenizer", &tokenizer_dir, "", "tokenizer folder (default: --hf-checkpoint)",
                     M);
  f.add<std::string>("ref-load", &ref_load, "", "reference model HF folder (KL loss / KL reward)",
                     M);
  f.add<std::string>("critic-load", &critic_load, "",
                     "PPO critic HF folder (default: the actor's, with a zero value head)", M);
  f.add<std::optional<double>>("critic-lr", &critic_lr, std::nullopt,
                               "PPO critic learning rate (default --lr)", M);
  f.add<std::string>("load", &load, "",
                     "resume from this gyre checkpoint folder (its latest iteration)", M);
  f.add<std::string>("save", &save, "", "output folder: checkpoints, metrics.jsonl, debug data", M);
  f.add<int64_t>("save-interval", &save_interval, 0,
                 "checkpoint every N rollouts (0: only at the end)", M);
  f.add<std::string>("save-dtype", &save_dtype, "f32", "dtype of saved HF weights", M)
      .choices({"f32", "bf16", "f16"});
  f.add<bool>("recompute-activations", &recompute_activations, false, "activation recomputation",
              M);
  f.add<std::string>(
       "device", &device, "cpu",
       "where the models, the rollout engine's KV cache and training run: cpu or cuda "
       "(one GPU; needs a CUDA build)",
       M)
      .choices({"cpu", "cuda"});
  f.add<std::string>("precision", &precision, "f32",
                     "GPU compute precision: f32 (exact) or bf16 (mixed precision: bf16 GEMMs and "
                     "attention, f32 master weights, optimizer state and log-probs)",
                     M)
      .choices({"f32", "bf16"});
  f.add<int64_t>("seed", &seed, 1234, "seed of weight init and sampling seeds", M);

  f.add<std::string>("prompt-data", &prompt_data, "", "prompt JSONL (path or path@[a:b])", D);
  f.add<std::string>("input-key", &input_key, "input", "JSON key of the prompt", D);
  f.add<std::string>("label-key", &label_key, "", "JSON key of the label (empty: none)", D);
  f.add<std::string>("metadata-key", &metadata_key, "metadata", "JSON key of per-row metadata", D);
  f.add<std::string>("tool-key", &tool_key, "tools", "JSON key of the row's tools", D);
  f.add<bool>("apply-chat-template", &apply_chat_template, false,
              "render prompts with the chat template", D);
  f.add<std::string>("apply-chat-template-kwargs", &apply_chat_template_kwargs, "",
                     "JSON kwargs for the template", D);
  f.add<std::optional<int64_t>>("rollout-max-prompt-len", &rollout_max_prompt_len, std::nullopt,
                                "drop longer prompts (tokens)", D);
  f.add<bool>("rollout-shuffle", &rollout_shuffle, false, "shuffle prompts every epoch", D);
  f.add<int64_t>("rollout-seed", &rollout_seed, 42, "shuffle / sampling seed", D);
  f.add<std::optional<int64_t>>("num-rollout", &num_rollout, std::nullopt, "rollout steps to run",
                                D);
  f.add<std::optional<int64_t>>("start-rollout-id", &start_rollout_id, std::nullopt,
                                "the first rollout's id (default: the checkpoint's next, or 0)", D);
  f.add<std::optional<int64_t>>("num-epoch", &num_epoch, std::nullopt,
                                "epochs (when --num-rollout is unset)", D);
  f.add<bool>("strict-data", &strict_data, false,
              "fail on a malformed prompt line instead of skipping", D);

  f.add<int64_t>("rollout-batch-size", &rollout_batch_size, 0, "prompt groups per rollout", R);
  f.add<int64_t>("n-samples-per-prompt", &n_samples_per_prompt, 1, "responses per prompt", R);
  f.add<std::optional<int64_t>>("over-sampling-batch-size", &over_sampling_batch_size, std::nullopt,
                                "groups submitted at a time (default rollout-batch-size)", R);
  f.add<std::string>("dynamic-sampling-filter-path", &dynamic_sampling_filter_path, "",
                     "group filter: check_reward_nonzero_std[_with_fallback] or lib.so[:symbol]",
                     R);
  f.add<std::string>("custom-generate-function-path", &custom_generate_function_path, "",
                     "generate function plugin lib.so[:symbol]", R);
  f.add<bool>("partial-rollout", &partial_rollout, false,
              "return aborted groups with partial responses to the buffer", R);
  f.add<bool>("mask-offpolicy-in-partial-rollout", &mask_offpolicy_in_partial_rollout, false,
              "no loss on the earlier part of continued responses", R);
  f.add<double>("rollout-temperature", &rollout_temperature, 1.0,
                "sampling temperature (training divides logits by it)", R);
  f.add<double>("rollout-top-p", &rollout_top_p, 1.0, "nucleus sampling", R);
  f.add<int64_t>("rollout-top-k", &rollout_top_k, -1, "top-k sampling (-1 off)", R);
  f.add<std::vector<std::string>>("rollout-stop", &rollout_stop, {}, "stop strings", R);
  f.add<std::vector<int64_t>>("rollout-stop-token-ids", &rollout_stop_token_ids, {},
                              "stop token ids", R);
  f.add<int64_t>("rollout-max-response-len", &rollout_max_response_len, 1024,
                 "max new tokens per response", R);
  f.add<std::optional<int64_t>>("rollout-max-context-len", &rollout_max_context_len, std::nullopt,
                                "max prompt+response tokens", R);
  f.add<int64_t>("rollout-concurrency", &rollout_concurrency, 64, "samples generated concurrently",
                 R);
  f.add<bool>("rollout-skip-special-tokens", &rollout_skip_special_tokens, false,
              "drop special tokens (e.g. EOS) from the response text rewards see", R);
  f.add<bool>("sglang-enable-deterministic-inference", &deterministic_inference, false,
              "per-group seeds rollout_seed + i", R);

  f.add<int64_t>("page-size", &page_size, 16, "KV cache page size (tokens)", E);
  f.add<int64_t>("max-total-tokens", &max_total_tokens, 0, "KV cache capacity in tokens (0: auto)",
                 E);
  f.add<int64_t>("max-running-requests", &max_running_requests, 256, "engine batch limit", E);
  f.add<int64_t>("chunked-prefill-size", &chunked_prefill_size, 2048,
                 "engine token budget per step", E);
  f.add<std::string>("sglang-kv-cache-dtype", &kv_cache_dtype, "auto",
                     "colocated engine's KV cache: auto (bf16 with --precision bf16 on the GPU), "
                     "bf16 (GPU only) or f32",
                     E);
  f.add<int64_t>("sglang-cuda-graph-max-bs", &cuda_graph_max_bs, 256,
                 "colocated engine on the GPU: decode steps of up to this many requests replay "
                 "CUDA graphs (0: none)",
                 E);
  f.add<bool>("sglang-disable-cuda-graph", &disable_cuda_graph, false,
              "colocated engine on the GPU: decode without CUDA graphs", E);
  f.add<bool>("sglang-disable-overlap-schedule", &disable_overlap_schedule, false,
              "colocated engine on the GPU: no decode look-ahead (each step's tokens are read "
              "back before the next step is launched; same outputs)",
              E);

  f.add<std::vector<std::string>>(
      "rollout-external-engine-addrs", &rollout_external_engine_addrs, {},
      "roll out on running SGLang-compatible servers (host:port ...) instead of in-process", P);
  f.add<std::string>("sglang-router-ip", &sglang_router_ip, "",
                     "roll out through a running router (gyre router / sgl-router) at this host",
                     P);
  f.add<int64_t>("sglang-router-port", &sglang_router_port, 0, "the router's port", P);
  f.add<std::string>("update-weight-dir", &update_weight_dir, "",
                     "remote engines: folder for the weight_v* HF folders they reload (default "
                     "<save>/weight_sync, else a temporary folder)",
                     P);
  f.add<std::string>("update-weight-transport", &update_weight_transport, "auto",
                     "remote engines: nccl (SGLang's weight-update group; trainer and engines on "
                     "GPUs), disk (HF folders in --update-weight-dir) or auto (nccl when "
                     "--device cuda and the engines are listed, else disk)",
                     P);
  f.add<int64_t>("update-weight-buffer-size", &update_weight_buffer_size, int64_t(512) << 20,
                 "remote engines over NCCL: bytes per broadcast bucket", P);
  f.add<std::string>("update-weight-master-address", &update_weight_master_address, "",
                     "remote engines over NCCL: this host's address as the engines reach it "
                     "(default: 127.0.0.1 for local engines, else the host name)",
                     P);
  f.add<int64_t>("actor-num-nodes", &actor_num_nodes, 1, "training nodes", P);
  f.add<int64_t>("actor-num-gpus-per-node", &actor_num_gpus_per_node, 1,
                 "training ranks per node (mpirun -np = nodes x this)", P);
  f.add<int64_t>("rollout-num-gpus", &rollout_num_gpus, -1,
                 "GPUs of rollout engines (-1: the actor's, colocated)", P);
  f.add<int64_t>("rollout-num-gpus-per-engine", &rollout_num_gpus_per_engine, 1,
                 "GPUs per rollout engine", P);
  f.add<int64_t>("num-gpus-per-node", &num_gpus_per_node, 8, "GPUs per node", P);
  f.add<int64_t>("tensor-model-parallel-size", &tensor_model_parallel_size, 1,
                 "tensor parallel size (1 only, for now)", P);
  f.add<bool>("colocate", &colocate, false, "trainer and engine share the ranks", P);
  f.add<std::string>("dp-mode", &dp_mode, "zero1",
                     "data-parallel optimizer: zero1 (sharded Adam state, slime's distributed "
                     "optimizer) or all_reduce",
                     P)
      .choices({"zero1", "all_reduce"});
  f.add<double>("distributed-timeout-minutes", &distributed_timeout_minutes, 10,
                "a collective that cannot finish fails after this", P);

  f.add<std::string>(
      "rm-type", &rm_type, "",
      "built-in reward: math, deepscaler, dapo, f1, gpqa, exact_match, remote_rm, random", W);
  f.add<std::string>("reward-key", &reward_key, "", "key of a dict-valued reward", W);
  f.add<bool>("group-rm", &group_rm, false, "reward function scores whole groups", W);
  f.add<std::string>("custom-rm-path", &custom_rm_path, "",
                     "reward plugin lib.so[:symbol] or a command speaking JSON lines", W);
  f.add<std::string>("rm-url", &rm_url, "", "remote reward model URL (remote_rm)", W);
  f.add<double>("rm-timeout", &rm_timeout, 30.0, "seconds per reward call (custom / remote)", W);

  f.add<std::string>("advantage-estimator", &advantage_estimator, "grpo", "advantage estimator", A)
      .choices(
          {"grpo", "gspo", "cispo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "ppo"});
  f.add<bool>("disable-rewards-normalization", &algo.disable_rewards_normalization, false,
              "no group reward normalisation", A);
  f.add<bool>("disable-grpo-std-normalization", &algo.disable_grpo_std_normalization, false,
              "Dr.GRPO: no std division", A);
  f.add<bool>("normalize-advantages", &algo.normalize_advantages, false, "whiten advantages", A);
  f.add<double>("gamma", &algo.gamma, 1.0, "discount", A);
  f.add<double>("lambd", &algo.lambd, 1.0, "GAE lambda", A);
  f.add<double>("kl-coef", &algo.kl_coef, 0.0, "KL reward shaping coefficient", A);
  f.add<bool>("use-kl-loss", &algo.use_kl_loss, false, "KL loss against --ref-load", A);
  f.add<double>("kl-loss-coef", &algo.kl_loss_coef, 0.0, "KL loss coefficient", A);
  f.add<std::string>("kl-loss-type", &kl_loss_type, "k1", "KL estimator", A)
      .choices({"k1", "k2", "k3", "low_var_kl"});
  f.add<bool>("use-unbiased-kl", &algo.use_unbiased_kl, false, "importance-weighted KL", A);
  f.add<std::string>("loss-type", &loss_type, "policy_loss", "policy_loss or sft_loss", A)
      .choices({"policy_loss", "sft_loss"});
  f.add<double>("eps-clip", &algo.eps_clip, 0.2, "PPO clip", A);
  f.add<std::optional<double>>("eps-clip-high", &eps_clip_high, std::nullopt,
                               "upper clip (default eps-clip)", A);
  f.add<std::optional<double>>("eps-clip-c", &eps_clip_c, std::nullopt, "dual clip bound (> 1)", A);
  f.add<double>("value-clip", &algo.value_clip, 0.2, "PPO value-loss clip", A);
  f.add<double>("entropy-coef", &algo.entropy_coef, 0.0, "entropy bonus", A);
  f.add<bool>("use-tis", &algo.use_tis, false, "truncated importance sampling", A);
  f.add<double>("tis-clip", &algo.tis_clip, 2.0, "TIS upper clip", A);
  f.add<double>("tis-clip-low", &algo.tis_clip_low, 0.0, "TIS lower clip", A);
  f.add<bool>("use-rollout-logprobs", &algo.use_rollout_logprobs, false,
              "old policy = rollout log-probs", A);
  f.add<bool>("calculate-per-token-loss", &algo.calculate_per_token_loss, false, "token-mean loss",
              A);

  f.add<std::optional<int64_t>>("global-batch-size", &global_batch_size, std::nullopt,
                                "samples per optimizer step", T);
  f.add<std::optional<int64_t>>("num-steps-per-rollout", &num_steps_per_rollout, std::nullopt,
                                "optimizer steps per rollout", T);
  f.add<int64_t>("micro-batch-size", &micro_batch_size, 1, "samples per micro-batch", T);
  f.add<bool>("balance-data", &balance_data, false,
              "data parallel: split each step's samples over the ranks by tokens (equal counts, "
              "Karmarkar-Karp) instead of in contiguous slices",
              T);
  f.add<bool>("use-dynamic-batch-size", &use_dynamic_batch_size, false,
              "pack micro-batches by tokens", T);
  f.add<int64_t>("max-tokens-per-gpu", &max_tokens_per_gpu, 0,
                 "token budget of a packed micro-batch", T);
  f.add<double>("lr", &lr, 1e-6, "learning rate", T);
  f.add<double>("min-lr", &min_lr, 0.0, "final learning rate of the decay", T);
  f.add<std::string>("lr-decay-style", &lr_decay_style, "constant", "lr decay", T)
      .choices({"constant", "linear", "cosine"});
  f.add<int64_t>("lr-warmup-iters", &lr_warmup_iters, 0, "linear warmup steps", T);
  f.add<std::optional<int64_t>>("lr-decay-iters", &lr_decay_iters, std::nullopt,
                                "decay length (default: all steps)", T);
  f.add<double>("weight-decay", &weight_decay, 0.0, "AdamW weight decay", T);
  f.add<double>("adam-beta1", &adam_beta1, 0.9, "AdamW beta1", T);
  f.add<double>("adam-beta2", &adam_beta2, 0.999, "AdamW beta2", T);
  f.add<double>("adam-eps", &adam_eps, 1e-8, "AdamW epsilon", T);
  f.add<double>("clip-grad", &clip_grad, 1.0, "global gradient-norm clip (0: off)", T);

  f.add<std::vector<std::string>>("eval-prompt-data", &eval_prompt_data, {},
                                  "name path [name path ...]", V);
  f.add<int64_t>("eval-interval", &eval_interval, 0, "evaluate every N rollouts (0: off)", V);
  f.add<std::optional<double>>("eval-temperature", &eval_temperature, std::nullopt,
                               "eval sampling temperature (default rollout's)", V);
  f.add<int64_t>("n-samples-per-eval-prompt", &n_samples_per_eval_prompt, 1,
                 "samples per eval prompt", V);
  f.add<std::optional<int64_t>>("eval-max-response-len", &eval_max_response_len, std::nullopt,
                                "eval max new tokens", V);
  f.add<std::optional<double>>("eval-top-p", &eval_top_p, std::nullopt,
                               "eval nucleus sampling (default --rollout-top-p)", V);
  f.add<std::optional<int64_t>>("eval-top-k", &eval_top_k, std::nullopt,
                                "eval top-k sampling (default --rollout-top-k)", V);
  f.add<std::optional<int64_t>>("eval-min-new-tokens", &eval_min_new_tokens, std::nullopt,
                                "eval: stop tokens masked until this many were generated", V);
  f.add<std::optional<int64_t>>("eval-max-prompt-len", &eval_max_prompt_len, std::nullopt,
                                "drop longer eval prompts (default --rollout-max-prompt-len)", V);
  f.add<std::optional<std::string>>("eval-input-key", &eval_input_key, std::nullopt,
                                    "JSON key of the eval prompt (default --input-key)", V);
  f.add<std::optional<std::string>>("eval-label-key", &eval_label_key, std::nullopt,
                                    "JSON key of the eval label (default --label-key)", V);
  f.add<std::optional<std::string>>("eval-tool-key", &eval_tool_key, std::nullopt,
                                    "JSON key of the eval row's tools (default --tool-key)", V);
  f.add<std::optional<std::string>>("eval-reward-key", &eval_reward_key, std::nullopt,
                                    "key of a dict reward for eval (default --reward-key)", V);
  f.add<bool>("skip-eval-before-train", &skip_eval_before_train, false,
              "no evaluation before the first rollout", V);

  f.add<std::string>("save-debug-rollout-data", &save_debug_rollout_data, "",
                     "write each rollout's samples (path with {rollout_id})", G);
  f.add<std::string>("load-debug-rollout-data", &load_debug_rollout_data, "",
                     "train on saved rollouts instead of generating", G);
  f.add<bool>("debug-rollout-only", &debug_rollout_only, false, "generate and score, no training",
              G);
  f.add<bool>("debug-train-only", &debug_train_only, false,
              "train on --load-debug-rollout-data only", G);
  f.add<bool>("skip-ratio-check", &skip_ratio_check, false,
              "do not abort when the first micro-step ratio != 1", G);
  f.add<bool>("use-tensorboard", &use_tensorboard, false,
              "mirror metrics to TensorBoard event files", G);
  f.add<bool>("quiet", &quiet, false, "no per-step progress line", G);
  megatron.register_flags(f);
}

void TrainConfig::validate() {
  if (hf_checkpoint.empty() && load.empty())
    GYRE_THROW(invalid_argument,
               "no model to train: set --hf-checkpoint DIR (`hf-checkpoint: DIR` in a --config "
               "file) to a Hugging Face model folder, or --load CKPT to resume a gyre checkpoint");
  if (tokenizer_dir.empty()) tokenizer_dir = hf_checkpoint;
  megatron.apply_and_validate(*this);
  if (update_weight_transport != "auto" && update_weight_transport != "nccl" &&
      update_weight_transport != "disk")
    GYRE_THROW(invalid_argument, "--update-weight-transport '{}' is not one of auto, nccl, disk",
               update_weight_transport);
  // Checked here, on every rank, rather than where rank 0 builds the pusher: an error on rank 0
  // alone would leave the other ranks waiting in the first collective.
  if (update_weight_transport == "nccl" && device != "cuda")
    GYRE_THROW(invalid_argument,
               "--update-weight-transport nccl needs the trainer on a GPU (--device cuda); CPU "
               "trainers push weights with --update-weight-transport disk");
  if (update_weight_transport == "nccl" && !sglang_router_ip.empty())
    GYRE_THROW(invalid_argument,
               "--update-weight-transport nccl forms one NCCL group with every engine: list "
               "them with --rollout-external-engine-addrs instead of --sglang-router-ip");
  if (update_weight_buffer_size < 1024)
    GYRE_THROW(invalid_argument, "--update-weight-buffer-size {} must be >= 1024 bytes",
               update_weight_buffer_size);
  if (rollout_batch_size < 1)
    GYRE_THROW(invalid_argument, "--rollout-batch-size must be >= 1 (got {})", rollout_batch_size);
  if (n_samples_per_prompt < 1)
    GYRE_THROW(invalid_argument, "--n-samples-per-prompt must be >= 1 (got {})",
               n_samples_per_prompt);
  // Every sample of a rollout is held in memory at once, and the algorithm counts groups and
  // samples in int32: past that, the run died in an allocation ("internal: vector::reserve") or
  // wrapped into a negative batch size.
  if (double(rollout_batch_size) * double(n_samples_per_prompt) > double(INT32_MAX))
    GYRE_THROW(invalid_argument,
               "--rollout-batch-size {} x --n-samples-per-prompt {} = {:.0f} samples per rollout "
               "exceeds {} (2^31 - 1: sample counts are int32); lower one of them",
               rollout_batch_size, n_samples_per_prompt,
               double(rollout_batch_size) * double(n_samples_per_prompt), INT32_MAX);
  const int64_t per_rollout = rollout_batch_size * n_samples_per_prompt;
  // slime: rbs x n = gbs x steps; --num-steps-per-rollout sets gbs.
  if (num_steps_per_rollout) {
    if (*num_steps_per_rollout < 1 || per_rollout % *num_steps_per_rollout != 0)
      GYRE_THROW(invalid_argument,
                 "--num-steps-per-rollout {} does not divide rollout_batch_size ({}) x "
                 "n_samples_per_prompt ({}) = {}",
                 *num_steps_per_rollout, rollout_batch_size, n_samples_per_prompt, per_rollout);
    const int64_t gbs = per_rollout / *num_steps_per_rollout;
    if (global_batch_size && *global_batch_size != gbs)
      GYRE_THROW(invalid_argument,
                 "inconsistent batch configuration: rollout_batch_size ({}) x n_samples_per_prompt "
                 "({}) = {} but global_batch_size ({}) x num_steps_per_rollout ({}) = {}",
                 rollout_batch_size, n_samples_per_prompt, per_rollout, *global_batch_size,
                 *num_steps_per_rollout, *global_batch_size * *num_steps_per_rollout);
    global_batch_size = gbs;
  }
  if (!global_batch_size) global_batch_size = per_rollout;
  if (*global_batch_size < 1 || per_rollout % *global_batch_size != 0)
    GYRE_THROW(invalid_argument,
               "inconsistent batch configuration: rollout_batch_size ({}) x n_samples_per_prompt "
               "({}) = {} is not a multiple of global_batch_size ({})",
               rollout_batch_size, n_samples_per_prompt, per_rollout, *global_batch_size);
  if (over_sampling_batch_size && *over_sampling_batch_size < rollout_batch_size)
    GYRE_THROW(invalid_argument,
               "--over-sampling-batch-size ({}) must be >= --rollout-batch-size ({})",
               *over_sampling_batch_size, rollout_batch_size);
  if (over_sampling_batch_size &&
      double(*over_sampling_batch_size) * double(n_samples_per_prompt) > double(INT32_MAX))
    GYRE_THROW(invalid_argument,
               "--over-sampling-batch-size {} x --n-samples-per-prompt {} samples in flight "
               "exceeds {} (2^31 - 1: sample counts are int32)",
               *over_sampling_batch_size, n_samples_per_prompt, INT32_MAX);
  if (!(rollout_temperature > 0) || std::isinf(rollout_temperature))
    GYRE_THROW(invalid_argument,
               "--rollout-temperature must be a finite number > 0 (got {}); slime rejects 0 too",
               rollout_temperature);
  if (rollout_max_response_len < 1)
    GYRE_THROW(invalid_argument, "--rollout-max-response-len must be >= 1");
  validate_rollout_settings(*this);
  // An optimiser that cannot train: a negative rate (gradient ascent), NaN or inf.
  if (!std::isfinite(lr) || lr < 0)
    GYRE_THROW(invalid_argument, "--lr must be a finite number >= 0 (got {})", lr);
  if (!std::isfinite(clip_grad) || clip_grad < 0)
    GYRE_THROW(invalid_argument,
               "--clip-grad must be a finite number >= 0; 0 turns it off (got {})", clip_grad);
  if (num_rollout && *num_rollout < 1)
    GYRE_THROW(invalid_argument, "--num-rollout must be >= 1 (got {})", *num_rollout);
  if (start_rollout_id && *start_rollout_id < 0)
    GYRE_THROW(invalid_argument, "--start-rollout-id must be >= 0 (got {})", *start_rollout_id);
  if (num_epoch && *num_epoch < 1)
    GYRE_THROW(invalid_argument, "--num-epoch must be >= 1 (got {})", *num_epoch);
  if (cuda_graph_max_bs < 0 || cuda_graph_max_bs > (int64_t(1) << 20))
    GYRE_THROW(invalid_argument,
               "--sglang-cuda-graph-max-bs must be in [0, 1048576] (got {}); 0 turns CUDA graphs "
               "off",
               cuda_graph_max_bs);
  if (use_dynamic_batch_size && max_tokens_per_gpu <= 0)
    GYRE_THROW(invalid_argument, "--use-dynamic-batch-size needs --max-tokens-per-gpu > 0");
  if (eval_prompt_data.size() % 2 != 0)
    GYRE_THROW(invalid_argument, "--eval-prompt-data takes pairs: name path [name path ...]");
  if (debug_train_only && load_debug_rollout_data.empty())
    GYRE_THROW(invalid_argument, "--debug-train-only needs --load-debug-rollout-data PATH");
  algo.advantage_estimator = parse_advantage_estimator(advantage_estimator);
  algo.kl_loss_type = parse_kl_type(kl_loss_type);
  algo.loss_type = parse_loss_type(loss_type);
  algo.eps_clip_high_opt = eps_clip_high;
  algo.eps_clip_c = eps_clip_c;
  algo.n_samples_per_prompt = int(n_samples_per_prompt);
  algo.rollout_batch_size = int(rollout_batch_size);
  algo.validate();
  if (!num_rollout && !num_epoch && !debug_train_only)
    GYRE_THROW(invalid_argument, "one of --num-rollout or --num-epoch is required");
}

void TrainConfig::derive_and_validate(int64_t dataset_size) {
  validate();
  if (num_rollout)
    total_rollouts = *num_rollout;
  else if (num_epoch)
    total_rollouts = dataset_size / rollout_batch_size * *num_epoch;
  if (start_rollout_id && *start_rollout_id > total_rollouts)
    GYRE_THROW(invalid_argument,
               "--start-rollout-id {} is past the run's {} rollouts (--num-rollout / --num-epoch)",
               *start_rollout_id, total_rollouts);
}

}  // namespace gyre::rl
