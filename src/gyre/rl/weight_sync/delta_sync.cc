// Delta weight sync: encoder, file format, atomic apply, and the disk-sync driver (delta_sync.h).
#include "gyre/rl/weight_sync/delta_sync.h"

#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gyre/core/logging.h"
#include "gyre/core/thread_pool.h"
#include "gyre/core/timer.h"
#include "gyre/rl/weight_sync/disk_sync.h"

namespace gyre::rl {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'G', 'Y', 'R', 'E', 'D', 'L', 'T', '1'};
constexpr const char* kEncoding = "xor+byteplanes4+zstd";

std::string hex128(const void* data, size_t n) {
  XXH128_hash_t h = XXH3_128bits(data, n);
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}
std::string hex64(const void* data, size_t n) {
  return fmt::format("{:016x}", XXH3_64bits(data, n));
}

// Byte planes of 4-byte elements: out[b * n + i] = in[4 * i + b].
void to_planes(const char* in, char* out, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (size_t b = 0; b < 4; ++b) out[b * n + i] = in[4 * i + b];
}
void from_planes(const char* in, char* out, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (size_t b = 0; b < 4; ++b) out[4 * i + b] = in[b * n + i];
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) GYRE_THROW(not_found, "delta file {} not found or unreadable", path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

uint64_t raw_bytes_of(const model::CausalLM& m) {
  return uint64_t(m.num_parameters()) * sizeof(float);
}

}  // namespace

// ---- encoder

void DeltaEncoder::set_base(const model::CausalLM& model, int64_t version) {
  if (version < 0)
    GYRE_THROW(invalid_argument, "delta sync: base version must be >= 0, got {}", version);
  snapshot_.clear();
  for (auto& p : model.parameters()) {
    const char* b = static_cast<const char*>(p.tensor.raw());
    snapshot_.emplace_back(p.name, std::vector<char>(b, b + p.tensor.nbytes()));
  }
  base_version_ = version;
}

