#include "gyre/rl/loop/train_loop.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/dist/step_channel_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/obs/console.h"
#include "gyre/obs/metrics.h"
#include "gyre/rl/algorithms/advantages.h"
#include "gyre/rl/data/debug_data.h"
#include "gyre/rl/data/sft_messages.h"
#include "gyre/rl/loop/checkpoint.h"
#include "gyre/rl/loop/components.h"
#include "gyre/rl/loop/distributed_run.h"
#include "gyre/rl/loop/evaluation.h"
#include "gyre/rl/loop/remote_rollout.h"
#include "gyre/rl/trainer/actor_trainer.h"
#include "gyre/rl/trainer/phase_timer.h"
#include "gyre/tokenizer/chat_template.h"

namespace gyre::rl {
namespace fs = std::filesystem;

namespace {

// Where each tp rank keeps its optimizer shard (Adam m/v of its parameter shards) next to a
// checkpoint: <ckpt>.tp_optimizer/tp_rank_R_of_N/. --load needs the same TP size.
std::string tp_optimizer_dir(const std::string& ckpt, const TrainDistributed& d) {
  return ckpt + ".tp_optimizer/tp_rank_" + std::to_string(d.groups.tp->rank()) + "_of_" +
         std::to_string(d.groups.tp->size());
}

// The data-parallel optimizer's folder next to a checkpoint: <ckpt>.dp_optimizer (DP alone; the
// optimizer adds dp_rank_D_of_M/), or <ckpt>.dp_optimizer/tp_rank_R_of_N under DP x TP, so every
// (dp, tp) rank has its own shard. --load needs the same DP and TP sizes.
std::string dp_optimizer_dir(const std::string& ckpt, const TrainDistributed& d) {
  std::string dir = ckpt + ".dp_optimizer";
  if (d.tp_size() > 1)
    dir += "/tp_rank_" + std::to_string(d.groups.tp->rank()) + "_of_" +
           std::to_string(d.groups.tp->size());
  return dir;
}

// Reward calls run on the rollout workers, concurrently with generation; their time is summed over
// calls (wall and the calling thread's CPU) so the step breakdown can show the reward share of the
// rollout phase (perf/reward_time, perf/reward_cpu_util).
struct RewardClock {
  std::mutex mu;
  double wall = 0, cpu = 0;
  void take(std::map<std::string, double>& m) {
    std::lock_guard<std::mutex> lk(mu);
    m["perf/reward_time"] = wall;
    if (wall > 0) m["perf/reward_cpu_util"] = cpu / (wall * machine_cores());
    wall = cpu = 0;
  }
};

RewardHook timed(RewardHook hook, std::shared_ptr<RewardClock> clock) {
  if (!hook) return hook;
  return [hook = std::move(hook), clock](SampleGroup& group) {
    Timer t;
    const double cpu0 = thread_cpu_seconds();
    hook(group);
    const double wall = t.elapsed(), cpu = thread_cpu_seconds() - cpu0;
    std::lock_guard<std::mutex> lk(clock->mu);
    clock->wall += wall;
    clock->cpu += cpu;
  };
}

// Renders chat prompts at load time (slime: --apply-chat-template renders with
// add_generation_prompt=True so Sample.prompt is a string); a plain string becomes one user turn.
// SFT keeps message-list rows as they are: sft_samples renders them turn by turn for the per-turn
// loss masks (rl/data/sft_messages.h).
void apply_chat_template(PromptDataset& data, const std::string& tokenizer_dir,
                         const std::string& kwargs_json, bool keep_message_lists) {
  auto tmpl = tokenizer::ChatTemplate::from_dir(tokenizer_dir);
  nlohmann::json kwargs = nlohmann::json::object();
  if (!kwargs_json.empty()) {
    try {
      kwargs = nlohmann::json::parse(kwargs_json);
    } catch (const nlohmann::json::exception& e) {
      GYRE_THROW(invalid_argument, "--apply-chat-template-kwargs is not JSON: {}", e.what());
    }
  }
  std::vector<Sample> rendered;
  for (size_t i = 0; i < data.size(); ++i) {
    Sample s = data[i];
    if (keep_message_lists && s.prompt.is_array()) {
      rendered.push_back(std::move(s));
      continue;
    }
    nlohmann::json messages = s.prompt;
    if (messages.is_string())
      messages = nlohmann::json::array({{{"role", "user"}, {"content", s.prompt}}});
    nlohmann::json tools = s.metadata.contains("tools") ? s.metadata["tools"] : nlohmann::json();
    s.prompt = tmpl.render(messages, tools, true, kwargs);
    rendered.push_back(std::move(s));
  }
  data = PromptDataset::from_samples(std::move(rendered), data.source());
}

std::shared_ptr<PromptDataset> load_prompts(const std::string& spec, const TrainConfig& cfg,
                                            const tokenizer::Tokenizer& tok) {
  PromptDataOptions o;
  o.input_key = cfg.input_key;
  if (!cfg.label_key.empty()) o.label_key = cfg.label_key;
  o.metadata_key = cfg.metadata_key;
  o.tool_key = cfg.tool_key;
  o.strict = cfg.strict_data;
  auto data = std::make_shared<PromptDataset>(PromptDataset::load(spec, o));
  if (cfg.apply_chat_template)
    apply_chat_template(*data, cfg.tokenizer_dir, cfg.apply_chat_template_kwargs,
                        cfg.loss_type == "sft_loss");
  const auto& st = data->stats();
  if (st.malformed)
    log::warn("{}: skipped {} malformed line(s); first at line {}: {} (--strict-data to fail)",
              spec, st.malformed, st.first_bad_line, st.first_bad_reason);
  // --rollout-max-prompt-len (default rollout_max_context_len - 1, as slime).
  std::optional<int64_t> max_len = cfg.rollout_max_prompt_len;
  if (!max_len && cfg.rollout_max_context_len) max_len = *cfg.rollout_max_context_len - 1;
  if (max_len) {
    std::vector<Sample> kept;
    int64_t dropped = 0;
    for (auto& s : data->prompts()) {
      size_t n = s.prompt.is_string() ? tok.encode(s.prompt.get<std::string>()).size() : 0;
      if (int64_t(n) > *max_len)
        ++dropped;
      else
        kept.push_back(s);
    }
    if (dropped)
      log::warn("{}: dropped {} prompt(s) longer than {} tokens", spec, dropped, *max_len);
    data = std::make_shared<PromptDataset>(PromptDataset::from_samples(std::move(kept), spec));
  }
  if (data->empty()) GYRE_THROW(invalid_argument, "{}: no usable prompts", spec);
  return data;
}

// SFT (--loss-type sft_loss): the "rollout" is the data itself. A row with a string prompt and a
// string label: the response is the label text followed by EOS and the loss mask covers it. A row
// whose prompt (--input-key) is a message list: rendered turn by turn with the chat template, loss
// on the assistant turns only (rl/data/sft_messages.h).
std::vector<Sample> sft_samples(std::vector<SampleGroup> groups, const tokenizer::Tokenizer& tok,
                                const TrainConfig& cfg,
                                std::optional<tokenizer::ChatTemplate>& chat_template) {
  std::vector<Sample> out;
  for (auto& g : groups)
    for (auto& s : g) {
      const std::string where = fmt::format("SFT sample {}", s.index.value_or(-1));
      if (s.prompt.is_array()) {
        if (!chat_template) chat_template = tokenizer::ChatTemplate::from_dir(cfg.tokenizer_dir);
        nlohmann::json kwargs = nlohmann::json::object();
        if (!cfg.apply_chat_template_kwargs.empty())
          kwargs = nlohmann::json::parse(cfg.apply_chat_template_kwargs, nullptr, false);
        if (kwargs.is_discarded())
          GYRE_THROW(invalid_argument, "--apply-chat-template-kwargs is not JSON");
        nlohmann::json tools =
            s.metadata.contains("tools") ? s.metadata["tools"] : nlohmann::json();
        build_sft_messages_sample(s, s.prompt, tools, kwargs, tok, *chat_template, where);
      } else if (s.prompt.is_string() && s.label.is_string()) {
        const std::string response = s.label.get<std::string>();
        s.tokens = tok.encode(s.prompt.get<std::string>(), false);
        std::vector<int32_t> resp = tok.encode(response, false);
        if (auto eos = tok.eos_token_id()) resp.push_back(*eos);
        if (s.tokens.empty() || resp.empty())
          GYRE_THROW(invalid_argument, "{}: empty prompt or response", where);
        s.response_length = 0;
        s.append_response(resp, std::vector<float>(resp.size(), 0.0f), true, "assistant", response);
        s.rollout_log_probs.clear();  // no engine log-probs in SFT
        s.response = response;
      } else {
        GYRE_THROW(invalid_argument,
                   "{}: needs a string prompt (--input-key) with a string label (--label-key) "
                   "holding the response, or a list of chat messages (--input-key) whose "
                   "assistant turns are trained",
                   where);
      }
      s.reward = 0.0;
      s.status = SampleStatus::completed;
      out.push_back(std::move(s));
    }
  return out;
}

infer::SamplingParams rollout_sampling(const TrainConfig& cfg, const tokenizer::Tokenizer& tok) {
  infer::SamplingParams p;
  p.temperature = float(cfg.rollout_temperature);
  p.top_p = float(cfg.rollout_top_p);
  p.top_k = int32_t(cfg.rollout_top_k);
  p.stop = cfg.rollout_stop;
  for (auto id : cfg.rollout_stop_token_ids) p.stop_token_ids.push_back(int32_t(id));
  p.max_new_tokens = int32_t(cfg.rollout_max_response_len);
  p.no_stop_trim = true;                                    // slime always passes no_stop_trim
  p.skip_special_tokens = cfg.rollout_skip_special_tokens;  // slime default: keep them
  (void)tok;
  return p;
}

}  // namespace

int run_train(TrainConfig& cfg, const std::string& flags_yaml) {
  // ---- resume point and model folders
  std::optional<std::string> resume;
  if (!cfg.load.empty()) {
    resume = find_latest_checkpoint(cfg.load);
    if (!resume) {
      if (cfg.hf_checkpoint.empty())
        GYRE_THROW(not_found,
                   "--load {}: no checkpoint there (and no --hf-checkpoint to start from)",
                   cfg.load);
      log::info("--load {}: no checkpoint yet, starting from --hf-checkpoint", cfg.load);
    }
  }
  const std::string model_dir = resume ? *resume + "/model" : cfg.hf_checkpoint;
  if (cfg.hf_checkpoint.empty()) cfg.hf_checkpoint = model_dir;
  if (cfg.tokenizer_dir.empty()) cfg.tokenizer_dir = cfg.hf_checkpoint;
  auto tok = tokenizer::Tokenizer::from_dir(cfg.tokenizer_dir);

  // ---- data
  std::shared_ptr<PromptDataset> dataset;
  if (!cfg.debug_train_only) {
    if (cfg.prompt_data.empty()) GYRE_THROW(invalid_argument, "--prompt-data is required");
    dataset = load_prompts(cfg.prompt_data, cfg, *tok);
  } else {
    dataset = std::make_shared<PromptDataset>();
  }
  cfg.derive_and_validate(int64_t(dataset->size()));
  // ---- processes: the launcher's world and the topology flags (one process without a launcher)
  TrainDistributed distributed = init_train_distributed(cfg);
  const bool main_rank = distributed.main_rank();
  const bool data_parallel = distributed.dp_size() > 1;
  if (data_parallel && main_rank)
    log::info("data parallel: {} replicas, {} optimizer; rank 0 rolls out", distributed.dp_size(),
              cfg.dp_mode);
  // Tensor parallelism: every rank holds its shard of the actor (and of the reference model).
  const bool tensor_parallel = distributed.tp_size() > 1;
  std::unique_ptr<model::TpComm> tp_comm;
  if (tensor_parallel) tp_comm = dist::make_tp_comm(*distributed.groups.tp);
  // Samples and weight versions travel from rank 0 to every other train rank.
  const bool multi_rank = data_parallel || tensor_parallel;
  std::vector<EvalSet> evals;
  for (size_t i = 0; i + 1 < cfg.eval_prompt_data.size(); i += 2)
    evals.push_back(
        {cfg.eval_prompt_data[i], load_prompts(cfg.eval_prompt_data[i + 1], cfg, *tok)});

  // ---- models and optimizer
  model::LoadOptions tp_load;
  tp_load.tp = tp_comm.get();
  tp_load.device = cfg.device == "cuda" ? Device::cuda : Device::cpu;
  tp_load.precision = model::parse_precision(cfg.precision);
  if (tp_load.device == Device::cuda && multi_rank)
    GYRE_THROW(unsupported,
               "--device cuda runs on one GPU in one process; this run has {} train ranks "
               "(data/tensor parallelism on GPUs is not wired into gyre train yet): launch one "
               "process or use --device cpu",
               distributed.world->size());
  // (A PPO critic keeps its own trunk on the CPU: it works next to a GPU actor, slowly.)
  std::shared_ptr<model::CausalLM> actor = model::CausalLM::load(model_dir, tp_load);
  actor->set_recompute(cfg.recompute_activations);
  std::unique_ptr<model::CausalLM> ref;
  if (!cfg.ref_load.empty()) ref = model::CausalLM::load(cfg.ref_load, tp_load);
  if (tok->vocab_size() > actor->config().vocab_size)
    GYRE_THROW(invalid_argument,
               "tokenizer {} has {} tokens but the model's vocab_size is {}: they do not belong "
               "together",
               cfg.tokenizer_dir, tok->vocab_size(), actor->config().vocab_size);
  const int64_t steps_per_rollout =
      cfg.rollout_batch_size * cfg.n_samples_per_prompt / *cfg.global_batch_size;
  train::AdamWConfig ac;
  ac.lr = cfg.lr, ac.min_lr = cfg.min_lr, ac.beta1 = cfg.adam_beta1, ac.beta2 = cfg.adam_beta2;
  ac.eps = cfg.adam_eps, ac.weight_decay = cfg.weight_decay, ac.clip_grad = cfg.clip_grad;
  train::LrSchedule sched;
  sched.decay_style = cfg.lr_decay_style;
  sched.warmup_iters = cfg.lr_warmup_iters;
  sched.decay_iters = cfg.lr_decay_iters.value_or(cfg.total_rollouts * steps_per_rollout);
  train::AdamW optimizer(ac, sched);
  if (tensor_parallel)  // clip by the norm of the full gradient, not of this rank's shards
    optimizer.set_grad_sum_squares([&actor](const train::NamedTensors& g) {
      std::vector<Tensor> v;
      for (const auto& [name, t] : g) v.push_back(t);
      return actor->grad_sum_squares(v);
    });
  std::unique_ptr<dist::DataParallelOptimizer> dp_optimizer;
  if (data_parallel) {
    dp_optimizer = std::make_unique<dist::DataParallelOptimizer>(distributed.dp(), ac, sched,
                                                                 dist::parse_dp_mode(cfg.dp_mode));
    // DP x TP: each replica is sharded; the clipping norm covers the full model (sharded tensors
    // summed over the tp group, replicated ones once) after the reduction over the dp group.
    if (tensor_parallel) {
      std::vector<bool> replicated;
      for (auto split : actor->tensor_parallel()->split)
        replicated.push_back(split == model::TpSplit::replicated);
      dp_optimizer->set_model_parallel(*distributed.groups.tp, std::move(replicated));
    }
  }

  DataBufferOptions bo;
  bo.n_samples_per_prompt = cfg.n_samples_per_prompt;
  bo.shuffle = cfg.rollout_shuffle;
  bo.seed = uint64_t(cfg.rollout_seed);
  DataBuffer buffer(dataset, bo);
  TrainerState state;
  if (resume) {
    if (dp_optimizer && tensor_parallel && !fs::exists(dp_optimizer_dir(*resume, distributed)))
      GYRE_THROW(not_found,
                 "--load {}: {} not found: the checkpoint was not written with "
                 "--tensor-model-parallel-size {} and {} data-parallel replicas (optimizer state "
                 "is per (dp, tp) rank; resume with the sizes it was saved with)",
                 cfg.load, dp_optimizer_dir(*resume, distributed), distributed.tp_size(),
                 distributed.dp_size());
    if (dp_optimizer)
      dp_optimizer->load(dp_optimizer_dir(*resume, distributed));
    else if (tensor_parallel)
      optimizer.load(tp_optimizer_dir(*resume, distributed));
    else
      optimizer.load(*resume);
    if (!cfg.debug_train_only) buffer.load_state_file(*resume + "/data_buffer.json");
    state = load_trainer_state(*resume);
    log::info("resumed from {} (rollout {} done, weight version {})", *resume, state.rollout_id,
              state.weight_version);
  }

  // ---- rollout side: colocated engine over the same model
  const bool sft = cfg.algo.loss_type == LossType::sft_loss;
  // TP: the rollout engine's link to its followers; declared first so it outlives the engine, whose
  // destructor may still tell the followers to stop.
  std::unique_ptr<infer::StepChannel> tp_channel;
  std::shared_ptr<infer::EngineApi> engine;
  std::unique_ptr<infer::RolloutClient> client;
  RewardHook reward;
  auto reward_clock = std::make_shared<RewardClock>();
  // Remote engines (--rollout-external-engine-addrs / --sglang-router-ip) or the colocated one;
  // with data parallelism only rank 0 rolls out.
  const std::vector<std::string> remote_urls = remote_engine_urls(cfg);
  std::unique_ptr<RemoteWeightPusher> pusher;
  // Tensor parallelism: the colocated engine runs the sharded actor on replica 0's tp ranks
  // (SGLang's design): rank 0's engine schedules, samples and broadcasts every step's plan; the
  // other tp ranks of replica 0 follow (infer::EngineFollower) with their shards and KV heads. The
  // weights are the actor's own on every rank, so a weight sync is a version bump, as in one
  // process.
  const bool tp_rollout = tensor_parallel && remote_urls.empty() && !sft && !cfg.debug_train_only;
  std::unique_ptr<infer::EngineFollower> follower;
  infer::Engine* leader = nullptr;
  if (tp_rollout && distributed.world->rank() < distributed.tp_size()) {  // replica 0
    tp_channel = dist::make_step_channel(*distributed.groups.tp);
    if (!main_rank)
      follower = std::make_unique<infer::EngineFollower>(*actor, colocated_engine_config(cfg),
                                                         *tp_channel);
  }
  if (!sft && !cfg.debug_train_only && main_rank) {
    if (!remote_urls.empty()) {
      client = make_remote_rollout_client(remote_urls);
      std::string dir = cfg.update_weight_dir;
      if (dir.empty())
        dir = cfg.save.empty()
                  ? (fs::temp_directory_path() / ("gyre_weight_sync_" + std::to_string(::getpid())))
                        .string()
                  : cfg.save + "/weight_sync";
      pusher = std::make_unique<RemoteWeightPusher>(dir, DType::f32);
      log::info("rolling out on {}; weights reach the engines through {}", client->describe(), dir);
    } else {
      engine = make_colocated_engine(actor, tok, cfg, tp_channel.get());
      client = std::make_unique<infer::InProcessRolloutClient>(engine);
      if (tp_rollout) {
        leader = dynamic_cast<infer::Engine*>(engine.get());
        log::info(
            "tensor parallel: {} ranks; the rollout engine runs the sharded policy (rank 0 "
            "schedules and samples, tp ranks 1..{} of replica 0 follow its steps)",
            distributed.tp_size(), distributed.tp_size() - 1);
      }
    }
    reward = make_reward_hook(cfg);
  }
  // A resumed run continues the weight versions (rollout/weight_version, Sample::weight_versions):
  // a fresh engine counts from 0, and colocated syncs are version bumps, so bump it up to the
  // checkpoint's version before the first rollout.
  if (client)
    while (client->weight_version() < state.weight_version) client->sync_weights(nullptr, "");
  GenerateContext gctx;
  gctx.client = client.get();
  gctx.tokenizer = tok;
  gctx.sampling = rollout_sampling(cfg, *tok);
  gctx.max_context_len = cfg.rollout_max_context_len.value_or(0);
  gctx.mask_offpolicy_in_partial_rollout = cfg.mask_offpolicy_in_partial_rollout;
  RolloutOptions ro;
  ro.rollout_batch_size = cfg.rollout_batch_size;
  ro.n_samples_per_prompt = cfg.n_samples_per_prompt;
  ro.over_sampling_batch_size = cfg.over_sampling_batch_size.value_or(0);
  ro.partial_rollout = cfg.partial_rollout;
  ro.concurrency = cfg.rollout_concurrency;
  ro.reward_key = cfg.reward_key;
  ro.deterministic = cfg.deterministic_inference;
  ro.rollout_seed = uint64_t(cfg.rollout_seed);
  ro.base_seed = uint64_t(cfg.seed);
  std::unique_ptr<RolloutManager> manager;
  if (client)
    manager = std::make_unique<RolloutManager>(
        ro, gctx, load_generate_function(cfg.custom_generate_function_path),
        timed(reward, reward_clock),
        load_dynamic_filter(cfg.dynamic_sampling_filter_path, cfg.reward_key));

  // PPO: the critic starts from --critic-load or from the actor's weights with a zero value head
  // (slime initialises the critic from the actor checkpoint); a resumed run restores it.
  std::unique_ptr<Critic> critic;
  if (cfg.algo.advantage_estimator == AdvantageEstimator::ppo) {
    train::AdamWConfig cc = ac;
    cc.lr = cfg.critic_lr.value_or(cfg.lr);
    critic =
        std::make_unique<Critic>(cfg.critic_load.empty() ? model_dir : cfg.critic_load, cc, sched);
    if (resume) {
      if (!fs::exists(*resume + "/critic/optimizer.json"))
        GYRE_THROW(not_found, "--load {}: the checkpoint has no critic/ (was it a ppo run?)",
                   *resume);
      critic->load(*resume + "/critic");
    }
  }
  ActorTrainerOptions to;
  to.critic = critic.get();
  to.algo = cfg.algo;
  to.global_batch_size = *cfg.global_batch_size;
  to.micro.micro_batch_size = cfg.micro_batch_size;
  to.micro.dynamic = cfg.use_dynamic_batch_size;
  to.micro.max_tokens_per_gpu = cfg.max_tokens_per_gpu;
  to.temperature = float(cfg.rollout_temperature);
  to.check_first_step_ratio = !cfg.skip_ratio_check;
  to.data_parallel = dp_optimizer.get();
  ActorTrainer trainer(*actor, ref.get(), optimizer, to);

  obs::MetricsOptions mo;
  mo.dir = main_rank ? cfg.save : "";
  mo.tensorboard = cfg.use_tensorboard;
  if (!cfg.save.empty() && main_rank) {
    fs::create_directories(cfg.save);
    std::ofstream(cfg.save + "/config.yaml") << flags_yaml;
  }
  obs::MetricsLogger metrics_log(mo);
  obs::ProgressOptions po;
  po.total_steps = cfg.total_rollouts;
  // The progress line: reward and held-out accuracy first (the quick-start's rising numbers).
  po.keys = {"rollout/raw_reward"};
  for (auto& e : evals) po.keys.push_back("eval/" + e.name);
  for (const char* k : {"train/loss", "train/pg_clipfrac", "train/grad_norm", "perf/tokens_per_s",
                        "perf/rollout_time", "perf/train_time"})
    po.keys.push_back(k);
  DType save_dtype = cfg.save_dtype == "bf16"  ? DType::bf16
                     : cfg.save_dtype == "f16" ? DType::f16
                                               : DType::f32;

  // Generation under tensor parallelism takes every tp rank of replica 0: rank 0's engine is
  // engaged for `work` (the rollout or the evaluation it drives) and releases its followers
  // afterwards, so their tp group is free again for training and checkpoints. Every rank reaches
  // the same phases in the same order (the conditions below depend only on flags); a follower whose
  // leader stopped mid-phase (an error on rank 0) fails here instead of waiting.
  auto generation_phase = [&](const std::function<void()>& work) {
    if (follower) {
      const infer::EngineFollower::Outcome out = follower->run();
      if (out.exit == infer::EngineFollower::Exit::stopped)
        GYRE_THROW(io, "tensor-parallel rollout: rank 0's engine stopped during generation: {}",
                   out.message);
      return;
    }
    if (leader) leader->engage_followers();
    work();
    if (leader) leader->release_followers();
  };
  auto run_eval = [&](std::map<std::string, double>& m) {
    if (!client && !follower) return;
    generation_phase([&] {
      for (auto& e : evals) {
        infer::SamplingParams sp = gctx.sampling;
        sp.temperature = float(cfg.eval_temperature.value_or(cfg.rollout_temperature));
        if (cfg.eval_max_response_len) sp.max_new_tokens = int32_t(*cfg.eval_max_response_len);
        PhaseTimer ph(m, "eval");
        for (auto& [k, v] :
             evaluate(e, *client, *tok, sp, cfg.n_samples_per_eval_prompt, reward, cfg.reward_key))
          m[k] = v;
      }
    });
  };

  const int64_t start = state.rollout_id + 1;
  // Remote engines start from whatever checkpoint they were given: push the trainer's weights
  // first (slime calls update_weights() once before the first rollout).
  if (pusher) {
    std::map<std::string, double> m0;
    state.weight_version = pusher->push(*actor, state.weight_version, *client, m0);
  }
  if (start == 0 && cfg.eval_interval > 0 && !evals.empty()) {
    std::map<std::string, double> m;
    run_eval(m);
    metrics_log.log(0, m);
    if (!cfg.quiet && main_rank) {
      std::string line = "[before training]";
      for (auto& [k, v] : m) line += " " + k + "=" + obs::format_metric_value(v);
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
  std::optional<tokenizer::ChatTemplate> sft_template;  // loaded for the first message-list row
  Timer run_timer;
  for (int64_t rid = start; rid < cfg.total_rollouts; ++rid) {
    Timer step_timer;
    std::map<std::string, double> m;
    std::vector<Sample> samples;
    {
      PhaseTimer ph(m, "rollout");
      if (!cfg.load_debug_rollout_data.empty()) {
        samples = load_rollout_dump(rollout_dump_path(cfg.load_debug_rollout_data, rid)).samples;
      } else if (sft) {
        samples = sft_samples(buffer.get_samples(cfg.rollout_batch_size), *tok, cfg, sft_template);
      } else if (manager || follower) {
        generation_phase([&] {
          RolloutOutput ro_out = manager->generate(rid, buffer);
          samples = std::move(ro_out.samples);
          for (auto& [k, v] : ro_out.metrics) m[k] = v;
          reward_clock->take(m);
        });
      }
      // Data parallel: every train rank trains on rank 0's scored samples.
      if (multi_rank && !sft) broadcast_samples(*distributed.world, samples);
    }
    if (!cfg.save_debug_rollout_data.empty() && main_rank)
      save_rollout_dump(rollout_dump_path(cfg.save_debug_rollout_data, rid), rid, samples);
    double gen_tokens = 0;
    for (auto& s : samples) gen_tokens += double(s.response_length);
    if (m.count("perf/rollout_time") && m["perf/rollout_time"] > 0)
      m["perf/tokens_per_s"] = gen_tokens / m["perf/rollout_time"];
    if (!sft && !m.count("rollout/raw_reward")) {
      for (auto& [k, v] : rollout_metrics(samples, cfg.reward_key)) m[k] = v;
    }
    if (!cfg.debug_rollout_only) {
      std::vector<double> raw;
      for (size_t i = 0; i < samples.size(); ++i) {
        double r = sft ? 0.0 : samples[i].reward_value(cfg.reward_key);
        if (!std::isfinite(r))
          GYRE_THROW(invalid_argument,
                     "rollout {}: sample {} (index {}) has a non-finite reward {}", rid, i,
                     samples[i].index.value_or(-1), r);
        raw.push_back(r);
      }
      std::vector<float> rewards = post_process_rewards(raw, cfg.algo);
      if (client) client->pause();
      {
        PhaseTimer ph(m, "train");
        for (auto& [k, v] : trainer.train(samples, rewards)) m[k] = v;
      }
      if (pusher) {
        PhaseTimer ph(m, "update_weights");
        state.weight_version = pusher->push(*actor, state.weight_version + 1, *client, m);
        client->resume();
      } else if (client) {
        // Colocated (also under TP: the engine and its followers run the actor's own shards): a
        // version bump, which also drops the radix cache's KV of the old weights.
        PhaseTimer ph(m, "update_weights");
        state.weight_version = client->sync_weights(nullptr, "");
        client->resume();
      } else {
        ++state.weight_version;
      }
      // Non-main ranks have no engine; they follow rank 0's version for their checkpoints.
      if (multi_rank) {
        std::string v = std::to_string(state.weight_version);
        distributed.world->broadcast(v, 0);
        state.weight_version = std::stoll(v);
      }
    }
    state.rollout_id = rid;
    if (cfg.eval_interval > 0 && !evals.empty() &&
        ((rid + 1) % cfg.eval_interval == 0 || rid + 1 == cfg.total_rollouts))
      run_eval(m);
    const bool last = rid + 1 == cfg.total_rollouts;
    if (!cfg.save.empty() &&
        (last || (cfg.save_interval > 0 && (rid + 1) % cfg.save_interval == 0))) {
      PhaseTimer ph(m, "save");
      // DP: every rank's optimizer shard lands next to the checkpoint before rank 0 marks the
      // checkpoint as the latest, so a checkpoint that is named is complete.
      if (dp_optimizer) {
        dp_optimizer->save(dp_optimizer_dir(checkpoint_dir(cfg.save, rid), distributed));
        distributed.world->barrier();
      }
      // TP: each rank's optimizer shard first (as with DP), then the model, which the ranks of
      // replica 0 gather inside CausalLM::save (rank 0 writes it, full, in save_checkpoint).
      if (tensor_parallel && !dp_optimizer) {
        optimizer.save(tp_optimizer_dir(checkpoint_dir(cfg.save, rid), distributed));
        distributed.world->barrier();
      }
      if (main_rank)
        save_checkpoint(cfg.save, rid, *actor, save_dtype, cfg.tokenizer_dir, optimizer, buffer,
                        state, flags_yaml, [&](const std::string& dir) {
                          if (critic) critic->save(dir + "/critic", save_dtype);
                        });
      else if (tensor_parallel && distributed.groups.dp->rank() == 0)
        actor->save("", save_dtype);  // takes part in the gather; writes nothing off rank 0
    }
    m["perf/step_time"] = step_timer.elapsed();
    m["perf/wall_time"] = run_timer.elapsed();
    m["rollout/weight_version"] = double(state.weight_version);
    metrics_log.log(rid + 1, m);
    if (!cfg.quiet && main_rank)
      std::fprintf(stderr, "%s\n", obs::format_progress(rid, step_timer.elapsed(), m, po).c_str());
  }
  return 0;
}

}  // namespace gyre::rl
