// The trainer side of SGLang's NCCL weight update (reference/sglang-api.md §1.7-1.8; slime's
// UpdateWeightFromDistributed, `--update-weight-transport nccl`): push a GPU model's weights to
// remote engines (`gyre serve --device cuda` or SGLang servers) over an NCCL group that the
// trainer (rank 0) and the engines (ranks 1..n) form through HTTP.
//
// connect(): POST /destroy_weights_update_group to every engine (errors ignored, as slime does),
// then /init_weights_update_group {master_address, master_port, rank_offset = 1 + i, world_size =
// 1 + engines, group_name, backend "nccl"} to all engines at once while this process joins as rank
// 0 (it listens at master_port for the NCCL id rendezvous, dist/tcp_rendezvous.h).
// push(): the parameters in buckets of at most `bucket_bytes` (slime's
// --update-weight-buffer-size) packed on the GPU in the wire dtype; per bucket one
// /update_weights_from_distributed {names, dtypes, shapes, group_name, load_format
// "flattened_bucket", weight_version, flush_cache false} to every engine, then one NCCL broadcast
// of the bucket, then every reply is awaited. The caller pauses generation around it (gyre train
// does; slime: pause_generation -> flush_cache -> buckets -> continue_generation).
//
// Invariants: a bucket holds whole tensors in parameters() order, counted at their full
// (gathered) sizes (one larger than the bucket travels alone); with wire dtype f32 the engines'
// weights are bit-identical to the trainer's; an engine that refuses a bucket after reading its
// sizes (unknown name, shape) still drains it, so push() throws that engine's message and the group
// stays usable. An engine that refuses before joining (no such group, an unknown dtype, out of
// memory) answers at once; its reply aborts the trainer's wait (NcclComm::set_abort_check), the
// group is dropped and the next push() reconnects. Likewise connect() stops waiting for the
// rendezvous as soon as an engine answers "no" (a CPU server), so --update-weight-transport auto
// falls back to disk in seconds. A failed broadcast (an engine died) breaks the group the same way.
//
// A tensor-parallel model (slime's UpdateWeightFromDistributed under Megatron TP): its parameters
// are this rank's shards, and the engines get full tensors. The bucket plan (plan_weight_push) is
// made from the FULL shapes, and push() walks it with gather_weight_buckets: every sharded
// parameter is all-gathered over the model's tp group on the GPU (model::tp_gather_vocab on the
// shard viewed as column blocks: bitwise what CausalLM::gather_full / save() assemble), one
// parameter at a time in parameters() order, then packed. Every other tp rank of the pushing
// replica runs follow_weight_push at the same time: the same plan, the same gathers in the same
// order, results dropped (it has no engines and no group). Once the gathers started, rank 0 joins
// every one of them even after a failure (an engine refused a bucket, the group broke): it stops
// sending, gathers to the end, then throws, so its peers never wait in a gather it skipped; the
// caller reports the failure to them afterwards (rl/loop/remote_rollout.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/dtype.h"
#include "gyre/core/tensor.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/weight_sync/sync_stats.h"

namespace gyre::dist {
class Comm;
}

namespace gyre::rl {

// One bucket of a push: tensors [first, last) of the plan, `bytes` on the wire.
struct WeightBucket {
  size_t first = 0, last = 0;
  size_t bytes = 0;
};

// What one push sends, in order: names and FULL shapes (gathered under TP) in parameters() order,
// cut into buckets of whole tensors of at most `bucket_bytes` in the wire dtype (a bucket closes
// before the tensor that would overflow it; a larger tensor travels alone).
struct WeightPushPlan {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::vector<WeightBucket> buckets;
  size_t max_bucket_bytes = 0;
  uint64_t wire_bytes = 0;  // sum over the buckets
};
// Pure: the plan of these tensors. Errors: names and shapes of different lengths, bucket_bytes 0.
WeightPushPlan plan_weight_push(std::vector<std::string> names, std::vector<Shape> full_shapes,
                                DType wire, size_t bucket_bytes);
// The plan of `model`'s parameters; under TP the full shapes follow from the layout's splits (rows
// or columns times the tp size). No communication.
WeightPushPlan plan_weight_push(const model::CausalLM& model, DType wire, size_t bucket_bytes);

// Walks `plan` (made from `model`) bucket by bucket: take(k, full tensor k) for each tensor of the
// bucket in order, then done(bucket). Under TP each sharded parameter's full tensor comes from an
// all-gather over the model's tp group (on the GPU when that group moves device buffers, else
// staged through the host), so every tp rank must call this with the same plan at the same point;
// replicated parameters (and every parameter without TP) are passed as they are. Errors thrown by
// `take` or `done` propagate and leave the peers in a later gather: callers on a tp group catch
// them inside (as NcclWeightPusher::push does).
void gather_weight_buckets(const model::CausalLM& model, const WeightPushPlan& plan,
                           const std::function<void(size_t, const Tensor&)>& take,
                           const std::function<void(const WeightBucket&)>& done);

// What tp ranks 1.. of the pushing replica run while tp rank 0 pushes `model` with this wire dtype
// and bucket size: the plan and gathers of its push, results dropped. Collective over the tp group.
void follow_weight_push(const model::CausalLM& model, DType wire, size_t bucket_bytes);

struct NcclPushOptions {
  std::vector<std::string> engine_urls;  // http://host:port of each engine (one GPU each)
  std::string master_address;            // this host as the engines reach it ("": 127.0.0.1)
  int master_port = 0;                   // 0: a free port picked at connect()
  std::string group_name = "gyre-pp_0";  // slime: "slime-pp_{pp_rank}"
  size_t bucket_bytes = size_t(512) << 20;
  DType wire_dtype = DType::bf16;  // bf16 (slime's default for bf16 training) | f32 (bit-exact)
  double timeout_s = 600;          // rendezvous, NCCL calls and each HTTP reply
  // Bounds the whole of connect() — the destroy calls, the init calls, the rendezvous and NCCL's
  // init — when > 0 (else timeout_s each). gyre train sets it to half the communicators' timeout:
  // under tensor parallelism the other tp ranks wait in a broadcast while rank 0 connects, and
  // must hear rank 0's verdict (NCCL, or the disk under `auto`) before their own timeout.
  double connect_timeout_s = 0;
};

class NcclWeightPusher {
 public:
  explicit NcclWeightPusher(NcclPushOptions options);
  ~NcclWeightPusher();
  NcclWeightPusher(const NcclWeightPusher&) = delete;
  NcclWeightPusher& operator=(const NcclWeightPusher&) = delete;

  // Forms the group (see above). Errors: an engine refused or did not answer (its URL and
  // message), the rendezvous or NCCL init failed or timed out.
  void connect();
  bool connected() const;
  const NcclPushOptions& options() const;
  // Sends every parameter of `model` (on the GPU) labelled `version`; connects first if needed.
  // Returns the sync's stats (method "nccl"; bytes of the full tensors). Errors: an engine refused
  // a bucket (after the bytes were drained: the group stays up) or the group failed (it is
  // dropped). Under TP collective over the model's tp group: tp rank 0 calls this while the other
  // tp ranks call follow_weight_push(model, options().wire_dtype, options().bucket_bytes); a
  // failure is thrown only after every gather (see the header comment).
  SyncStats push(const model::CausalLM& model, int64_t version);
  // The same for an explicit list of named GPU tensors (tests send names an engine must refuse).
  SyncStats push_tensors(const std::vector<model::NamedTensor>& tensors, int64_t version);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gyre::rl
