// The engine side of SGLang's NCCL weight update (reference/sglang-api.md §1.7, slime's
// UpdateWeightFromDistributed): `gyre serve --device cuda` joins a trainer's weight-update group
// (/init_weights_update_group) and receives named tensors by NCCL broadcast from group rank 0
// (/update_weights_from_distributed), loading them into its model in place.
//
// Protocol (what slime sends, what SGLang does):
// - init: {master_address, master_port, rank_offset, world_size, group_name, backend:"nccl"}. The
//   trainer is rank 0 and listens at master_address:master_port; this engine (one GPU) is rank
//   rank_offset. The NCCL id travels over dist/tcp_rendezvous (SGLang uses torch's TCP store for
//   the same step). Several groups may exist at once, keyed by name (slime: one per PP stage).
// - update: {names, dtypes, shapes, group_name, load_format}. The trainer broadcasts each tensor
//   in list order (one broadcast per tensor), or all of them as one uint8 buffer concatenated in
//   order (load_format "flattened_bucket"). Names are HF checkpoint names.
//
// Invariants: once the sizes are known every byte the trainer sends is received, even when the
// update is then refused (an unknown name, a wrong shape, float16), so the refusal answers the HTTP
// call with the reason and the group stays usable. What fails before that (no such group, an
// unknown dtype name, mismatched list lengths, out of memory) answers at once without receiving;
// the trainer's pusher aborts its broadcast on that answer (rl/weight_sync/nccl_push.h), which
// breaks the group for every member: the trainer reconnects. Nothing is written into the model
// unless every tensor of the update was accepted and received (all-or-none). The caller runs
// receive_and_load with the engine idle (EngineApi::update_weights). A group whose NCCL
// communicator failed or timed out stays broken: destroy and re-init it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gyre/dist/comm.h"
#include "gyre/model/causal_lm.h"

namespace gyre::dist {

// slime/torch dtype names on the wire: "bfloat16" | "float32" | "float16" (also with a "torch."
// prefix); any other name is an Error naming it.
DType parse_torch_dtype(const std::string& s);
const char* torch_dtype_name(DType d);

class WeightUpdateGroups {
 public:
  // `model` must outlive this object; its parameters are on the GPU this process uses.
  WeightUpdateGroups(model::CausalLM& model, double timeout_s);
  ~WeightUpdateGroups();

  // Joins group `group` as rank `rank` of `world_size` (blocks until the trainer, rank 0, and the
  // other engines arrived, or the timeout). Errors: a group of that name exists, backend other
  // than "nccl", rank outside [1, world_size), a CPU model, rendezvous / NCCL failures (named).
  void init(const std::string& master_address, int master_port, int rank, int world_size,
            const std::string& group, const std::string& backend);
  // Errors: no such group.
  void destroy(const std::string& group);
  bool has(const std::string& group) const;

  // Receives one update from group rank 0 and writes it into the model's parameters (converted to
  // their dtype). `shapes[i]` / `dtypes[i]` describe `names[i]`. Returns the number of tensors
  // loaded. Errors: at once, nothing received — unknown group, mismatched list lengths, an unknown
  // dtype name, a negative dimension; after draining the bytes — a name that is not a parameter of
  // this model, a shape that differs, float16.
  int64_t receive_and_load(const std::string& group, const std::vector<std::string>& names,
                           const std::vector<std::string>& dtypes,
                           const std::vector<std::vector<int64_t>>& shapes, bool flattened_bucket);

 private:
  model::CausalLM& model_;
  double timeout_s_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Comm>> groups_;
};

}  // namespace gyre::dist
