// `gyre train` across processes (see distributed_run.h).
#include "gyre/rl/loop/distributed_run.h"

#include <nlohmann/json.hpp>
#include <string>

#include "gyre/core/error.h"
#include "gyre/dist/nccl_comm.h"

namespace gyre::rl {

TrainDistributed init_train_distributed(const TrainConfig& cfg) {
  TrainDistributed d;
  dist::DistributedOptions o;
  o.timeout_s = cfg.distributed_timeout_minutes * 60;
  d.world = dist::init_distributed(o);
  d.timeout_s = dist::comm_timeout_s(o.timeout_s);
  dist::TopologyFlags f;
  f.actor_num_nodes = cfg.actor_num_nodes;
  f.actor_num_gpus_per_node = cfg.actor_num_gpus_per_node;
  f.rollout_num_gpus = cfg.rollout_num_gpus;
  f.rollout_num_gpus_per_engine = cfg.rollout_num_gpus_per_engine;
  f.num_gpus_per_node = cfg.num_gpus_per_node;
  f.tensor_model_parallel_size = cfg.tensor_model_parallel_size;
  f.rollout_external_engine_addrs = cfg.rollout_external_engine_addrs;
  if (!cfg.sglang_router_ip.empty()) f.rollout_external_engine_addrs.push_back("router");
  const bool external = !f.rollout_external_engine_addrs.empty();
  // gyre train's in-process engine is colocated whether or not --colocate is given; only an
  // explicit --rollout-num-gpus > 0 without --colocate asks for engines as separate ranks.
  f.colocate = cfg.colocate || (!external && cfg.rollout_num_gpus < 0);
  // DP x TP: the train ranks form tp groups of consecutive ranks (rank = dp_rank * tp + tp_rank,
  // Megatron's order), so without in-world engines the world must divide into whole tp groups.
  const int64_t tp = cfg.tensor_model_parallel_size, world = d.world->size();
  const bool in_world_engines = !f.colocate && !external && cfg.rollout_num_gpus > 0;
  if (tp > 1 && !in_world_engines && world % tp != 0) {
    const int64_t below = world / tp * tp, above = below + tp;
    GYRE_THROW(
        invalid_argument,
        "world size {} is not a multiple of --tensor-model-parallel-size {}: the ranks "
        "form data-parallel replicas of {} tensor-parallel ranks each; start mpirun/srun "
        "with -np {} (and --actor-num-nodes x --actor-num-gpus-per-node equal to it)",
        world, tp, tp,
        below > 0 ? std::to_string(below) + " or " + std::to_string(above) : std::to_string(above));
  }
  d.topology = dist::resolve_topology(f, d.world->size());
  if (d.topology.tp_size > 1 && cfg.algo.advantage_estimator == AdvantageEstimator::ppo)
    GYRE_THROW(unsupported,
               "--advantage-estimator ppo: the critic runs on one process; tensor parallelism "
               "(--tensor-model-parallel-size {}) is for the actor only",
               d.topology.tp_size);
  if (d.topology.engines_in_world)
    GYRE_THROW(unsupported,
               "--rollout-num-gpus {} without --colocate asks for rollout engines as ranks of this "
               "job, which gyre train does not start yet; start them with `gyre serve` (behind "
               "`gyre router`) and pass --rollout-external-engine-addrs, or use --colocate",
               cfg.rollout_num_gpus);
  d.groups = dist::make_process_groups(*d.world, d.topology);
  return d;
}

dist::Comm& TrainDistributed::dp_on(Device device) {
  dist::Comm& host = dp();
  if (host.buffer_device() == device) return host;
  if (device != Device::cuda)
    GYRE_THROW(unsupported,
               "{}: this job's ranks talk NCCL (a torchrun-style launch: RANK / WORLD_SIZE / "
               "MASTER_ADDR), which moves GPU buffers; a --device {} model trains data-parallel "
               "under mpirun / srun",
               host.where(), device_name(device));
  if (!dp_nccl) dp_nccl = dist::nccl_comm_from(host, 0, timeout_s, "dp-nccl");
  return *dp_nccl;
}

void broadcast_samples(dist::Comm& comm, std::vector<Sample>& samples, int root) {
  if (comm.size() == 1) return;
  std::string wire;
  if (comm.rank() == root) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& s : samples) a.push_back(s.to_json());
    wire = a.dump();
  }
  comm.broadcast(wire, root);
  if (comm.rank() == root) return;
  const auto a = nlohmann::json::parse(wire);
  samples.clear();
  for (size_t i = 0; i < a.size(); ++i)
    samples.push_back(Sample::from_json(a[i], "broadcast sample " + std::to_string(i)));
}

}  // namespace gyre::rl
