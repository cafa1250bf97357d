// The trained side of `gyre train` (train_loop.cc): the actor (and reference) model, sharded under
// tensor parallelism, and its optimizer: AdamW on one rank or per tp shard, a
// dist::DataParallelOptimizer across data-parallel replicas; with where each rank's optimizer state
// lives next to a checkpoint, how a resumed run reads it back, and how a save writes it.
//
// Optimizer state per rank (--load needs the sizes the checkpoint was saved with):
//   one process:  <ckpt>/optimizer.*                      (written by save_checkpoint)
//   TP only:      <ckpt>.tp_optimizer/tp_rank_R_of_N/
//   DP only:      <ckpt>.dp_optimizer/dp_rank_D_of_M/    (the DP optimizer adds dp_rank_*)
//   DP x TP:      <ckpt>.dp_optimizer/tp_rank_R_of_N/dp_rank_D_of_M/
#pragma once
#include <memory>
#include <string>

#include "gyre/dist/data_parallel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/rl/loop/distributed_run.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/tokenizer/tokenizer.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {

struct TrainModels {
  std::shared_ptr<model::CausalLM> actor;  // shared with the colocated rollout engine
  std::unique_ptr<model::CausalLM> ref;    // --ref-load; null without a reference model
  train::AdamWConfig adamw;                // from the optimizer flags (the critic starts from it)
  train::LrSchedule schedule;
  // The actor's AdamW (the trainer's and save_checkpoint's); under DP the trainer steps through
  // dp_optimizer instead (ActorTrainerOptions::data_parallel).
  std::unique_ptr<train::AdamW> optimizer;
  std::unique_ptr<dist::DataParallelOptimizer> dp_optimizer;  // DP > 1
};

// Loads the actor from `model_dir` (and --ref-load), sharded over `tp_comm` when it is non-null,
// on --device with --precision, and builds the optimizers. Errors: a tokenizer larger than the
// model's vocabulary, --device cuda with more than one train rank.
TrainModels load_train_models(const TrainConfig& cfg, const std::string& model_dir,
                              TrainDistributed& distributed, model::TpComm* tp_comm,
                              const tokenizer::Tokenizer& tok);

// Restores this rank's optimizer state from checkpoint `ckpt` (--load; see the layout above).
// not_found names the folder when a DP x TP checkpoint was saved with other sizes.
void load_optimizer_state(TrainModels& models, const std::string& ckpt, const TrainConfig& cfg,
                          const TrainDistributed& distributed);

// Writes this rank's optimizer shard next to checkpoint `ckpt` under DP or TP, then waits for
// every rank (a barrier), so a checkpoint that rank 0 then names as the latest is complete. Does
// nothing in one process (save_checkpoint writes the optimizer).
void save_optimizer_shards(TrainModels& models, const std::string& ckpt,
                           const TrainDistributed& distributed);

}  // namespace gyre::rl
