// Disk weight sync (slime's UpdateWeightFromDisk / SGLang's /update_weights_from_disk): the trainer
// writes a complete Hugging Face folder <root>/weight_v{N:06d} (config.json + model.safetensors +
// gyre_weight_version.json); the engine reloads it in place with CausalLM::load_weights.
//
// Invariants: a weight_v folder appears only complete (written under a hidden temporary name,
// then renamed), so an engine never reads half a checkpoint; the version inside the folder is the
// one in its name.
#pragma once
#include <cstdint>
#include <string>

#include "gyre/core/dtype.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/weight_sync/sync_stats.h"

namespace gyre::rl {

// "weight_v000007" / "delta_v000007.gyre-delta".
std::string weight_dir_name(int64_t version);
std::string delta_file_name(int64_t version);

// Trainer side: writes <root>/weight_v{N:06d} in `dtype` (f32 is bit-exact; bf16 halves the bytes).
// Replaces an existing folder of that version. Returns the path in `*path` when non-null.
SyncStats write_full_weights(const model::CausalLM& model, const std::string& root, int64_t version,
                             DType dtype = DType::f32, std::string* path = nullptr);

// Engine side: reloads `dir` (a weight_v folder) into `model`; returns its version. Errors: no
// gyre_weight_version.json, an architecture mismatch (from load_weights, naming the tensor).
SyncStats load_full_weights(model::CausalLM& model, const std::string& dir);

// The version recorded in a weight_v folder (not_found / invalid_argument Error naming the file).
int64_t read_weight_version(const std::string& dir);

}  // namespace gyre::rl
