// safetensors reader: mmap each file once, validate the whole header before handing out any view
// (see safetensors.h for the format). The checks mirror the reference implementation
// (huggingface/safetensors): header length bounded (100 MB), offsets in range and matching
// dtype x shape, no overlapping tensors; every message names the file and the tensor. Sharded
// checkpoints follow transformers' model.safetensors.index.json ({"weight_map": {name: file}}).
// The writer lives in safetensors_write.cc.
#include "gyre/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "gyre/core/error.h"
#include "gyre/core/mmap_file.h"
#include "gyre/model/json_util.h"

namespace gyre::model {

namespace fs = std::filesystem;
using json_util::Json;

namespace {

// Same bound as the reference implementation's MAX_HEADER_SIZE: a larger length field means a
// corrupt or non-safetensors file, and refusing it avoids parsing megabytes of garbage.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct ParsedTensor {
  TensorInfo info;
  const char* data = nullptr;
};

struct ParsedFile {
  std::vector<ParsedTensor> tensors;
  std::map<std::string, std::string> metadata;
};

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

// Non-negative integer from a header field; `what` names the tensor and field for the message.
uint64_t header_uint(const Json& v, const std::string& file, const std::string& tensor,
                     const char* field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0)
      GYRE_THROW(invalid_argument, "{}: tensor '{}': {} holds negative value {}", file, tensor,
                 field, i);
    return uint64_t(i);
  }
  GYRE_THROW(invalid_argument, "{}: tensor '{}': {} must hold integers, got {} {}", file, tensor,
             field, json_util::type_name(v), v.dump());
}

Json parse_header(const char* begin, size_t n, const std::string& file) {
  std::string text(begin, n);
  // Duplicate names would silently shadow each other in a JSON object; the reference rejects them.
  std::string duplicate;
  std::set<std::string> seen;
  Json::parser_callback_t cb = [&](int depth, Json::parse_event_t ev, Json& parsed) {
    if (ev == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      auto k = parsed.get<std::string>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text, cb);
  } catch (const Json::parse_error& e) {
    size_t byte = e.byte > 0 ? e.byte - 1 : 0, line = 0, col = 0;
    json_util::line_col(text, byte, &line, &col);
    std::string what = e.what();
    auto colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    GYRE_THROW(invalid_argument,
               "{}: safetensors header is not valid JSON (header byte {}, line {}, column {}): {}; "
               "the file is corrupt or not a safetensors file",
               file, byte, line, col, what);
  }
  if (!duplicate.empty())
    GYRE_THROW(invalid_argument, "{}: tensor '{}' appears twice in the safetensors header", file,
               duplicate);
  if (!j.is_object())
    GYRE_THROW(invalid_argument, "{}: safetensors header must be a JSON object, got {}", file,
               json_util::type_name(j));
  return j;
}

