// The trained side of `gyre train` (see train_models.h).
#include "gyre/rl/loop/train_models.h"

#include <filesystem>

#include "gyre/core/error.h"

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

}  // namespace

TrainModels load_train_models(const TrainConfig& cfg, const std::string& model_dir,
                              TrainDistributed& distributed, model::TpComm* tp_comm,
                              const tokenizer::Tokenizer& tok) {
  const bool data_parallel = distributed.dp_size() > 1;
  const bool tensor_parallel = distributed.tp_size() > 1;
  TrainModels m;
  model::LoadOptions tp_load;
  tp_load.tp = tp_comm;
  tp_load.device = cfg.device == "cuda" ? Device::cuda : Device::cpu;
  tp_load.precision = model::parse_precision(cfg.precision);
  // (A PPO critic keeps its own trunk on the CPU: it works next to a GPU actor, slowly.)
  m.actor = model::CausalLM::load(model_dir, tp_load);
  m.actor->set_recompute(cfg.recompute_activations);
  if (!cfg.ref_load.empty()) m.ref = model::CausalLM::load(cfg.ref_load, tp_load);
  if (tok.vocab_size() > m.actor->config().vocab_size)
    GYRE_THROW(invalid_argument,
               "tokenizer {} has {} tokens but the model's vocab_size is {}: they do not belong "
               "together",
               cfg.tokenizer_dir, tok.vocab_size(), m.actor->config().vocab_size);
  const int64_t steps_per_rollout =
      cfg.rollout_batch_size * cfg.n_samples_per_prompt / *cfg.global_batch_size;
  train::AdamWConfig& ac = m.adamw;
  ac.lr = cfg.lr, ac.min_lr = cfg.min_lr, ac.beta1 = cfg.adam_beta1, ac.beta2 = cfg.adam_beta2;
  ac.eps = cfg.adam_eps, ac.weight_decay = cfg.weight_decay, ac.clip_grad = cfg.clip_grad;
  train::LrSchedule& sched = m.schedule;
  sched.decay_style = cfg.lr_decay_style;
  sched.warmup_iters = cfg.lr_warmup_iters;
  sched.decay_iters = cfg.lr_decay_iters.value_or(cfg.total_rollouts * steps_per_rollout);
  m.optimizer = std::make_unique<train::AdamW>(ac, sched);
  if (tensor_parallel) {  // clip by the norm of the full gradient, not of this rank's shards
    // The actor outlives the optimizer (TrainModels' member order).
    model::CausalLM* actor = m.actor.get();
    m.optimizer->set_grad_sum_squares([actor](const train::NamedTensors& g) {
      std::vector<Tensor> v;
      for (const auto& [name, t] : g) v.push_back(t);
      return actor->grad_sum_squares(v);
    });
  }
  if (data_parallel) {
    m.dp_optimizer = std::make_unique<dist::DataParallelOptimizer>(
        distributed.dp_on(tp_load.device), ac, sched, dist::parse_dp_mode(cfg.dp_mode));
    // DP x TP: each replica is sharded; the clipping norm covers the full model (sharded tensors
    // summed over the tp group, replicated ones once) after the reduction over the dp group.
    if (tensor_parallel) {
      std::vector<bool> replicated;
      for (auto split : m.actor->tensor_parallel()->split)
        replicated.push_back(split == model::TpSplit::replicated);
      m.dp_optimizer->set_model_parallel(*distributed.groups.tp, std::move(replicated));
    }
  }
  return m;
}

void load_optimizer_state(TrainModels& models, const std::string& ckpt, const TrainConfig& cfg,
                          const TrainDistributed& distributed) {
  const bool tensor_parallel = distributed.tp_size() > 1;
  if (models.dp_optimizer && tensor_parallel && !fs::exists(dp_optimizer_dir(ckpt, distributed)))
    GYRE_THROW(not_found,
               "--load {}: {} not found: the checkpoint was not written with "
               "--tensor-model-parallel-size {} and {} data-parallel replicas (optimizer state "
               "is per (dp, tp) rank; resume with the sizes it was saved with)",
               cfg.load, dp_optimizer_dir(ckpt, distributed), distributed.tp_size(),
               distributed.dp_size());
  if (models.dp_optimizer)
    models.dp_optimizer->load(dp_optimizer_dir(ckpt, distributed));
  else if (tensor_parallel)
    models.optimizer->load(tp_optimizer_dir(ckpt, distributed));
  else
    models.optimizer->load(ckpt);
}

void save_optimizer_shards(TrainModels& models, const std::string& ckpt,
                           const TrainDistributed& distributed) {
  // DP: every rank's optimizer shard lands next to the checkpoint before rank 0 marks the
  // checkpoint as the latest, so a checkpoint that is named is complete.
  if (models.dp_optimizer) {
    models.dp_optimizer->save(dp_optimizer_dir(ckpt, distributed));
    distributed.world->barrier();
  }
  // TP: each rank's optimizer shard first (as with DP), then the model, which the ranks of
  // replica 0 gather inside CausalLM::save (rank 0 writes it, full, in save_checkpoint).
  if (distributed.tp_size() > 1 && !models.dp_optimizer) {
    models.optimizer->save(tp_optimizer_dir(ckpt, distributed));
    distributed.world->barrier();
  }
}

}  // namespace gyre::rl
