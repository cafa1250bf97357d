// Launcher bootstrap and topology: which process is which rank, and which ranks train, roll out or
// both, from slime's resource flags.
//
// Processes are started by `mpirun` (OpenMPI: OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK /
// _LOCAL_SIZE), Slurm's `srun --mpi=pmix` (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
// SLURM_NTASKS_PER_NODE, plus PMIX_RANK) or torchrun-style (RANK / WORLD_SIZE / LOCAL_RANK /
// LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT; GPU ranks only, over NCCL); none means one process.
// The topology flags are checked against the world size before any work: every disagreement is an
// Error with the numbers.
//
// Rank layout (slime's placement, actor ranks first): ranks [0, train_ranks) train; in the
// disaggregated mode with in-world engines the next rollout_num_gpus ranks are rollout engines
// (rollout_num_gpus_per_engine consecutive ranks each). Within the train ranks tensor parallelism
// is innermost (Megatron): tp_rank = r % tp, dp_rank = r / tp.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gyre/dist/comm.h"

namespace gyre::dist {

struct LaunchInfo {
  std::string launcher = "none";  // "mpirun" | "srun" | "env" (torchrun-style) | "none"
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;
  std::string master_addr;  // "env" with size > 1: rank 0's MASTER_ADDR / MASTER_PORT
  int master_port = 0;
};

using GetEnv = std::function<const char*(const char*)>;

// Reads the launcher's environment (`getenv` is injectable for tests). Non-integer or inconsistent
// values (rank outside [0, size), size < 1) are an Error naming the variable.
LaunchInfo detect_launch(const GetEnv& getenv_fn = {});

struct DistributedOptions {
  // Seconds before a collective or transfer that cannot complete fails with an Error naming the
  // rank (GYRE_COMM_TIMEOUT overrides; slime's --distributed-timeout-minutes default is 10).
  double timeout_s = 600;
};

// Seconds a collective may take before it fails naming the rank: GYRE_COMM_TIMEOUT when set (an
// Error if it is not a number > 0), else `fallback`.
double comm_timeout_s(double fallback = 600);

// One GPU per process: with several ranks on this node, sets CUDA_VISIBLE_DEVICES to the
// local_rank-th GPU (the local_rank-th entry of an existing CUDA_VISIBLE_DEVICES list), so every
// thread of the process — the trainer's, the rollout engine's — uses its own GPU as device 0.
// Must run before the process's first CUDA call (init_distributed calls it first). Left alone:
// one local rank, a CUDA_VISIBLE_DEVICES with fewer entries than local ranks (a choice made by the
// launcher or the user), GYRE_BIND_GPU=0.
void bind_local_gpu(const LaunchInfo& li);

// The world communicator: MPI when started by mpirun / srun (MPI's world size and rank must match
// the launcher's variables); NCCL over this node's GPU when started torchrun-style (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: the ranks meet over TCP at MASTER_ADDR to share
// the NCCL id, dist/tcp_rendezvous.h; host buffers are staged through the GPU); else a
// SingleProcessComm. Errors: launched by mpirun but gyre built without MPI, mismatched sizes, a
// torchrun-style launch without NCCL or without a GPU.
std::unique_ptr<Comm> init_distributed(const DistributedOptions& options = {});

// slime's resource flags (reference/slime.md §1.1). On the CPU backend a "GPU" is one process.
struct TopologyFlags {
  int64_t actor_num_nodes = 1;          // --actor-num-nodes
  int64_t actor_num_gpus_per_node = 1;  // --actor-num-gpus-per-node (slime default 8)
  int64_t rollout_num_gpus = -1;        // --rollout-num-gpus; -1 = unset (colocate: actor total)
  int64_t rollout_num_gpus_per_engine = 1;  // --rollout-num-gpus-per-engine
  int64_t num_gpus_per_node = 8;            // --num-gpus-per-node
  int64_t tensor_model_parallel_size = 1;   // --tensor-model-parallel-size
  bool colocate = false;                    // --colocate
  // --rollout-external-engine-addrs: engines run outside this MPI job.
  std::vector<std::string> rollout_external_engine_addrs;
};

struct Topology {
  int world_size = 1;
  int train_ranks = 1;  // actor_num_nodes x actor_num_gpus_per_node
  int tp_size = 1, dp_size = 1;
  int rollout_gpus = 0;  // GPUs (processes) of rollout engines in total
  int gpus_per_engine = 1;
  int num_engines = 0;
  bool colocate = false;
  bool engines_in_world = false;  // disaggregated engines started as ranks of this job
  bool external_engines = false;  // engines outside the job (HTTP / --rollout-external-...)
};

// Validates the flags against the world size. Errors (invalid_argument) say which flags disagree
// and by how much, e.g. "world size 3 != actor_num_nodes 1 x actor_num_gpus_per_node 2 = 2 train
// ranks (colocated)".
Topology resolve_topology(const TopologyFlags& flags, int world_size);

struct RankRole {
  bool trainer = false;
  bool engine = false;
  int dp_rank = -1, tp_rank = -1;  // trainers
  int engine_index = -1;           // engines: which engine; engine_rank within it
  int engine_rank = -1;
};
RankRole role_of(const Topology& topo, int rank);

// The process groups of one rank (null where the rank is not a member). `sync` joins train rank 0
// and every in-world engine rank: the group of the broadcast weight sync (rank 0 of it is the
// trainer). Collective over `world`.
struct ProcessGroups {
  std::unique_ptr<Comm> dp, tp, sync;
};
ProcessGroups make_process_groups(Comm& world, const Topology& topo);

}  // namespace gyre::dist