ParsedFile parse_file(const MappedFile& m) {
  const std::string& file = m.path();
  ParsedFile out;
  if (m.size() < 8)
    GYRE_THROW(invalid_argument,
               "{}: file is {} bytes, shorter than the 8-byte safetensors header length; the file "
               "is truncated or not a safetensors file",
               file, m.size());
  const uint64_t n = read_u64_le(m.data());
  if (n > kMaxHeaderBytes)
    GYRE_THROW(invalid_argument,
               "{}: header length {} exceeds the {}-byte limit; the file is corrupt or not a "
               "safetensors file",
               file, n, kMaxHeaderBytes);
  if (n > m.size() - 8)
    GYRE_THROW(invalid_argument,
               "{}: header length {} runs past the end of the file ({} bytes); the file is "
               "truncated",
               file, n, m.size());
  Json j = parse_header(m.data() + 8, size_t(n), file);
  const char* data_start = m.data() + 8 + n;
  const uint64_t data_size = m.size() - 8 - n;

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        GYRE_THROW(invalid_argument, "{}: __metadata__ must be an object of strings, got {}", file,
                   json_util::type_name(v));
      for (auto mi = v.begin(); mi != v.end(); ++mi) {
        if (!mi.value().is_string())
          GYRE_THROW(invalid_argument, "{}: __metadata__ key '{}' must be a string, got {}", file,
                     mi.key(), json_util::type_name(mi.value()));
        out.metadata[mi.key()] = mi.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object())
      GYRE_THROW(invalid_argument,
                 "{}: tensor '{}': entry must be an object {{dtype, shape, data_offsets}}, got {}",
                 file, name, json_util::type_name(v));
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string())
      GYRE_THROW(invalid_argument, "{}: tensor '{}': missing or non-string 'dtype'", file, name);
    ParsedTensor t;
    t.info.name = name;
    t.info.file = file;
    if (!dtype_from_safetensors(dt->get<std::string>(), &t.info.dtype))
      GYRE_THROW(unsupported,
                 "{}: tensor '{}': dtype '{}' is not supported; supported: F32, F16, BF16, F64, "
                 "I32, I64, U8, BOOL",
                 file, name, dt->get<std::string>());
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array())
      GYRE_THROW(invalid_argument, "{}: tensor '{}': missing 'shape' list", file, name);
    uint64_t numel = 1;
    bool overflow = false;
    for (auto& d : *sh) {
      uint64_t dim = header_uint(d, file, name, "shape");
      if (dim > uint64_t(INT64_MAX)) overflow = true;
      overflow |= __builtin_mul_overflow(numel, dim, &numel);
      t.info.shape.push_back(int64_t(dim));
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, uint64_t(dtype_size(t.info.dtype)), &nbytes);
    if (overflow || numel > uint64_t(INT64_MAX))
      GYRE_THROW(invalid_argument, "{}: tensor '{}': shape {} is too large", file, name,
                 sh->dump());
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      GYRE_THROW(invalid_argument,
                 "{}: tensor '{}': 'data_offsets' must be a list [begin, end], got {}", file, name,
                 off == v.end() ? std::string("nothing") : off->dump());
    uint64_t begin = header_uint((*off)[0], file, name, "data_offsets");
    uint64_t end = header_uint((*off)[1], file, name, "data_offsets");
    if (begin > end)
      GYRE_THROW(invalid_argument, "{}: tensor '{}': data_offsets [{}, {}] has begin > end", file,
                 name, begin, end);
    if (end > data_size)
      GYRE_THROW(invalid_argument,
                 "{}: tensor '{}': data_offsets end {} is past the end of the data ({} bytes); the "
                 "file is truncated",
                 file, name, end, data_size);
    if (end - begin != nbytes)
      GYRE_THROW(invalid_argument,
                 "{}: tensor '{}': data_offsets [{}, {}] span {} bytes but dtype {} x shape {} "
                 "needs {}",
                 file, name, begin, end, end - begin, safetensors_name(t.info.dtype),
                 shape_str(t.info.shape), nbytes);
    t.data = data_start + begin;
    out.tensors.push_back(std::move(t));
    if (end > begin) ranges.push_back({begin, end, &it.key()});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      GYRE_THROW(invalid_argument,
                 "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section", file,
                 *ranges[i - 1].name, ranges[i - 1].begin, ranges[i - 1].end, *ranges[i].name,
                 ranges[i].begin, ranges[i].end);
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A shard name from an index must stay inside the checkpoint folder.
void check_shard_name(const std::string& shard, const std::string& index) {
  fs::path p(shard);
  bool bad = shard.empty() || p.is_absolute();
  for (auto& part : p) bad |= part == "..";
  if (bad)
    GYRE_THROW(invalid_argument,
               "{}: weight_map names shard '{}', which is not a file name inside the checkpoint "
               "folder",
               index, shard);
}

}  // namespace

