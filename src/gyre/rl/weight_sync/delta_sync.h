// Delta weight sync (slime's UpdateWeightFromDiskDelta, "xor" encoding): only what changed since
// the version the engine holds travels. The trainer keeps a snapshot of the engine's weights (the
// base); per tensor it xors the new f32 bytes with the base, splits the xor into byte planes (the
// sign / exponent / high-mantissa planes of a small update are almost all zero), compresses with
// zstd level 1 and records an xxh3-128 checksum of the NEW bytes. Unchanged tensors are left out.
//
// File <root>/delta_v{N:06d}.gyre-delta: "GYREDLT1", u64 little-endian header length, a JSON header
// {format, version, base_version, encoding, tensors: [{name, dtype, shape, offset, length,
// raw_bytes, xxh3_128, payload_xxh3}]}, then the compressed payloads (offsets from the payload
// start).
//
// Invariants of apply_delta: a delta applies only to the version it was encoded against (else
// DeltaBaseMismatch, and the caller falls back to a full sync); it is atomic — every payload is
// decompressed, xor-ed and checked against its checksum into staging buffers before any weight is
// written, so a corrupt or wrong-base file leaves the engine untouched.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/rl/weight_sync/sync_stats.h"

namespace gyre::rl {

// The engine holds another version than the delta's base: refuse, then sync in full.
class DeltaBaseMismatch : public Error {
 public:
  DeltaBaseMismatch(const std::string& msg, int64_t base, int64_t engine)
      : Error(ErrorKind::invalid_argument, msg), base_version(base), engine_version(engine) {}
  int64_t base_version, engine_version;
};

class DeltaEncoder {
 public:
  // The engine now holds `model`'s weights at `version` (after a full sync): snapshot them.
  void set_base(const model::CausalLM& model, int64_t version);
  bool has_base() const { return base_version_ >= 0; }
  int64_t base_version() const { return base_version_; }
  // Writes <root>/delta_v{N:06d}.gyre-delta for `model` at `version` against the base (Error if
  // there is none, or the parameter list differs from the snapshot's). The snapshot then becomes
  // `version` (the caller must re-base with set_base if the engine refuses the delta).
  SyncStats write(const model::CausalLM& model, const std::string& root, int64_t version,
                  std::string* path = nullptr, int zstd_level = 1);

 private:
  int64_t base_version_ = -1;
  std::vector<std::pair<std::string, std::vector<char>>> snapshot_;  // parameters() order
};

struct DeltaTensor {
  std::string name;
  Shape shape;
  uint64_t offset = 0, length = 0, raw_bytes = 0;
  std::string xxh3_128;      // 32 hex digits, of the new tensor bytes
  std::string payload_xxh3;  // 16 hex digits, of the compressed payload
};
struct DeltaHeader {
  int64_t version = 0, base_version = 0;
  std::vector<DeltaTensor> tensors;
  uint64_t payload_offset = 0;  // file offset of the payload section
};
// Parses and validates the header and payload bounds of a delta file held in `bytes` (from
// `file`, for messages). Errors name the file, the field or tensor, and the problem.
DeltaHeader parse_delta_header(const std::string& bytes, const std::string& file);

// Engine side: applies the delta file at `path` to `model`, which holds `current_version`.
// Throws DeltaBaseMismatch when the base differs; any other problem (unknown tensor, shape,
// truncated payload, checksum) is an Error naming the tensor, with the weights untouched.
SyncStats apply_delta(model::CausalLM& model, const std::string& path, int64_t current_version);

// Engine side, either kind: a weight_v folder (full reload) or a .gyre-delta file.
SyncStats receive_weights(model::CausalLM& model, const std::string& path, int64_t current_version);

enum class DiskSyncMode { full, delta };

// Trainer side of disk sync (--update-weight-transport disk, --update-weight-mode full|delta):
// the first sync is full; later ones are deltas in delta mode. `apply(path)` makes the engine(s)
// load `path` (receive_weights in process, /update_weights_from_disk remotely); if it throws
// DeltaBaseMismatch the sync is redone in full. Old files are removed unless keep_files.
class DiskWeightSync {
 public:
  DiskWeightSync(std::string root, DiskSyncMode mode, bool keep_files = false);
  SyncStats sync(const model::CausalLM& model, int64_t version,
                 const std::function<void(const std::string& path)>& apply);
  DeltaEncoder& encoder() { return encoder_; }

 private:
  SyncStats full(const model::CausalLM& model, int64_t version,
                 const std::function<void(const std::string&)>& apply);
  void published(const std::string& path);

  std::string root_;
  DiskSyncMode mode_;
  bool keep_files_;
  DeltaEncoder encoder_;
  std::string last_path_;
};

}  // namespace gyre::rl
