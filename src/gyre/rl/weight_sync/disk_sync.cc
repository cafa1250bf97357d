// Full disk weight sync (disk_sync.h).
#include "gyre/rl/weight_sync/disk_sync.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gyre/core/timer.h"

namespace gyre::rl {

namespace fs = std::filesystem;

namespace {
constexpr const char* kVersionFile = "gyre_weight_version.json";

uint64_t folder_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}
}  // namespace

std::string weight_dir_name(int64_t version) { return fmt::format("weight_v{:06d}", version); }
std::string delta_file_name(int64_t version) {
  return fmt::format("delta_v{:06d}.gyre-delta", version);
}

SyncStats write_full_weights(const model::CausalLM& model, const std::string& root, int64_t version,
                             DType dtype, std::string* path) {
  if (version < 0)
    GYRE_THROW(invalid_argument, "disk weight sync: version must be >= 0, got {}", version);
  Timer timer;
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec)
    GYRE_THROW(io, "disk weight sync: cannot create {}: {} (check --update-weight-disk-dir)", root,
               ec.message());
  const std::string final_dir = (fs::path(root) / weight_dir_name(version)).string();
  const std::string tmp_dir =
      (fs::path(root) / fmt::format(".{}.tmp{}", weight_dir_name(version), getpid())).string();
  fs::remove_all(tmp_dir, ec);
  model.save(tmp_dir, dtype);
  {
    std::ofstream f(fs::path(tmp_dir) / kVersionFile);
    f << nlohmann::json({{"weight_version", version}, {"dtype", dtype_name(dtype)}}).dump() << "\n";
    if (!f) GYRE_THROW(io, "disk weight sync: cannot write {}/{}", tmp_dir, kVersionFile);
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec)
    GYRE_THROW(io, "disk weight sync: cannot rename {} to {}: {}", tmp_dir, final_dir,
               ec.message());
  if (path) *path = final_dir;
  SyncStats s;
  s.method = "disk";
  s.version = version;
  s.bytes = folder_bytes(final_dir);
  s.raw_bytes = uint64_t(model.num_parameters()) * sizeof(float);
  s.tensors = s.changed_tensors = int64_t(model.parameters().size());
  s.seconds = timer.elapsed();
  log_sync(s);
  return s;
}

int64_t read_weight_version(const std::string& dir) {
  const std::string p = (fs::path(dir) / kVersionFile).string();
  std::ifstream f(p);
  if (!f)
    GYRE_THROW(not_found,
               "{} not found: {} is not a gyre weight-sync folder (written by "
               "write_full_weights)",
               p, dir);
  try {
    nlohmann::json j;
    f >> j;
    int64_t v = j.at("weight_version").get<int64_t>();
    if (v < 0) GYRE_THROW(invalid_argument, "{}: weight_version {} must be >= 0", p, v);
    return v;
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "{}: {} (expected {{\"weight_version\": N}})", p, e.what());
  }
}

SyncStats load_full_weights(model::CausalLM& model, const std::string& dir) {
  Timer timer;
  const int64_t version = read_weight_version(dir);
  model.load_weights(dir);
  SyncStats s;
  s.method = "disk";
  s.version = version;
  s.bytes = folder_bytes(dir);
  s.raw_bytes = uint64_t(model.num_parameters()) * sizeof(float);
  s.tensors = s.changed_tensors = int64_t(model.parameters().size());
  s.seconds = timer.elapsed();
  return s;
}

}  // namespace gyre::rl