SyncStats DeltaEncoder::write(const model::CausalLM& model, const std::string& root,
                              int64_t version, std::string* path, int zstd_level) {
  if (!has_base())
    GYRE_THROW(invalid_argument,
               "delta sync: no base snapshot — the engine's weights are unknown; do a full sync "
               "first (DiskWeightSync does)");
  if (version <= base_version_)
    GYRE_THROW(invalid_argument, "delta sync: version {} must be newer than the base v{}", version,
               base_version_);
  Timer timer;
  auto params = model.parameters();
  if (params.size() != snapshot_.size())
    GYRE_THROW(invalid_argument, "delta sync: the model has {} tensors but the base snapshot {}",
               params.size(), snapshot_.size());
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].name != snapshot_[i].first ||
        params[i].tensor.nbytes() != snapshot_[i].second.size() ||
        params[i].tensor.dtype() != DType::f32)
      GYRE_THROW(invalid_argument,
                 "delta sync: tensor {} '{}' does not match the base snapshot's '{}' (name, f32 "
                 "dtype and size must agree); re-base with a full sync",
                 i, params[i].name, snapshot_[i].first);

  // Per tensor, in parallel: skip unchanged, else xor -> byte planes -> zstd.
  struct Enc {
    bool changed = false;
    std::string payload, xxh_new, xxh_payload;
  };
  std::vector<Enc> enc(params.size());
  parallel_for(int64_t(params.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<char> x, planes;
    for (int64_t i = b; i < e; ++i) {
      const Tensor& t = params[size_t(i)].tensor;
      const char* now = static_cast<const char*>(t.raw());
      const std::vector<char>& base = snapshot_[size_t(i)].second;
      const size_t nb = base.size();
      if (std::memcmp(now, base.data(), nb) == 0) continue;
      x.resize(nb);
      planes.resize(nb);
      for (size_t k = 0; k < nb; ++k) x[k] = char(now[k] ^ base[k]);
      to_planes(x.data(), planes.data(), nb / 4);
      Enc& o = enc[size_t(i)];
      o.payload.resize(ZSTD_compressBound(nb));
      size_t z = ZSTD_compress(o.payload.data(), o.payload.size(), planes.data(), nb, zstd_level);
      if (ZSTD_isError(z))
        GYRE_THROW(internal, "delta sync: zstd failed on '{}': {}", params[size_t(i)].name,
                   ZSTD_getErrorName(z));
      o.payload.resize(z);
      o.changed = true;
      o.xxh_new = hex128(now, nb);
      o.xxh_payload = hex64(o.payload.data(), z);
    }
  });

  nlohmann::json tensors = nlohmann::json::array();
  uint64_t offset = 0;
  int64_t changed = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!enc[i].changed) continue;
    ++changed;
    tensors.push_back({{"name", params[i].name},
                       {"dtype", "F32"},
                       {"shape", params[i].tensor.shape()},
                       {"offset", offset},
                       {"length", enc[i].payload.size()},
                       {"raw_bytes", params[i].tensor.nbytes()},
                       {"xxh3_128", enc[i].xxh_new},
                       {"payload_xxh3", enc[i].xxh_payload}});
    offset += enc[i].payload.size();
  }
  const std::string header = nlohmann::json({{"format", "gyre-delta-1"},
                                             {"version", version},
                                             {"base_version", base_version_},
                                             {"encoding", kEncoding},
                                             {"zstd_level", zstd_level},
                                             {"tensors", tensors}})
                                 .dump();
  std::error_code ec;
  fs::create_directories(root, ec);
  const std::string final_path = (fs::path(root) / delta_file_name(version)).string();
  const std::string tmp = final_path + fmt::format(".tmp{}", getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) GYRE_THROW(io, "delta sync: cannot write {} (check --update-weight-disk-dir)", tmp);
    uint64_t hl = header.size();
    f.write(kMagic, 8);
    f.write(reinterpret_cast<const char*>(&hl), 8);  // little-endian hosts only (x86-64, arm64)
    f.write(header.data(), std::streamsize(header.size()));
    for (auto& e : enc)
      if (e.changed) f.write(e.payload.data(), std::streamsize(e.payload.size()));
    if (!f) GYRE_THROW(io, "delta sync: short write to {} (disk full?)", tmp);
  }
  fs::rename(tmp, final_path, ec);
  if (ec) GYRE_THROW(io, "delta sync: cannot rename {} to {}: {}", tmp, final_path, ec.message());
  if (path) *path = final_path;

  SyncStats s;
  s.method = "delta";
  s.version = version;
  s.base_version = base_version_;
  s.bytes = fs::file_size(final_path);
  s.raw_bytes = raw_bytes_of(model);
  s.tensors = int64_t(params.size());
  s.changed_tensors = changed;
  // The snapshot follows the engine: it will hold `version` once it applies this file.
  for (size_t i = 0; i < params.size(); ++i)
    if (enc[i].changed)
      std::memcpy(snapshot_[i].second.data(), params[i].tensor.raw(), snapshot_[i].second.size());
  base_version_ = version;
  s.seconds = timer.elapsed();
  log_sync(s);
  return s;
}

// ---- file format

