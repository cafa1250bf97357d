// `gyre train` across processes: the launcher's world (mpirun / srun, or one process), slime's
// topology flags checked against it, and data parallelism for the trainer.
//
// What runs where (documented in docs/distributed.md):
// - Every train rank holds a full replica of the policy; a DataParallelOptimizer (ZeRO-1 by
//   default, --dp-mode) reduces gradients and steps, so the replicas stay identical and DP=N trains
//   exactly like DP=1 on the same samples (the loss normaliser covers the whole step).
// - Rank 0 alone rolls out (its colocated engine or the remote engines), scores, and broadcasts the
//   scored samples to the other train ranks as JSON (floats round-trip exactly); every rank then
//   trains on its share. Rank 0 alone prints, writes metrics and saves the model and data state;
//   every rank saves its own optimizer shard.
// - Tensor parallelism (--tensor-model-parallel-size n): every rank holds its shard of the policy
//   (model/tensor_parallel.h). Replica 0's tp ranks roll out together with the sharded policy
//   itself: rank 0's colocated engine schedules, samples and broadcasts each step's plan, the other
//   tp ranks run it as infer::EngineFollowers (train_rollout.h, generation phases); rank 0 then
//   broadcasts the scored samples as with DP. Weight syncs are version bumps (shared shards).
//   With remote engines rank 0 alone rolls out (as with DP); each weight push sends the full
//   model (a folder, or NCCL buckets), gathered from replica 0's tp ranks
//   (push_weights_to_remote, remote_rollout.h).
// - DP x TP (world = dp x tp train ranks, Megatron's layout): tp groups of consecutive ranks
//   (rank = dp_rank * tp + tp_rank), dp groups of the ranks with the same tp_rank. Each replica is
//   a TP-sharded model trained on its dp share of every step (the tp ranks of a replica see the
//   same samples); the DataParallelOptimizer reduces every shard over its dp group and clips by the
//   full model's norm (set_model_parallel); optimizer shards live in
//   <ckpt>.dp_optimizer/tp_rank_R_of_N/dp_rank_D_of_M/; replica 0 gathers the full checkpoint.
// - GPUs (--device cuda): one GPU per rank (dist::bind_local_gpu); data parallelism reduces the
//   f32 master gradients over NCCL (dp_on); the tp groups are NCCL communicators too (the sharded
//   model's all-reduces and gathers run on the device).
// - Not supported yet, rejected with a message: TP with the PPO critic, rollout engines started as
//   ranks of the same job (use `gyre serve` + --rollout-external-engine-addrs).
#pragma once
#include <memory>
#include <vector>

#include "gyre/dist/bootstrap.h"
#include "gyre/dist/comm.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/rl/sample.h"

namespace gyre::rl {

struct TrainDistributed {
  std::unique_ptr<dist::Comm> world;
  dist::Topology topology;
  dist::ProcessGroups groups;
  double timeout_s = 600;
  std::unique_ptr<dist::Comm> dp_nccl;  // dp_on(cuda) over an MPI world: NCCL over the dp group
  bool main_rank() const { return world->rank() == 0; }
  int dp_size() const { return topology.dp_size; }
  int tp_size() const { return topology.tp_size; }
  dist::Comm& dp() { return groups.dp ? *groups.dp : *world; }
  // The dp group as a communicator of `device`'s buffers: dp() itself when it already moves them
  // (MPI for the CPU, NCCL under a torchrun-style launch), else — a GPU model under mpirun / srun —
  // an NCCL communicator over the same ranks, bootstrapped over dp() on first use (collective).
  // Errors: CPU tensors under a torchrun-style (NCCL-only) launch.
  dist::Comm& dp_on(Device device);
};

// Starts (or joins) the launcher's world and validates the topology flags against it. Errors:
// world size not a multiple of the TP size, world size != the flags' train ranks, TP with a
// critic, in-world engines.
TrainDistributed init_train_distributed(const TrainConfig& cfg);

// Rank `root`'s samples replace every other rank's (collective over `comm`).
void broadcast_samples(dist::Comm& comm, std::vector<Sample>& samples, int root = 0);

}  // namespace gyre::rl
