// Disaggregated rollout for `gyre train`: the engines are other processes (`gyre serve`, `gyre
// router`, or any SGLang-compatible server), reached over HTTP, and weights travel by disk or by
// SGLang's NCCL weight-update group (weight_sync/nccl_push.h).
//
// slime's equivalents: --rollout-external-engine-addrs (engines started outside the job) and
// --sglang-router-ip/--sglang-router-port (an already running router); slime's UpdateWeightFromDisk
// (/update_weights_from_disk with an HF folder) and UpdateWeightFromDistributed
// (--update-weight-transport nccl) are the two weight syncs.
//
// Invariants:
// - The trainer pushes its weights before the first rollout (slime calls update_weights() once at
//   start), so engines started from another checkpoint — or a resumed run — roll out with the
//   trainer's weights from rollout 0.
// - A weight folder is complete before any engine is told about it (write_full_weights renames it
//   into place), and older folders are deleted only after every engine acknowledged the new one,
//   so at most two versions are on disk.
// - With several addresses, generate() calls rotate over the engines and control calls (pause,
//   abort, flush, weight update) go to every engine; the weight version is the minimum over them.
// - Several train ranks (DP, TP, DP x TP): rank 0 alone talks to the engines, but every rank calls
//   push_weights_to_remote at the same point of the loop. Under TP the engines get the full model,
//   gathered from replica 0's tp ranks: the whole model inside CausalLM::save (disk), or tensor by
//   tensor in the NCCL push's buckets (NcclWeightPusher::push on rank 0, follow_weight_push on
//   the other tp ranks); the outcome — the engines' version or rank 0's error — reaches every
//   rank, so a failed push stops all of them.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gyre/infer/rollout_client.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/loop/distributed_run.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/rl/weight_sync/nccl_push.h"

namespace gyre::rl {

// The engine addresses the flags name (each "host:port" or "http://host:port"), empty when the
// rollout is colocated. Errors: a malformed address, --sglang-router-ip without a port.
std::vector<std::string> remote_engine_urls(const TrainConfig& cfg);

// One client for all the addresses (an HttpRolloutClient each; a fan-out client over several).
std::unique_ptr<infer::RolloutClient> make_remote_rollout_client(
    const std::vector<std::string>& urls);

// Disk weight sync to remote engines: writes <dir>/weight_v{N} and has every engine reload it.
class RemoteWeightPusher {
 public:
  // `dir` must be readable by the engines (same machine or a shared file system).
  RemoteWeightPusher(std::string dir, DType dtype);
  // Writes `model` as version `version`, tells the engines, deletes the previous folder; adds
  // perf/update_weights_* metrics to `m`. Returns the engines' weight version afterwards.
  int64_t push(const model::CausalLM& model, int64_t version, infer::RolloutClient& client,
               std::map<std::string, double>& m);
  // The steps of push() that can fail before the model's gathers start: creates the folder
  // (again, if something removed it) and, with NCCL, forms the group (use_nccl's `required`
  // false: a group that cannot be formed is given up for the disk, so transport() is final until
  // the next prepare()). Errors: io, naming the folder and --update-weight-dir; the group could
  // not be formed (required).
  void prepare();
  const std::string& dir() const { return dir_; }

  // Sends the weights over SGLang's NCCL weight-update group instead of the disk (trainer on a
  // GPU, engines `gyre serve --device cuda` / SGLang). `required` false (--update-weight-transport
  // auto): when the group cannot be formed at the first push (e.g. a CPU engine answers 400), log
  // why and keep the disk path; true: that is an error.
  void use_nccl(NcclPushOptions options, bool required);
  const char* transport() const { return nccl_ ? "nccl" : "disk"; }
  // The NCCL pusher's options (null on the disk path): what the other tp ranks plan with.
  const NcclPushOptions* nccl_options() const { return nccl_ ? &nccl_->options() : nullptr; }

 private:
  void create_dir() const;
  void settle_transport();  // connect, or fall back to the disk when not required
  std::string dir_;
  DType dtype_;
  std::string previous_;
  std::unique_ptr<NcclWeightPusher> nccl_;
  bool nccl_required_ = false;
};

// The --update-weight-transport the flags ask for: "nccl" or "disk" (auto: nccl when the trainer
// is on a GPU and the engines are listed by --rollout-external-engine-addrs, with or without
// tensor parallelism). Errors: nccl with a router (name the engines instead).
std::string resolve_weight_transport(const TrainConfig& cfg);
// The NCCL push options of `cfg` for these engines (master address: --update-weight-master-address,
// else 127.0.0.1 when every engine is on this host's loopback, else this host's name).
NcclPushOptions nccl_push_options(const TrainConfig& cfg, const std::vector<std::string>& urls);

// One weight push of `gyre train` to remote engines, collective over `d.world` (every rank calls
// it at the same point): rank 0 — the rank with `pusher` and `client`, and the only one — sends
// version `version` (NCCL buckets, or a folder the engines reload); under TP the other tp ranks of
// replica 0 take part in the gathers of the sharded actor while the other replicas only wait for
// the outcome. Those tp ranks hold no pusher and no client: rank 0 announces over the tp group
// whether and how it gathers (the transport it settled on and, for NCCL, the wire dtype and
// bucket size), and they run the matching gathers (CausalLM::save's, or follow_weight_push).
// Returns the engines' weight version on every rank. Errors: rank 0 rethrows its own error (the
// folder could not be written, the group could not be formed, an engine refused or did not
// answer); every other rank throws an io Error carrying it (or its own gather's error).
int64_t push_weights_to_remote(RemoteWeightPusher* pusher, infer::RolloutClient* client,
                               const model::CausalLM& actor, int64_t version, TrainDistributed& d,
                               std::map<std::string, double>& m);

}  // namespace gyre::rl
