// Tensor-parallel serving (`mpirun -np N gyre serve --tp-size N`, SGLang's --tp-size): one rollout
// engine whose model is sharded over the N ranks of the launcher's world. Rank 0 runs the HTTP
// server and the leading infer::Engine (it schedules, samples and broadcasts every step's plan);
// ranks 1..N-1 run an infer::EngineFollower until rank 0 stops, then exit.
//
// Devices: on the CPU the tp group is the MPI world. On GPUs (--device cuda) every rank uses its
// local GPU (dist::bind_local_gpu, from the launcher's local rank, as `gyre train` does) and the tp
// group is NCCL: the world itself under a torchrun-style launch, else an NCCL communicator
// bootstrapped over the MPI world. The model's collectives, the step plans and the control
// messages all go over that one group (init_tp_serve_group), so every rank issues them in one
// order.
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
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gyre/dist/bootstrap.h"
#include "gyre/dist/comm.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/infer/step_channel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/config.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::dist {

// Checks `tp_size` (flag `flag`, e.g. "--tp-size") against how the processes were launched and
// against the model before anything is loaded: one process per tp rank started by mpirun/srun
// (world size == tp_size), and head / kv head / intermediate / vocab sizes that divide by tp_size,
// no MoE layers. invalid_argument / unsupported naming the numbers and what to change. Every rank
// sees the same environment and config, so every rank fails the same way.
void check_tp_serve_topology(int64_t tp_size, const LaunchInfo& launch,
                             const model::ModelConfig& config, const std::string& flag);

// The communicators of one tensor-parallel serving rank. Destroyed in reverse order: the adapters
// before the communicators they use.
struct TpServeGroup {
  std::unique_ptr<Comm> world;  // the launcher's world (MPI, or NCCL under a torchrun-style launch)
  std::unique_ptr<Comm> nccl;   // --device cuda under mpirun / srun: NCCL over `world`'s ranks
  std::unique_ptr<model::TpComm> tp_comm;            // the model's collectives (LoadOptions::tp)
  std::unique_ptr<infer::StepChannel> step_channel;  // the leader's plans to its followers
  // The tp group: the one communicator everything above goes over (control messages too).
  Comm& tp() const { return nccl ? *nccl : *world; }
};

// Joins the launcher's world (dist::init_distributed, which first binds this rank to its local
// GPU) and builds the tp group for a model on `device` (see the header). Call before any CUDA call
// and before loading the model. Errors (unsupported, naming the fix): a torchrun-style launch with
// --device cpu (those ranks only talk NCCL), --device cuda in a build without NCCL, or no GPU
// visible to this rank — agreed over the world, so that the rank's peers stop with
// it (an io Error naming it) instead of serving on — and ranks started for different devices
// (mpirun's MPMD form), invalid_argument.
TpServeGroup init_tp_serve_group(Device device, const LaunchInfo& launch);

// One named setting of a tp serving rank: a flag as given ("--context-length") or a model config
// field ("config.json hidden_size"), with its value as text.
struct ServeSetting {
  std::string name, value;
};

// Collective over `tp` (before the engines exist): every rank compares its settings with tp rank
// 0's, in order, and the ranks agree (run_on_every_rank). Every rank of `gyre serve --tp-size N`
// must run the same engine geometry — the followers size their KV cache, CUDA graphs and context
// from their own flags and config, and a mismatch would surface only as a failed check inside a
// collective, mid-step. A rank that differs throws invalid_argument naming the first setting that
// differs and both values; the others an io Error naming that rank: all stop before serving.
void check_same_serve_settings(Comm& tp, const std::vector<ServeSetting>& mine);

// Every rank of `tp` reloads its shard of the HF folder `dir` (CausalLM::load_weights), all or
// none (see above). Collective over `tp`. Returns nullopt on success, else (on every rank) the
// error of the lowest failing rank, e.g. "tp rank 1 of 2: ... not found"; every rank then holds its
// previous weights. Communication failures are thrown. While it runs, each rank holds a host copy
// of its shard (the backup), also for a shard on the GPU: device memory stays what serving uses.
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
