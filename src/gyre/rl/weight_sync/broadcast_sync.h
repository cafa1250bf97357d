// Broadcast weight sync over a Comm (slime's UpdateWeightFromDistributed: metadata first, then the
// tensors broadcast in buckets of --update-weight-buffer-size from the trainer to every engine
// rank). On the CPU the Comm is MPI; the GPU path uses the same protocol over NCCL.
//
// Protocol (collective over `comm`, root = the trainer): 1) root broadcasts a JSON manifest
// {version, wire dtype, tensors: [{name, shape}], bucket bytes}; 2) every receiver checks it
// against its own model and the group agrees (all-reduce of a refusal flag) before any weight
// moves, so a mismatch fails on every rank with the receiver naming the tensor; 3) buckets of whole
// tensors (a tensor larger than a bucket travels alone) are packed in the wire dtype, broadcast and
// unpacked into the receivers' parameters in place.
//
// Invariants: with wire dtype f32 the receivers' weights are bit-identical to the root's; the
// caller keeps the receiving engine idle during the call (EngineApi::update_weights does).
#pragma once
#include <cstddef>
#include <cstdint>

#include "gyre/core/dtype.h"
#include "gyre/dist/comm.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/weight_sync/sync_stats.h"

namespace gyre::rl {

struct BroadcastSyncOptions {
  size_t bucket_bytes = size_t(512) << 20;  // slime --update-weight-buffer-size (512 MiB)
  DType wire_dtype = DType::f32;            // f32 (bit-exact) | bf16 | f16
  int root = 0;
};

// Collective. Root: sends `model` at `version`. Receivers: overwrite `model`'s parameters; the
// returned stats carry the received version. Errors: manifest mismatch (every rank throws),
// communication failures (Comm timeouts name the rank).
SyncStats broadcast_weights(dist::Comm& comm, model::CausalLM& model, int64_t version,
                            const BroadcastSyncOptions& options = {});

}  // namespace gyre::rl
