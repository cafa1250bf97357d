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
// Invariants: a bucket holds whole tensors in parameters() order (one larger than the bucket
// travels alone); with wire dtype f32 the engines' weights are bit-identical to the trainer's; an
// engine that refuses a bucket after reading its sizes (unknown name, shape) still drains it, so
// push() throws that engine's message and the group stays usable. An engine that refuses before
// joining (no such group, an unknown dtype, out of memory) answers at once; its reply aborts the
// trainer's wait (NcclComm::set_abort_check), the group is dropped and the next push() reconnects.
// Likewise connect() stops waiting for the rendezvous as soon as an engine answers "no" (a CPU
// server), so --update-weight-transport auto falls back to disk in seconds. A failed broadcast (an
// engine died) breaks the group the same way.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/dtype.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/weight_sync/sync_stats.h"

namespace gyre::dist {
class Comm;
}

namespace gyre::rl {

struct NcclPushOptions {
  std::vector<std::string> engine_urls;  // http://host:port of each engine (one GPU each)
  std::string master_address;            // this host as the engines reach it ("": 127.0.0.1)
  int master_port = 0;                   // 0: a free port picked at connect()
  std::string group_name = "gyre-pp_0";  // slime: "slime-pp_{pp_rank}"
  size_t bucket_bytes = size_t(512) << 20;
  DType wire_dtype = DType::bf16;  // bf16 (slime's default for bf16 training) | f32 (bit-exact)
  double timeout_s = 600;          // rendezvous, NCCL calls and each HTTP reply
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
  // Sends every parameter of `model` (on the GPU) labelled `version`; connects first if needed.
  // Returns the sync's stats (method "nccl"). Errors: an engine refused a bucket (after the
  // bytes were drained: the group stays up) or the group failed (it is dropped).
  SyncStats push(const model::CausalLM& model, int64_t version);
  // The same for an explicit list of named GPU tensors (tests send names an engine must refuse).
  SyncStats push_tensors(const std::vector<model::NamedTensor>& tensors, int64_t version);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gyre::rl