DeltaHeader parse_delta_header(const std::string& bytes, const std::string& file) {
  if (bytes.size() < 16 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    GYRE_THROW(invalid_argument,
               "delta file {}: not a gyre delta (missing the GYREDLT1 magic; {} bytes) — was it "
               "written by DeltaEncoder, and completely?",
               file, bytes.size());
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data() + 8, 8);
  if (hl > bytes.size() - 16)
    GYRE_THROW(invalid_argument,
               "delta file {}: header length {} runs past the end of the {}-byte file (truncated)",
               file, hl, bytes.size());
  DeltaHeader h;
  h.payload_offset = 16 + hl;
  const uint64_t payload_size = bytes.size() - h.payload_offset;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(bytes.begin() + 16, bytes.begin() + 16 + std::ptrdiff_t(hl));
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "delta file {}: header is not valid JSON: {}", file, e.what());
  }
  std::string field = "format";
  try {
    if (j.at("format").get<std::string>() != "gyre-delta-1")
      GYRE_THROW(unsupported, "delta file {}: format '{}' is not gyre-delta-1", file,
                 j.at("format").get<std::string>());
    field = "encoding";
    if (j.at("encoding").get<std::string>() != kEncoding)
      GYRE_THROW(unsupported, "delta file {}: encoding '{}' is not {}", file,
                 j.at("encoding").get<std::string>(), kEncoding);
    field = "version";
    h.version = j.at("version").get<int64_t>();
    field = "base_version";
    h.base_version = j.at("base_version").get<int64_t>();
    if (h.base_version < 0 || h.version <= h.base_version)
      GYRE_THROW(invalid_argument, "delta file {}: version {} must be newer than base_version {}",
                 file, h.version, h.base_version);
    for (auto& t : j.at("tensors")) {
      DeltaTensor d;
      field = "tensors[].name";
      d.name = t.at("name").get<std::string>();
      field = "tensors['" + d.name + "']";
      if (t.at("dtype").get<std::string>() != "F32")
        GYRE_THROW(unsupported, "delta file {}: tensor '{}' has dtype {}; deltas are F32", file,
                   d.name, t.at("dtype").get<std::string>());
      d.shape = t.at("shape").get<Shape>();
      d.offset = t.at("offset").get<uint64_t>();
      d.length = t.at("length").get<uint64_t>();
      d.raw_bytes = t.at("raw_bytes").get<uint64_t>();
      d.xxh3_128 = t.at("xxh3_128").get<std::string>();
      d.payload_xxh3 = t.at("payload_xxh3").get<std::string>();
      int64_t numel = 1;
      for (int64_t x : d.shape) {
        if (x < 0 || (x > 0 && numel > (int64_t(1) << 40) / x))
          GYRE_THROW(invalid_argument, "delta file {}: tensor '{}' has invalid shape {}", file,
                     d.name, shape_str(d.shape));
        numel *= x;
      }
      if (d.raw_bytes != uint64_t(numel) * 4)
        GYRE_THROW(invalid_argument,
                   "delta file {}: tensor '{}': raw_bytes {} != 4 x numel of shape {}", file,
                   d.name, d.raw_bytes, shape_str(d.shape));
      if (d.offset > payload_size || d.length > payload_size - d.offset)
        GYRE_THROW(invalid_argument,
                   "delta file {}: tensor '{}': payload [{}, {}) runs past the {}-byte payload "
                   "section (truncated file)",
                   file, d.name, d.offset, d.offset + d.length, payload_size);
      h.tensors.push_back(std::move(d));
    }
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "delta file {}: header field {}: {}", file, field, e.what());
  }
  return h;
}

// ---- apply

