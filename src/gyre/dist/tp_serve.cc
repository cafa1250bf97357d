// Tensor-parallel serving: topology checks, the all-or-none weight reload and the follower loop
// (see tp_serve.h).
#include "gyre/dist/tp_serve.h"

#include <cstdlib>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/step_channel_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"

namespace gyre::dist {

namespace {

constexpr const char* kLoadWeights = "load_weights";

void check_divides(int64_t value, int64_t tp, const char* name, const std::string& flag,
                   const char* why) {
  if (value % tp == 0) return;
  GYRE_THROW(invalid_argument,
             "{} {}: the model's {} = {} does not divide by {} ({}); pick a TP size that divides "
             "it",
             flag, tp, name, value, tp, why);
}

}  // namespace

void check_tp_serve_topology(int64_t tp_size, const LaunchInfo& launch,
                             const model::ModelConfig& config, const std::string& flag) {
  if (tp_size < 1) GYRE_THROW(invalid_argument, "{} must be >= 1, got {}", flag, tp_size);
  if (tp_size > 1 && launch.launcher == "none")
    GYRE_THROW(invalid_argument,
               "{} {} runs one process per tp rank, but this process was not started by "
               "mpirun/srun: launch it as `mpirun -np {} gyre serve ... {} {}`",
               flag, tp_size, tp_size, flag, tp_size);
  if (launch.size != tp_size)
    GYRE_THROW(invalid_argument,
               "{} {} but {} started {} processes: every process is one tp rank of the one "
               "engine, so start `{} -np {}` (or pass {} {}); for several independent servers, "
               "start one `gyre serve` each behind `gyre router`",
               flag, tp_size, launch.launcher, launch.size, launch.launcher, tp_size, flag,
               launch.size);
  if (tp_size == 1) return;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    if (config.is_moe_layer(l))
      GYRE_THROW(unsupported,
                 "{} {}: tensor parallelism does not shard MoE layers yet (layer {} of this {} "
                 "model is MoE); serve it with {} 1",
                 flag, tp_size, l, model::arch_name(config.arch), flag);
  check_divides(config.num_attention_heads, tp_size, "num_attention_heads", flag,
                "each rank runs an equal share of the query heads");
  check_divides(config.num_key_value_heads, tp_size, "num_key_value_heads", flag,
                "each rank runs an equal share of the kv heads; kv-head replication is not "
                "supported");
  check_divides(config.intermediate_size, tp_size, "intermediate_size", flag,
                "gate/up/down are split along the intermediate dimension");
  check_divides(config.vocab_size, tp_size, "vocab_size", flag,
                "embedding and lm_head are split along the vocabulary, without padding");
}

void check_same_serve_settings(Comm& tp, const std::vector<ServeSetting>& mine) {
  // Rank 0's list as "name\nvalue\n" pairs; a newline inside a name or value (a strange
  // config.json string) is sent, and compared, as a space on every rank.
  auto one_line = [](std::string v) {
    for (char& c : v)
      if (c == '\n') c = ' ';
    return v;
  };
  std::vector<ServeSetting> own;
  for (const ServeSetting& s : mine) own.push_back({one_line(s.name), one_line(s.value)});
  std::string text;
  if (tp.rank() == 0)
    for (const ServeSetting& s : own) text += s.name + "\n" + s.value + "\n";
  tp.broadcast(text, 0);
  run_on_every_rank(
      tp, "the tensor-parallel start-up (same settings on every rank)",
      [&] {
        std::vector<ServeSetting> leader;
        size_t pos = 0;
        while (pos < text.size()) {
          const size_t a = text.find('\n', pos), b = text.find('\n', a + 1);
          if (a == std::string::npos || b == std::string::npos)
            GYRE_THROW(internal, "{}: malformed settings list from tp rank 0", tp.where());
          leader.push_back({text.substr(pos, a - pos), text.substr(a + 1, b - a - 1)});
          pos = b + 1;
        }
        if (leader.size() != own.size())
          GYRE_THROW(internal, "{}: tp rank 0 compares {} settings, this rank {} (mixed builds?)",
                     tp.where(), leader.size(), own.size());
        for (size_t i = 0; i < own.size(); ++i)
          if (leader[i].name != own[i].name || leader[i].value != own[i].value)
            GYRE_THROW(invalid_argument,
                       "{}: tp rank {} has {} {} where tp rank 0 has {} {}: every rank of `gyre "
                       "serve --tp-size {}` must take the same flags and the same model",
                       tp.where(), tp.rank(), own[i].name, own[i].value, leader[i].name,
                       leader[i].value, tp.size());
      },
      "tp");
}

TpServeGroup init_tp_serve_group(Device device, const LaunchInfo& launch) {
  const bool gpu = device == Device::cuda;
  if (!gpu && launch.launcher == "env")
    GYRE_THROW(unsupported,
               "rank {} of {} was started torchrun-style (RANK / WORLD_SIZE / MASTER_ADDR), which "
               "joins the tp ranks over NCCL, but the model runs on the CPU: serve with --device "
               "cuda (one GPU per rank), or start CPU tensor parallelism with `mpirun -np {} gyre "
               "serve ... --tp-size {}`",
               launch.rank, launch.size, launch.size, launch.size);
  if (gpu && !nccl_available())
    GYRE_THROW(unsupported,
               "--device cuda with tensor parallelism joins the GPUs over NCCL, but this gyre was "
               "built without NCCL (install the CUDA toolkit's NCCL and rebuild), or serve on one "
               "GPU with --tp-size 1");
  TpServeGroup g;
  g.world = init_distributed();  // binds this rank's local GPU (device 0) before any CUDA call
  // Every rank checks its own device, then the ranks agree: a rank that cannot serve (no GPU) or
  // that was started for another device (mpirun's MPMD form, `-np 1 gyre serve --device cpu :
  // -np 1 gyre serve --device cuda`) stops the whole group at once, instead of its peers serving
  // as if the group were whole until a request meets the communicator's timeout.
  run_on_every_rank(
      *g.world, "the tensor-parallel start-up (device check)",
      [&] {
        if (gpu && cuda_device_count() < 1) {
          const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
          GYRE_THROW(unsupported,
                     "{}: --device cuda but no GPU is visible to this rank (local rank {} of {}, "
                     "CUDA_VISIBLE_DEVICES={}): every tp rank needs a GPU of its own; start as "
                     "many ranks per host as it has GPUs, or serve on the CPU under mpirun",
                     g.world->where(), launch.local_rank, launch.local_size,
                     visible ? visible : "<unset>");
        }
      },
      "tp");
  std::vector<int64_t> on_gpu(size_t(g.world->size()), 0);
  on_gpu[size_t(g.world->rank())] = gpu ? 1 : 0;
  g.world->all_reduce(on_gpu);
  for (int r = 1; r < g.world->size(); ++r)
    if (on_gpu[size_t(r)] != on_gpu[0])
      GYRE_THROW(invalid_argument,
                 "{}: the tp ranks were started for different devices (tp rank 0 --device {}, tp "
                 "rank {} --device {}): every rank of `gyre serve --tp-size {}` takes the same "
                 "flags",
                 g.world->where(), on_gpu[0] ? "cuda" : "cpu", r,
                 on_gpu[size_t(r)] ? "cuda" : "cpu", g.world->size());
  if (gpu) {
    // A torchrun-style world is NCCL already; under MPI the GPU tp group is NCCL over its ranks
    // (the MPI world only bootstraps it).
    if (g.world->buffer_device() != Device::cuda)
      g.nccl = nccl_comm_from(*g.world, 0, comm_timeout_s(), "tp");
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    log::info("serve: tp rank {} of {} (local rank {}) on GPU {} over NCCL", g.tp().rank(),
              g.tp().size(), launch.local_rank, visible ? visible : "0");
  }
  g.tp_comm = make_tp_comm(g.tp());
  g.step_channel = make_step_channel(g.tp());
  return g;
}

std::optional<std::string> load_weights_in_lockstep(Comm& tp, model::CausalLM& shard,
                                                    const std::string& dir) {
  // A copy of this rank's shard, restored when another rank fails: load_weights() alone is atomic
  // per rank (it reads everything before it writes), not across ranks. The copy lives on the host
  // for a GPU shard too (device memory holds the shard, its bf16 copies and the KV cache already).
  // Every failure of this rank — the backup's allocation included — must reach first_failure
  // below, or the other ranks would wait in it until the communicator's timeout.
  std::vector<model::NamedTensor> params;
  std::vector<Tensor> backup;
  std::string error;
  bool loaded = false;
  try {
    params = shard.parameters();
    backup.reserve(params.size());
    for (const auto& p : params)
      backup.push_back(p.tensor.device() == Device::cpu ? p.tensor.clone()
                                                        : p.tensor.to(Device::cpu));
    shard.load_weights(dir);
    loaded = true;
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown error";
  }
  if (!loaded && error.empty()) error = "unknown error";
  const std::optional<std::string> failure =
      first_failure(tp, loaded ? std::nullopt : std::optional<std::string>(error), "tp");
  if (!failure) return std::nullopt;
  if (loaded)  // this rank loaded the new shard: put the old one back
    for (size_t i = 0; i < params.size(); ++i) params[i].tensor.copy_from(backup[i]);
  return failure;
}

TpServeLeader::TpServeLeader(Comm& tp, infer::Engine& engine, model::CausalLM& shard)
    : tp_(tp), engine_(engine), shard_(shard) {
  if (tp_.rank() != 0)
    GYRE_THROW(invalid_argument, "{}: the tensor-parallel serving leader is tp rank 0",
               tp_.where());
  if (!engine_.has_followers())
    GYRE_THROW(invalid_argument,
               "{}: the leader's engine has no followers attached (attach_followers() first)",
               tp_.where());
}

int64_t TpServeLeader::update_weights_from_disk(const std::string& dir) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopped_)
    GYRE_THROW(unsupported, "the tensor-parallel engine is stopping; weights cannot change now");
  // After this no step runs and no keep-alive is sent: the tp group is this thread's until
  // engage_followers().
  engine_.release_followers();
  std::string msg = std::string(kLoadWeights) + "\n" + dir;
  try {
    tp_.broadcast(msg, 0);
    // update_weights() runs the reload between steps on the engine thread and, on success, bumps
    // the weight version (the followers see it in the next plan's header and drop stale caches).
    // A failed reload throws out of it, so the version stays.
    const int64_t v = engine_.update_weights([&] {
      if (auto err = load_weights_in_lockstep(tp_, shard_, dir))
        GYRE_THROW(invalid_argument,
                   "update_weights_from_disk {}: {}; every tp rank kept its previous weights", dir,
                   *err);
    });
    engine_.engage_followers();
    return v;
  } catch (...) {
    // The followers returned to run() after the op (or failed with it, which the next step's
    // broadcast reports): engage them either way so steps can run again.
    engine_.engage_followers();
    throw;
  }
}

void TpServeLeader::stop() {
  std::lock_guard<std::mutex> lk(mu_);
  stopped_ = true;
  engine_.stop();
}

std::string run_tp_serve_follower(Comm& tp, infer::EngineFollower& follower,
                                  model::CausalLM& shard) {
  while (true) {
    const infer::EngineFollower::Outcome out = follower.run();
    if (out.exit == infer::EngineFollower::Exit::stopped) return out.message;
    // Released: exactly one control message follows (tp_serve.h).
    std::string msg;
    tp.broadcast(msg, 0);
    const size_t nl = msg.find('\n');
    const std::string op = msg.substr(0, nl);
    const std::string arg = nl == std::string::npos ? std::string() : msg.substr(nl + 1);
    if (op == kLoadWeights) {
      if (auto err = load_weights_in_lockstep(tp, shard, arg))
        log::warn("{}: weights not reloaded from {}: {}", tp.where(), arg, *err);
      else
        log::info("{}: reloaded this rank's shard from {}", tp.where(), arg);
    } else {
      GYRE_THROW(internal,
                 "{}: unknown tensor-parallel control message '{}' from the leader (the ranks run "
                 "different gyre builds?)",
                 tp.where(), op);
    }
  }
}

}  // namespace gyre::dist
