// Launcher detection, world communicator, topology validation and process groups (bootstrap.h).
#include "gyre/dist/bootstrap.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "gyre/core/logging.h"
#include "gyre/dist/mpi_comm.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tcp_rendezvous.h"

namespace gyre::dist {

namespace {

// Parses an integer environment variable; nullopt-like -1 sentinel when unset.
bool env_int(const GetEnv& get, const char* name, int64_t* out) {
  const char* v = get(name);
  if (!v) return false;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0')
    GYRE_THROW(invalid_argument,
               "environment variable {}='{}' is not an integer; it is set by the launcher (mpirun "
               "/ srun) — unset it when running a single process",
               name, v);
  *out = x;
  return true;
}

void check_rank_size(const char* rank_var, int64_t rank, const char* size_var, int64_t size) {
  if (size < 1 || size > (int64_t(1) << 24))
    GYRE_THROW(invalid_argument, "environment variable {}={} must be a world size >= 1", size_var,
               size);
  if (rank < 0 || rank >= size)
    GYRE_THROW(invalid_argument, "environment variable {}={} is outside [0, {}={})", rank_var, rank,
               size_var, size);
}

}  // namespace

LaunchInfo detect_launch(const GetEnv& getenv_fn) {
  GetEnv get = getenv_fn ? getenv_fn : GetEnv([](const char* n) { return std::getenv(n); });
  LaunchInfo li;
  int64_t rank = 0, size = 0, lrank = 0, lsize = 0;
  if (env_int(get, "OMPI_COMM_WORLD_SIZE", &size)) {
    if (!env_int(get, "OMPI_COMM_WORLD_RANK", &rank))
      GYRE_THROW(invalid_argument,
                 "OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not: start the job "
                 "with mpirun, or unset OMPI_COMM_WORLD_SIZE");
    check_rank_size("OMPI_COMM_WORLD_RANK", rank, "OMPI_COMM_WORLD_SIZE", size);
    li.launcher = "mpirun";
    li.rank = int(rank), li.size = int(size);
    li.local_rank = env_int(get, "OMPI_COMM_WORLD_LOCAL_RANK", &lrank) ? int(lrank) : 0;
    li.local_size = env_int(get, "OMPI_COMM_WORLD_LOCAL_SIZE", &lsize) ? int(lsize) : 1;
    if (li.local_size < 1 || li.local_rank < 0 || li.local_rank >= li.local_size)
      GYRE_THROW(invalid_argument,
                 "OMPI_COMM_WORLD_LOCAL_RANK={} is outside [0, OMPI_COMM_WORLD_LOCAL_SIZE={})",
                 li.local_rank, li.local_size);
    return li;
  }
  if (env_int(get, "SLURM_NTASKS", &size) && env_int(get, "SLURM_PROCID", &rank) &&
      get("PMIX_RANK")) {
    // srun --mpi=pmix: SLURM_* describe the step; PMIX_RANK says MPI can bootstrap from PMIx.
    check_rank_size("SLURM_PROCID", rank, "SLURM_NTASKS", size);
    int64_t pmix = 0;
    env_int(get, "PMIX_RANK", &pmix);
    if (pmix != rank)
      GYRE_THROW(invalid_argument, "PMIX_RANK={} disagrees with SLURM_PROCID={}", pmix, rank);
    li.launcher = "srun";
    li.rank = int(rank), li.size = int(size);
    li.local_rank = env_int(get, "SLURM_LOCALID", &lrank) ? int(lrank) : 0;
    // SLURM_NTASKS_PER_NODE may be "2" or "2(x3)"; the leading count is what this node runs.
    const char* per = get("SLURM_NTASKS_PER_NODE");
    li.local_size = per ? std::max(1, std::atoi(per)) : 1;
    return li;
  }
  if (env_int(get, "WORLD_SIZE", &size)) {
    // torchrun-style launch (torchrun, a container runtime, or a shell loop): RANK / WORLD_SIZE /
    // LOCAL_RANK / LOCAL_WORLD_SIZE and rank 0's MASTER_ADDR:MASTER_PORT. No MPI: the ranks meet
    // over TCP at rank 0 and talk NCCL (init_distributed).
    if (!env_int(get, "RANK", &rank))
      GYRE_THROW(invalid_argument,
                 "WORLD_SIZE is set but RANK is not: a torchrun-style launch sets RANK, "
                 "WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process (or unset WORLD_SIZE "
                 "to run one process)");
    check_rank_size("RANK", rank, "WORLD_SIZE", size);
    li.launcher = "env";
    li.rank = int(rank), li.size = int(size);
    li.local_rank = env_int(get, "LOCAL_RANK", &lrank) ? int(lrank) : 0;
    li.local_size = env_int(get, "LOCAL_WORLD_SIZE", &lsize) ? int(lsize) : 1;
    if (li.local_size < 1 || li.local_rank < 0 || li.local_rank >= li.local_size)
      GYRE_THROW(invalid_argument, "LOCAL_RANK={} is outside [0, LOCAL_WORLD_SIZE={})",
                 li.local_rank, li.local_size);
    if (size > 1) {
      if (!get("MASTER_ADDR") || !*get("MASTER_ADDR"))
        GYRE_THROW(invalid_argument,
                   "WORLD_SIZE={} without MASTER_ADDR: set MASTER_ADDR (and MASTER_PORT) to rank "
                   "0's host and a free port on every rank",
                   size);
      int64_t port = 0;
      if (!env_int(get, "MASTER_PORT", &port) || port < 1 || port > 65535)
        GYRE_THROW(invalid_argument,
                   "MASTER_PORT must be set to a free TCP port (1..65535) on rank 0's host for a "
                   "torchrun-style launch of WORLD_SIZE={}",
                   size);
      li.master_addr = get("MASTER_ADDR");
      li.master_port = int(port);
    }
    return li;
  }
  if (get("SLURM_NTASKS") && !get("PMIX_RANK") && get("SLURM_STEP_ID")) {
    int64_t n = 0;
    env_int(get, "SLURM_NTASKS", &n);
    if (n > 1)
      GYRE_THROW(invalid_argument,
                 "started by srun with SLURM_NTASKS={} but without PMIx (PMIX_RANK unset): launch "
                 "with `srun --mpi=pmix ...` so the ranks can find each other",
                 n);
  }
  return li;
}

void bind_local_gpu(const LaunchInfo& li) {
  if (li.local_size <= 1) return;
  if (const char* b = std::getenv("GYRE_BIND_GPU"); b && std::string(b) == "0") return;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  std::vector<std::string> ids;
  if (visible) {
    std::string cur;
    for (const char* p = visible;; ++p) {
      if (*p == ',' || *p == '\0') {
        if (!cur.empty()) ids.push_back(cur);
        cur.clear();
        if (!*p) break;
      } else {
        cur.push_back(*p);
      }
    }
    // One id: the launcher (or the user) already bound this rank; fewer ids than local ranks:
    // ranks share GPUs by the user's choice. Either way, leave it.
    if (ids.size() < size_t(li.local_size)) return;
  }
  const std::string mine = visible ? ids[size_t(li.local_rank)] : std::to_string(li.local_rank);
  ::setenv("CUDA_VISIBLE_DEVICES", mine.c_str(), 1);
  log::debug("dist: local rank {} of {} uses GPU {} (CUDA_VISIBLE_DEVICES)", li.local_rank,
             li.local_size, mine);
}

double comm_timeout_s(double fallback) {
  if (const char* t = std::getenv("GYRE_COMM_TIMEOUT")) {
    char* end = nullptr;
    double v = std::strtod(t, &end);
    if (end == t || *end != '\0' || !(v > 0))
      GYRE_THROW(invalid_argument, "GYRE_COMM_TIMEOUT='{}' must be a number of seconds > 0", t);
    return v;
  }
  return fallback;
}

std::unique_ptr<Comm> init_distributed(const DistributedOptions& options) {
  const double timeout = comm_timeout_s(options.timeout_s);
  LaunchInfo li = detect_launch();
  bind_local_gpu(li);
  if (li.launcher == "env") {
    if (li.size == 1) return std::make_unique<SingleProcessComm>("world");
    if (!nccl_available() || cuda_device_count() < 1) {
      const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
      GYRE_THROW(unsupported,
                 "rank {} of {} (local rank {} of {}) was started torchrun-style (RANK / "
                 "WORLD_SIZE / MASTER_ADDR), which joins the ranks over NCCL, but {}: start CPU "
                 "runs with mpirun, or start at most one rank per GPU",
                 li.rank, li.size, li.local_rank, li.local_size,
                 !nccl_available() ? std::string("this gyre was built without NCCL")
                                   : fmt::format("no GPU is visible (CUDA_VISIBLE_DEVICES={})",
                                                 visible ? visible : "<unset>"));
    }
    RendezvousOptions ro;
    ro.host = li.master_addr, ro.port = li.master_port;
    ro.rank = li.rank, ro.world_size = li.size, ro.timeout_s = timeout;
    const std::string id =
        tcp_rendezvous_share(ro, li.rank == 0 ? nccl_unique_id() : std::string());
    // bind_local_gpu left this process one visible GPU (device 0) unless the user chose otherwise.
    auto world = nccl_comm_init(id, li.size, li.rank, 0, timeout, "world");
    log::debug("dist: {} via torchrun-style env over NCCL (timeout {} s)", world->where(), timeout);
    return world;
  }
  if (li.launcher == "none" || (li.size == 1 && !mpi_available()))
    return std::make_unique<SingleProcessComm>("world");
  if (!mpi_available())
    GYRE_THROW(unsupported,
               "started by {} as rank {} of {}, but this gyre was built without MPI; install "
               "libopenmpi-dev and rebuild",
               li.launcher, li.rank, li.size);
  auto world = mpi_world_comm(timeout);
  if (world->size() != li.size || world->rank() != li.rank)
    GYRE_THROW(invalid_argument,
               "MPI world is rank {} of {} but the {} environment says rank {} of {}: the MPI "
               "library and the launcher disagree (mixing OpenMPI and MPICH? use the mpirun of "
               "the MPI gyre links)",
               world->rank(), world->size(), li.launcher, li.rank, li.size);
  log::debug("dist: {} via {} (timeout {} s)", world->where(), li.launcher, timeout);
  return world;
}

Topology resolve_topology(const TopologyFlags& f, int world_size) {
  auto positive = [](const char* flag, int64_t v) {
    if (v < 1) GYRE_THROW(invalid_argument, "{} must be >= 1, got {}", flag, v);
  };
  positive("--actor-num-nodes", f.actor_num_nodes);
  positive("--actor-num-gpus-per-node", f.actor_num_gpus_per_node);
  positive("--rollout-num-gpus-per-engine", f.rollout_num_gpus_per_engine);
  positive("--num-gpus-per-node", f.num_gpus_per_node);
  positive("--tensor-model-parallel-size", f.tensor_model_parallel_size);
  if (world_size < 1) GYRE_THROW(invalid_argument, "world size must be >= 1, got {}", world_size);
  Topology t;
  t.world_size = world_size;
  t.colocate = f.colocate;
  t.train_ranks = int(f.actor_num_nodes * f.actor_num_gpus_per_node);
  t.tp_size = int(f.tensor_model_parallel_size);
  if (t.train_ranks % t.tp_size != 0)
    GYRE_THROW(invalid_argument,
               "--actor-num-nodes {} x --actor-num-gpus-per-node {} = {} train ranks is not a "
               "multiple of --tensor-model-parallel-size {}",
               f.actor_num_nodes, f.actor_num_gpus_per_node, t.train_ranks, t.tp_size);
  t.dp_size = t.train_ranks / t.tp_size;
  t.external_engines = !f.rollout_external_engine_addrs.empty();
  t.gpus_per_engine = int(f.rollout_num_gpus_per_engine);
  if (f.colocate && t.external_engines)
    GYRE_THROW(invalid_argument,
               "--colocate and --rollout-external-engine-addrs exclude each other: colocated "
               "engines live in the train processes");
  if (f.colocate) {
    t.rollout_gpus = f.rollout_num_gpus < 0 ? t.train_ranks : int(f.rollout_num_gpus);
    if (t.rollout_gpus == 0)
      GYRE_THROW(invalid_argument, "--colocate needs rollout GPUs; --rollout-num-gpus is 0");
    if (t.rollout_gpus > t.train_ranks)
      GYRE_THROW(invalid_argument,
                 "--colocate: --rollout-num-gpus {} exceeds the {} train ranks (--actor-num-nodes "
                 "{} x --actor-num-gpus-per-node {}) the engines share",
                 t.rollout_gpus, t.train_ranks, f.actor_num_nodes, f.actor_num_gpus_per_node);
  } else if (t.external_engines) {
    if (f.rollout_num_gpus > 0)
      GYRE_THROW(invalid_argument,
                 "--rollout-num-gpus {} with --rollout-external-engine-addrs ({} engines): the "
                 "external engines bring their own GPUs; drop --rollout-num-gpus",
                 f.rollout_num_gpus, f.rollout_external_engine_addrs.size());
    t.rollout_gpus = 0;
  } else {
    t.rollout_gpus = f.rollout_num_gpus < 0 ? 0 : int(f.rollout_num_gpus);
  }
  if (t.rollout_gpus % t.gpus_per_engine != 0)
    GYRE_THROW(invalid_argument,
               "--rollout-num-gpus {} is not a multiple of --rollout-num-gpus-per-engine {}",
               t.rollout_gpus, t.gpus_per_engine);
  if (t.gpus_per_engine > f.num_gpus_per_node && t.gpus_per_engine % f.num_gpus_per_node != 0)
    GYRE_THROW(invalid_argument,
               "--rollout-num-gpus-per-engine {} spans nodes but is not a multiple of "
               "--num-gpus-per-node {}",
               t.gpus_per_engine, f.num_gpus_per_node);
  t.num_engines = t.rollout_gpus / t.gpus_per_engine;
  t.engines_in_world = !f.colocate && t.rollout_gpus > 0;
  const int expected = t.train_ranks + (t.engines_in_world ? t.rollout_gpus : 0);
  if (world_size != expected) {
    if (t.engines_in_world)
      GYRE_THROW(invalid_argument,
                 "world size {} != {} train ranks (--actor-num-nodes {} x "
                 "--actor-num-gpus-per-node {}) + {} rollout ranks (--rollout-num-gpus) = {}: "
                 "start mpirun/srun with -np {}",
                 world_size, t.train_ranks, f.actor_num_nodes, f.actor_num_gpus_per_node,
                 t.rollout_gpus, expected, expected);
    GYRE_THROW(invalid_argument,
               "world size {} != --actor-num-nodes {} x --actor-num-gpus-per-node {} = {} train "
               "ranks ({}): start mpirun/srun with -np {}",
               world_size, f.actor_num_nodes, f.actor_num_gpus_per_node, t.train_ranks,
               f.colocate ? "colocated engines share them"
                          : "engines outside the job; --rollout-num-gpus 0",
               expected);
  }
  return t;
}

RankRole role_of(const Topology& t, int rank) {
  if (rank < 0 || rank >= t.world_size)
    GYRE_THROW(invalid_argument, "rank {} is outside the world [0, {})", rank, t.world_size);
  RankRole r;
  if (rank < t.train_ranks) {
    r.trainer = true;
    r.tp_rank = rank % t.tp_size;
    r.dp_rank = rank / t.tp_size;
    if (t.colocate && rank < t.rollout_gpus) {
      r.engine = true;
      r.engine_index = rank / t.gpus_per_engine;
      r.engine_rank = rank % t.gpus_per_engine;
    }
  } else {
    const int e = rank - t.train_ranks;
    r.engine = true;
    r.engine_index = e / t.gpus_per_engine;
    r.engine_rank = e % t.gpus_per_engine;
  }
  return r;
}

ProcessGroups make_process_groups(Comm& world, const Topology& t) {
  if (world.size() != t.world_size)
    GYRE_THROW(invalid_argument, "{}: topology was resolved for world size {}", world.where(),
               t.world_size);
  const RankRole me = role_of(t, world.rank());
  ProcessGroups g;
  // Every rank takes part in every split; non-members get a throwaway color and drop the result.
  auto dp = world.split(me.trainer ? me.tp_rank : t.tp_size, me.trainer ? me.dp_rank : 0, "dp");
  auto tp = world.split(me.trainer ? me.dp_rank : t.dp_size, me.trainer ? me.tp_rank : 0, "tp");
  const bool in_sync = t.engines_in_world && (world.rank() == 0 || !me.trainer);
  auto sync = world.split(in_sync ? 0 : 1, world.rank(), "sync");
  if (me.trainer) g.dp = std::move(dp), g.tp = std::move(tp);
  if (in_sync) g.sync = std::move(sync);
  return g;
}

}  // namespace gyre::dist
