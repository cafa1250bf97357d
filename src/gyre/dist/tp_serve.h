// Tensor-parallel serving (`mpirun -np N gyre serve --tp-size N`, SGLang's --tp-size): one rollout
// engine whose model is sharded over the N ranks of the launcher's world. Rank 0 runs the HTTP
// server and the leading infer::Engine (it schedules, samples and broadcasts every step's plan);
// ranks 1..N-1 run an infer::EngineFollower until rank 0 stops, then exit.
//
// Control between steps: to change something on every rank (today: the weights), the leader
// releases its followers (StepOp::release, engine.h), then broadcasts one control message over the
// tp group (Comm::broadcast of a string: "<op>\n<argument>"); every rank performs it in lockstep;
// the followers go back to EngineFollower::run() and the leader engages them again. Ops:
//   load_weights <dir>: every rank reloads its shard of the same HF folder (SGLang's
//   update_weights_from_disk). All or none: when any rank fails, every rank that succeeded
//   restores its previous shard, so the ranks never run shards of two different checkpoints.
//
// Invariants: control messages are only sent while the followers are released (the tp group's
// collectives then belong to the thread doing the control op, not to the engine's steps); the
// leader serialises control ops (one at a time) and refuses them after stop(). A failed collective
// (a dead peer: the communicator's timeout) is thrown, never swallowed: the group is out of
// lockstep for good.
//
// The topology checks and the follower loop are small and free of serve/ and rl/ details, so
// `gyre train` could build its followers the same way later.
#pragma once
#include <mutex>
#include <optional>
#include <string>

#include "gyre/dist/bootstrap.h"
#include "gyre/dist/comm.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/config.h"

namespace gyre::dist {

// Checks `tp_size` (flag `flag`, e.g. "--tp-size") against how the processes were launched and
// against the model before anything is loaded: one process per tp rank started by mpirun/srun
// (world size == tp_size), and head / kv head / intermediate / vocab sizes that divide by tp_size,
// no MoE layers. invalid_argument / unsupported naming the numbers and what to change. Every rank
// sees the same environment and config, so every rank fails the same way.
void check_tp_serve_topology(int64_t tp_size, const LaunchInfo& launch,
                             const model::ModelConfig& config, const std::string& flag);

// Every rank of `tp` reloads its shard of the HF folder `dir` (CausalLM::load_weights), all or
// none (see above). Collective over `tp`. Returns nullopt on success, else (on every rank) the
// error of the lowest failing rank, e.g. "tp rank 1 of 2: ... not found"; every rank then holds its
// previous weights. Communication failures are thrown.
std::optional<std::string> load_weights_in_lockstep(Comm& tp, model::CausalLM& shard,
                                                    const std::string& dir);

// Rank 0's side: the engine leading `tp` (attach_followers() done, followers engaged) over
// `shard`; all three must outlive this object.
class TpServeLeader {
 public:
  TpServeLeader(Comm& tp, infer::Engine& engine, model::CausalLM& shard);
  // update_weights_from_disk on every tp rank (blocking; one at a time): returns the new weight
  // version. A folder that fails to load on any rank throws invalid_argument with that rank's
  // reason, and no rank's weights change.
  int64_t update_weights_from_disk(const std::string& dir);
  // Stops the engine, which tells the followers to stop (they return from run_tp_serve_follower);
  // waits for a control op in progress first; later control ops throw.
  void stop();

 private:
  Comm& tp_;
  infer::Engine& engine_;
  model::CausalLM& shard_;
  std::mutex mu_;  // one control op at a time; guards stopped_
  bool stopped_ = false;
};

// Ranks 1..N-1: follows the leader's steps and control ops until the leader stops; returns its
// reason. Throws when the group loses lockstep (a failed collective, a malformed message).
std::string run_tp_serve_follower(Comm& tp, infer::EngineFollower& follower,
                                  model::CausalLM& shard);

}  // namespace gyre::dist