SyncStats apply_delta(model::CausalLM& model, const std::string& path, int64_t current_version) {
  Timer timer;
  const std::string bytes = read_all(path);
  const DeltaHeader h = parse_delta_header(bytes, path);
  if (h.base_version != current_version)
    throw DeltaBaseMismatch(
        fmt::format("delta file {} (v{}) was encoded against weight version {} but this engine "
                    "holds version {}: refused; a full sync is needed",
                    path, h.version, h.base_version, current_version),
        h.base_version, current_version);
  auto params = model.parameters();
  std::vector<int> slot(h.tensors.size(), -1);
  for (size_t k = 0; k < h.tensors.size(); ++k) {
    const DeltaTensor& d = h.tensors[k];
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].name == d.name) slot[k] = int(i);
    if (slot[k] < 0)
      GYRE_THROW(invalid_argument,
                 "delta file {}: tensor '{}' is not a parameter of this model (architecture "
                 "mismatch); nothing applied",
                 path, d.name);
    const Tensor& t = params[size_t(slot[k])].tensor;
    if (t.shape() != d.shape || t.dtype() != DType::f32)
      GYRE_THROW(invalid_argument,
                 "delta file {}: tensor '{}' has shape {} but the model's is {} {}; nothing "
                 "applied",
                 path, d.name, shape_str(d.shape), dtype_name(t.dtype()), shape_str(t.shape()));
  }
  // Stage every new tensor and verify its checksum before touching any weight.
  std::vector<std::vector<char>> staged(h.tensors.size());
  parallel_for(int64_t(h.tensors.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<char> planes;
    for (int64_t k = b; k < e; ++k) {
      const DeltaTensor& d = h.tensors[size_t(k)];
      const char* payload = bytes.data() + h.payload_offset + d.offset;
      if (hex64(payload, d.length) != d.payload_xxh3)
        GYRE_THROW(io,
                   "delta file {}: tensor '{}': payload checksum mismatch (corrupt file); "
                   "nothing applied",
                   path, d.name);
      planes.resize(d.raw_bytes);
      size_t z = ZSTD_decompress(planes.data(), planes.size(), payload, d.length);
      if (ZSTD_isError(z) || z != d.raw_bytes)
        GYRE_THROW(io,
                   "delta file {}: tensor '{}': zstd payload decodes to {} ({} bytes "
                   "expected); nothing applied",
                   path, d.name,
                   ZSTD_isError(z) ? ZSTD_getErrorName(z) : fmt::format("{} bytes", z),
                   d.raw_bytes);
      std::vector<char>& out = staged[size_t(k)];
      out.resize(d.raw_bytes);
      from_planes(planes.data(), out.data(), d.raw_bytes / 4);
      const char* cur = static_cast<const char*>(params[size_t(slot[size_t(k)])].tensor.raw());
      for (size_t i = 0; i < out.size(); ++i) out[i] = char(out[i] ^ cur[i]);
      if (hex128(out.data(), out.size()) != d.xxh3_128)
        GYRE_THROW(io,
                   "delta file {}: tensor '{}': checksum of the reconstructed weights does not "
                   "match (the engine's v{} weights differ from the trainer's snapshot); nothing "
                   "applied — do a full sync",
                   path, d.name, current_version);
    }
  });
  for (size_t k = 0; k < h.tensors.size(); ++k)
    std::memcpy(params[size_t(slot[k])].tensor.raw(), staged[k].data(), staged[k].size());
  SyncStats s;
  s.method = "delta";
  s.version = h.version;
  s.base_version = h.base_version;
  s.bytes = bytes.size();
  s.raw_bytes = raw_bytes_of(model);
  s.tensors = int64_t(params.size());
  s.changed_tensors = int64_t(h.tensors.size());
  s.seconds = timer.elapsed();
  return s;
}

SyncStats receive_weights(model::CausalLM& model, const std::string& path,
                          int64_t current_version) {
  if (fs::is_directory(path)) return load_full_weights(model, path);
  return apply_delta(model, path, current_version);
}

// ---- driver

DiskWeightSync::DiskWeightSync(std::string root, DiskSyncMode mode, bool keep_files)
    : root_(std::move(root)), mode_(mode), keep_files_(keep_files) {
  if (root_.empty())
    GYRE_THROW(invalid_argument,
               "disk weight sync needs a folder both sides can read: set "
               "--update-weight-disk-dir");
}

void DiskWeightSync::published(const std::string& path) {
  if (!keep_files_ && !last_path_.empty() && last_path_ != path) {
    std::error_code ec;
    fs::remove_all(last_path_, ec);
  }
  last_path_ = path;
}

SyncStats DiskWeightSync::full(const model::CausalLM& model, int64_t version,
                               const std::function<void(const std::string&)>& apply) {
  std::string path;
  SyncStats s = write_full_weights(model, root_, version, DType::f32, &path);
  Timer t;
  apply(path);
  s.seconds += t.elapsed();
  if (mode_ == DiskSyncMode::delta) encoder_.set_base(model, version);
  published(path);
  return s;
}

SyncStats DiskWeightSync::sync(const model::CausalLM& model, int64_t version,
                               const std::function<void(const std::string&)>& apply) {
  if (mode_ == DiskSyncMode::full || !encoder_.has_base()) return full(model, version, apply);
  std::string path;
  SyncStats s = encoder_.write(model, root_, version, &path);
  Timer t;
  try {
    apply(path);
  } catch (const DeltaBaseMismatch& e) {
    log::warn("{}; falling back to a full sync", e.what());
    std::error_code ec;
    fs::remove(path, ec);
    return full(model, version, apply);
  }
  s.seconds += t.elapsed();
  published(path);
  return s;
}

}  // namespace gyre::rl
