// `gyre train`'s loop (see train_loop.h): resume point, data, models (train_models.h), the
// rollout side (train_rollout.h), then per rollout step: generate (or SFT data, or a dump) ->
// rewards -> train -> weight sync -> eval -> checkpoint -> metrics and the progress line.
#include "gyre/rl/loop/train_loop.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/dist/comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/model/config.h"
#include "gyre/obs/console.h"
#include "gyre/obs/metrics.h"
#include "gyre/rl/algorithms/advantages.h"
#include "gyre/rl/data/debug_data.h"
#include "gyre/rl/loop/checkpoint.h"
#include "gyre/rl/loop/distributed_run.h"
#include "gyre/rl/loop/evaluation.h"
#include "gyre/rl/loop/train_data.h"
#include "gyre/rl/loop/train_models.h"
#include "gyre/rl/loop/train_rollout.h"
#include "gyre/rl/rewards/reward.h"
#include "gyre/rl/trainer/actor_trainer.h"
#include "gyre/rl/trainer/phase_timer.h"

namespace gyre::rl {
namespace fs = std::filesystem;

namespace {

// The tokenizer of the run, or an error naming the flag that chose its folder (--tokenizer,
// --hf-checkpoint or the --load checkpoint) and the folder as it was looked up.
std::shared_ptr<const tokenizer::Tokenizer> load_train_tokenizer(const TrainConfig& cfg,
                                                                 const std::string& flag) {
  const fs::path dir = cfg.tokenizer_dir;
  std::error_code ec;
  if (!fs::exists(dir / "tokenizer.json", ec)) {
    const std::string abs = fs::absolute(dir, ec).string();
    GYRE_THROW(not_found,
               "{}: no tokenizer.json in {}{}; point {} at a Hugging Face model folder "
               "(config.json, tokenizer.json, *.safetensors){}",
               flag, cfg.tokenizer_dir, abs == cfg.tokenizer_dir ? "" : " (" + abs + ")",
               flag.substr(0, flag.find(' ')),
               flag.rfind("--tokenizer", 0) == 0
                   ? ""
                   : ", or name the tokenizer's folder with --tokenizer");
  }
  return tokenizer::Tokenizer::from_dir(cfg.tokenizer_dir);
}

// Where the lengths of a rollout meet the model: checked from its config.json, before the weights
// are read. A response budget that leaves no room for a prompt in the context would fail every
// request of the first rollout; a stop id past the vocabulary likewise.
void check_rollout_against_model(const TrainConfig& cfg, const model::ModelConfig& mc,
                                 const std::string& model_dir) {
  const int64_t context = cfg.rollout_max_context_len.value_or(mc.max_position_embeddings);
  if (context > 0 && cfg.rollout_max_response_len >= context)
    GYRE_THROW(invalid_argument,
               "--rollout-max-response-len {} leaves no room for a prompt in the context of {} "
               "tokens ({}); lower it below {}",
               cfg.rollout_max_response_len, context,
               cfg.rollout_max_context_len
                   ? std::string("--rollout-max-context-len")
                   : "max_position_embeddings in " + model_dir + "/config.json",
               context);
  for (int64_t id : cfg.rollout_stop_token_ids)
    if (id >= mc.vocab_size)
      GYRE_THROW(invalid_argument,
                 "--rollout-stop-token-ids: {} is outside the model's vocabulary [0, {}) ({})", id,
                 mc.vocab_size, model_dir + "/config.json");
}

// Creates the --save folder and writes the resolved flags there: a folder that cannot be written
// is an error about --save before any work (it used to surface as an internal filesystem error).
void prepare_save_dir(const std::string& save, const std::string& flags_yaml) {
  std::error_code ec;
  fs::create_directories(save, ec);
  if (ec)
    GYRE_THROW(io, "--save {}: cannot create the output folder: {}; pass a writable folder", save,
               ec.message());
  std::ofstream out(save + "/config.yaml");
  if (!(out << flags_yaml))
    GYRE_THROW(io, "--save {}: cannot write {}/config.yaml; pass a writable folder", save, save);
}

}  // namespace

int run_train(TrainConfig& cfg, const std::string& flags_yaml) {
  // ---- every flag first: nothing is loaded for a run its flags cannot start
  const bool tokenizer_flag = !cfg.tokenizer_dir.empty(), model_flag = !cfg.hf_checkpoint.empty();
  cfg.validate();
  if (!cfg.debug_train_only && cfg.prompt_data.empty())
    GYRE_THROW(invalid_argument, "--prompt-data is required");

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
  auto tok = load_train_tokenizer(cfg, tokenizer_flag ? "--tokenizer (config key `tokenizer`)"
                                       : model_flag ? "--hf-checkpoint (config key `hf-checkpoint`)"
                                                    : "--load (config key `load`)");
  const bool sft = cfg.algo.loss_type == LossType::sft_loss;
  const model::ModelConfig model_config = model::load_config(model_dir);
  cfg.megatron.check_against_model(model_config, model_dir + "/config.json");
  if (const std::string ignored = cfg.megatron.ignored(); !ignored.empty())
    log::info("accepted and ignored (no separate gyre knob): {}", ignored);
  if (!sft && !cfg.debug_train_only && cfg.load_debug_rollout_data.empty())
    check_rollout_against_model(cfg, model_config, model_dir);

  // ---- data
  std::shared_ptr<PromptDataset> dataset;
  if (!cfg.debug_train_only) {
    dataset = load_prompts(cfg.prompt_data, cfg, *tok);
    if (!sft && cfg.rm_type.empty() && cfg.custom_rm_path.empty() &&
        cfg.load_debug_rollout_data.empty()) {
      const std::string source = "--prompt-data " + cfg.prompt_data;
      for (size_t i = 0; i < dataset->size(); ++i)
        rewards::check_metadata_rm_type((*dataset)[i].metadata, i, source);
    }
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
  // Rank 0 writes the outputs; every rank agrees on the result, so that a folder rank 0 cannot
  // create stops the whole job here rather than leaving the other ranks in their first collective
  // until its timeout.
  dist::run_on_every_rank(*distributed.world, "preparing the output folders", [&] {
    if (!main_rank) return;
    if (!cfg.save.empty()) prepare_save_dir(cfg.save, flags_yaml);
    if (!cfg.save_debug_rollout_data.empty()) {
      // The dumps are written after each rollout: check the pattern and its folder now.
      const fs::path first = rollout_dump_path(cfg.save_debug_rollout_data, 0);
      std::error_code ec;
      if (first.has_parent_path()) fs::create_directories(first.parent_path(), ec);
      if (ec)
        GYRE_THROW(io, "--save-debug-rollout-data {}: cannot create the folder {}: {}",
                   cfg.save_debug_rollout_data, first.parent_path().string(), ec.message());
    }
  });
  // Tensor parallelism: every rank holds its shard of the actor (and of the reference model).
  const bool tensor_parallel = distributed.tp_size() > 1;
  std::unique_ptr<model::TpComm> tp_comm;
  if (tensor_parallel) tp_comm = dist::make_tp_comm(*distributed.groups.tp);
  // Samples and weight versions travel from rank 0 to every other train rank.
  const bool multi_rank = data_parallel || tensor_parallel;
  std::vector<EvalSet> evals;
  for (size_t i = 0; i + 1 < cfg.eval_prompt_data.size(); i += 2) {
    evals.push_back({cfg.eval_prompt_data[i],
                     load_prompts(cfg.eval_prompt_data[i + 1], cfg, *tok, /*eval=*/true)});
    // An evaluation holds all its samples at once (as a rollout does, TrainConfig::validate()).
    const double samples =
        double(evals.back().data->size()) * double(cfg.n_samples_per_eval_prompt);
    if (samples > double(INT32_MAX))
      GYRE_THROW(invalid_argument,
                 "--eval-prompt-data {}: {} prompts x --n-samples-per-eval-prompt {} = {:.0f} "
                 "samples exceeds {} (2^31 - 1: sample counts are int32)",
                 cfg.eval_prompt_data[i + 1], evals.back().data->size(),
                 cfg.n_samples_per_eval_prompt, samples, INT32_MAX);
  }

  // ---- models and optimizer
  TrainModels models = load_train_models(cfg, model_dir, distributed, tp_comm.get(), *tok);
  const std::shared_ptr<model::CausalLM>& actor = models.actor;
  train::AdamW& optimizer = *models.optimizer;

  DataBufferOptions bo;
  bo.n_samples_per_prompt = cfg.n_samples_per_prompt;
  bo.shuffle = cfg.rollout_shuffle;
  bo.seed = uint64_t(cfg.rollout_seed);
  DataBuffer buffer(dataset, bo);
  TrainerState state;
  if (resume) {
    load_optimizer_state(models, *resume, cfg, distributed);
    if (!cfg.debug_train_only) buffer.load_state_file(*resume + "/data_buffer.json");
    state = load_trainer_state(*resume);
    log::info("resumed from {} (rollout {} done, weight version {})", *resume, state.rollout_id,
              state.weight_version);
  }

  // ---- rollout side: the colocated engine over the same model (under TP, led by rank 0 and
  // followed by replica 0's other tp ranks), or remote engines
  TrainRollout rollout = make_train_rollout(cfg, distributed, actor, tok, state.weight_version);
  // Colocated on a GPU: AdamW writes the engine's bf16 weight copies in its own kernel, so each
  // weight sync is a version bump that keeps the decode graphs (issue 8: colocated sync < 1 ms).
  share_bf16_weight_copies(rollout, models);
  infer::RolloutClient* client = rollout.client.get();

  // PPO: the critic starts from --critic-load or from the actor's weights with a zero value head
  // (slime initialises the critic from the actor checkpoint); a resumed run restores it.
  std::unique_ptr<Critic> critic;
  if (cfg.algo.advantage_estimator == AdvantageEstimator::ppo) {
    train::AdamWConfig cc = models.adamw;
    cc.lr = cfg.critic_lr.value_or(cfg.lr);
    critic = std::make_unique<Critic>(cfg.critic_load.empty() ? model_dir : cfg.critic_load, cc,
                                      models.schedule);
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
  to.data_parallel = models.dp_optimizer.get();
  to.balance_data = cfg.balance_data;
  ActorTrainer trainer(*actor, models.ref.get(), optimizer, to);

  obs::MetricsOptions mo;
  mo.dir = main_rank ? cfg.save : "";
  mo.tensorboard = cfg.use_tensorboard;
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

  auto run_eval = [&](std::map<std::string, double>& m) {
    if (!client && !rollout.follower) return;
    rollout.generation_phase([&] {
      for (auto& e : evals) {
        infer::SamplingParams sp = rollout.gctx.sampling;
        // slime's precedence: an --eval-* flag, else the rollout's value.
        sp.temperature = float(cfg.eval_temperature.value_or(cfg.rollout_temperature));
        if (cfg.eval_max_response_len) sp.max_new_tokens = int32_t(*cfg.eval_max_response_len);
        if (cfg.eval_top_p) sp.top_p = float(*cfg.eval_top_p);
        if (cfg.eval_top_k) sp.top_k = int32_t(*cfg.eval_top_k);
        if (cfg.eval_min_new_tokens) sp.min_new_tokens = int32_t(*cfg.eval_min_new_tokens);
        PhaseTimer ph(m, "eval");
        for (auto& [k, v] : evaluate(e, *client, *tok, sp, cfg.n_samples_per_eval_prompt,
                                     rollout.reward, cfg.eval_reward_key.value_or(cfg.reward_key)))
          m[k] = v;
      }
    });
  };

  // slime: --start-rollout-id when given, else the loaded checkpoint's next rollout, else 0.
  // (derive_and_validate checked it against the run's length before anything was loaded)
  const int64_t start = cfg.start_rollout_id.value_or(state.rollout_id + 1);
  // Remote engines start from whatever checkpoint they were given: push the trainer's weights
  // first (slime calls update_weights() once before the first rollout). Collective: under TP the
  // other tp ranks of replica 0 take part in the gather of the sharded actor.
  if (rollout.remote) {
    // Paused like every later push: an NCCL push arrives in several buckets, each a separate
    // update, and nothing may decode with half of them.
    std::map<std::string, double> m0;
    if (client) client->pause();
    state.weight_version = push_weights_to_remote(rollout.pusher.get(), client, *actor,
                                                  state.weight_version, distributed, m0);
    if (client) client->resume();
  }
  if (start == 0 && cfg.eval_interval > 0 && !evals.empty() && !cfg.skip_eval_before_train) {
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
      } else if (rollout.manager || rollout.follower) {
        rollout.generation_phase([&] {
          RolloutOutput ro_out = rollout.manager->generate(rid, buffer);
          samples = std::move(ro_out.samples);
          for (auto& [k, v] : ro_out.metrics) m[k] = v;
          rollout.reward_clock->take(m);
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
      if (rollout.remote) {
        // Every rank: rank 0 writes and pushes the full model (gathered under TP), the others
        // learn the outcome; a failed push stops them all.
        PhaseTimer ph(m, "update_weights");
        state.weight_version = push_weights_to_remote(rollout.pusher.get(), client, *actor,
                                                      state.weight_version + 1, distributed, m);
        if (client) client->resume();
      } else if (client) {
        // Colocated (also under TP: the engine and its followers run the actor's own shards): a
        // version bump, which also drops the radix cache's KV of the old weights.
        PhaseTimer ph(m, "update_weights");
        state.weight_version = client->sync_weights(nullptr, "");
        client->resume();
      } else {
        ++state.weight_version;
      }
      // Non-main ranks have no engine; they follow rank 0's version for their checkpoints (a
      // remote push has already handed it to every rank).
      if (multi_rank && !rollout.remote) {
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
      // Every rank's optimizer shard first (DP / TP), then the model: rank 0 writes it, full;
      // under TP the other ranks of replica 0 take part in its gather (CausalLM::save).
      save_optimizer_shards(models, checkpoint_dir(cfg.save, rid), distributed);
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