SafetensorsReader SafetensorsReader::open(const std::string& path) {
  SafetensorsReader r;
  r.source_ = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) GYRE_THROW(not_found, "{}: no such file or folder", path);

  std::string file = path, index;
  if (fs::is_directory(path, ec)) {
    fs::path dir(path);
    if (fs::exists(dir / "model.safetensors", ec)) {
      file = (dir / "model.safetensors").string();
    } else if (fs::exists(dir / "model.safetensors.index.json", ec)) {
      index = (dir / "model.safetensors.index.json").string();
    } else {
      std::vector<std::string> found;
      for (auto& e : fs::directory_iterator(dir, ec))
        if (e.is_regular_file() && e.path().extension() == ".safetensors")
          found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty())
        GYRE_THROW(not_found, "no model.safetensors or model.safetensors.index.json in {}", path);
      if (found.size() > 1)
        GYRE_THROW(invalid_argument,
                   "{}: holds {} .safetensors files ({}, ...) but no model.safetensors or "
                   "model.safetensors.index.json to say which to load; pass a file path",
                   path, found.size(), fs::path(found[0]).filename().string());
      file = found[0];
    }
  } else if (ends_with(path, ".json")) {
    index = path;
  }

  auto add = [&r](ParsedFile&& pf, const std::shared_ptr<MappedFile>& m) {
    for (auto& t : pf.tensors) {
      auto [it, inserted] = r.entries_.try_emplace(t.info.name);
      if (!inserted)
        GYRE_THROW(invalid_argument,
                   "tensor '{}' appears in both {} and {}; a checkpoint must hold each tensor once",
                   t.info.name, it->second.info.file, t.info.file);
      it->second.info = std::move(t.info);
      it->second.mapping = m;
      it->second.data = t.data;
    }
    for (auto& [k, v] : pf.metadata) r.metadata_.emplace(k, v);
  };

  if (index.empty()) {
    auto m = MappedFile::open(file);
    add(parse_file(*m), m);
    return r;
  }

  // Sharded: {"metadata": {...}, "weight_map": {tensor: shard file}}; open each shard once.
  auto im = MappedFile::open(index);
  Json ij = json_util::parse(std::string(im->data(), im->size()), index);
  auto wm = ij.is_object() ? ij.find("weight_map") : ij.end();
  if (!ij.is_object() || wm == ij.end() || !wm->is_object())
    GYRE_THROW(invalid_argument,
               "{}: missing 'weight_map' object ({{\"weight_map\": {{tensor name: shard file}}}})",
               index);
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      GYRE_THROW(invalid_argument, "{}: weight_map entry '{}' must be a shard file name, got {}",
                 index, it.key(), it.value().dump());
    std::string shard = it.value().get<std::string>();
    check_shard_name(shard, index);
    by_shard[shard].push_back(it.key());
  }
  fs::path base = fs::path(index).parent_path();
  for (auto& [shard, names] : by_shard) {
    std::string shard_path = (base / shard).string();
    std::shared_ptr<MappedFile> m;
    try {
      m = MappedFile::open(shard_path);
    } catch (const Error& e) {
      throw Error(e.kind(), fmt::format("{} (shard listed in {})", e.what(), index));
    }
    ParsedFile pf = parse_file(*m);
    std::set<std::string> in_shard;
    for (auto& t : pf.tensors) in_shard.insert(t.info.name);
    for (auto& n : names)
      if (!in_shard.count(n))
        GYRE_THROW(invalid_argument,
                   "{}: weight_map puts tensor '{}' in {}, but that shard does not contain it",
                   index, n, shard_path);
    add(std::move(pf), m);
  }
  return r;
}

bool SafetensorsReader::contains(const std::string& name) const { return entries_.count(name) > 0; }

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    GYRE_THROW(not_found, "tensor '{}' not found in {} ({} tensors)", name, source_,
               entries_.size());
  return it->second.info;
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (auto& [name, e] : entries_) out.push_back(name);
  return out;
}

Tensor SafetensorsReader::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const Entry& e = entries_.at(name);
  const size_t align = dtype_size(ti.dtype);
  if (reinterpret_cast<uintptr_t>(e.data) % align == 0)
    return Tensor::borrow(const_cast<char*>(e.data), ti.shape, ti.dtype, Device::cpu, e.mapping);
  // Misaligned in the file: typed access through the mapping would be undefined behaviour.
  Tensor t = Tensor::empty(ti.shape, ti.dtype);
  if (t.nbytes()) std::memcpy(t.raw(), e.data, t.nbytes());
  return t;
}

}  // namespace gyre::model
