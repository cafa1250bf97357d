// safetensors writer (see safetensors.h). Layout as the reference implementation writes it:
// "__metadata__" first, then tensors by name; header padded with spaces so the data starts at a
// multiple of 8 bytes; tensor bytes contiguous in name order. Files are written to a temporary
// name, fsync'ed and renamed, so a crash never leaves a half-written checkpoint under the final
// name. write_safetensors_dir shards like huggingface_hub's split_state_dict_into_shards (a new
// shard when the next tensor would overflow it; an oversized tensor gets a shard of its own) and
// writes transformers' model.safetensors.index.json.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "gyre/core/error.h"
#include "gyre/model/safetensors.h"

namespace gyre::model {

namespace fs = std::filesystem;
static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host needs byte swapping");

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// Writes a file through a temporary sibling and an atomic rename.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path) {
    static std::atomic<uint64_t> counter{0};
    tmp_ = fmt::format("{}.tmp-{}-{}", path, ::getpid(), counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      GYRE_THROW(io, "{}: cannot create {}: {}; check that the folder exists and is writable", path,
                 tmp_, std::strerror(errno));
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        GYRE_THROW(io, "{}: write failed: {} (disk full?)", path_, std::strerror(errno));
      }
      p += w;
      n -= size_t(w);
    }
  }
  void commit() {
    if (::fsync(fd_) != 0) GYRE_THROW(io, "{}: fsync failed: {}", path_, std::strerror(errno));
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) GYRE_THROW(io, "{}: close failed: {}", path_, std::strerror(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      GYRE_THROW(io, "{}: cannot rename {} into place: {}", path_, tmp_, std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

void check_tensor(const std::string& path, const std::string& name, const Tensor& t) {
  if (name.empty()) GYRE_THROW(invalid_argument, "{}: a tensor has an empty name", path);
  if (name == "__metadata__")
    GYRE_THROW(invalid_argument, "{}: '__metadata__' is reserved and cannot name a tensor", path);
  if (!t.defined())
    GYRE_THROW(invalid_argument, "{}: tensor '{}' is undefined (default-constructed)", path, name);
  if (t.device() != Device::cpu)
    GYRE_THROW(invalid_argument, "{}: tensor '{}' is on {}; copy it to the CPU before saving", path,
               name, device_name(t.device()));
}

size_t total_bytes(const std::map<std::string, Tensor>& tensors) {
  size_t n = 0;
  for (auto& [name, t] : tensors) n += t.nbytes();
  return n;
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

bool is_shard_name(const std::string& name) {
  static const std::regex re(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return std::regex_match(name, re);
}

}  // namespace

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Header JSON, built by hand to fix the key order (nlohmann's object would put "__metadata__"
  // after upper-case names); names and strings are escaped through nlohmann.
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  size_t offset = 0;
  for (auto& [name, t] : tensors) {
    check_tensor(path, name, t);
    if (header.size() > 1) header += ",";
    std::string shape = "[";
    for (size_t i = 0; i < t.shape().size(); ++i) {
      if (i) shape += ',';
      shape += std::to_string(t.shape()[i]);
    }
    shape += "]";
    header += fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
                          nlohmann::json(name).dump(), safetensors_name(t.dtype()), shape, offset,
                          offset + t.nbytes());
    offset += t.nbytes();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  AtomicFile f(path);
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  f.write(len, 8);
  f.write(header.data(), header.size());
  for (auto& [name, t] : tensors)
    if (t.nbytes()) f.write(t.raw(), t.nbytes());
  f.commit();
}

void write_safetensors_dir(const std::string& dir, const std::map<std::string, Tensor>& tensors,
                           size_t max_shard_bytes) {
  if (max_shard_bytes == 0)
    GYRE_THROW(invalid_argument, "{}: max_shard_bytes must be positive", dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) GYRE_THROW(io, "{}: cannot create folder: {}", dir, ec.message());
  for (auto& [name, t] : tensors) check_tensor(dir, name, t);
  // transformers refuses files whose metadata lacks format "pt"; we write what save_pretrained
  // does.
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  const size_t total = total_bytes(tensors);

  std::set<std::string> written;
  if (total <= max_shard_bytes) {
    write_safetensors((fs::path(dir) / kSingleName).string(), tensors, meta);
    written.insert(kSingleName);
  } else {
    std::vector<std::map<std::string, Tensor>> shards(1);
    size_t cur = 0;
    for (auto& [name, t] : tensors) {
      if (!shards.back().empty() && cur + t.nbytes() > max_shard_bytes) {
        shards.emplace_back();
        cur = 0;
      }
      shards.back().emplace(name, t);
      cur += t.nbytes();
    }
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      std::string fname = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
      write_safetensors((fs::path(dir) / fname).string(), shards[i], meta);
      written.insert(fname);
      for (auto& [name, t] : shards[i]) weight_map[name] = fname;
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text_file((fs::path(dir) / kIndexName).string(), index.dump(2) + "\n");
    written.insert(kIndexName);
  }
  // Remove what a previous save left behind: a stale model.safetensors would shadow the new index
  // (and vice versa) when the folder is opened again.
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string fname = e.path().filename().string();
    bool ours = fname == kSingleName || fname == kIndexName || is_shard_name(fname);
    if (ours && !written.count(fname)) fs::remove(e.path(), ec);
  }
}

}  // namespace gyre::model
