// safetensors read (memory-mapped, single file or sharded via model.safetensors.index.json) and
// write. Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {...}}, then the data; offsets are relative to the
// end of the header. Every structural problem (truncated file, header past the end, offsets out of
// range / overlapping / not matching dtype x shape, invalid JSON, unknown dtype) is an Error naming
// the file and tensor.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"

namespace gyre::model {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  std::string file;  // which file holds it
};

// A set of tensors backed by one or more mmap'ed files. Tensors returned are zero-copy views that
// keep their mapping alive. The mapping is read-only: clone() a tensor before writing to it. (A
// tensor whose bytes are not aligned to its element size in the file — possible when a file mixes
// element sizes, e.g. an odd-length bf16 tensor before an f32 one — is returned as an aligned
// copy.)
class SafetensorsReader {
 public:
  // Opens <path> if it is a .safetensors file, or the folder's model.safetensors /
  // model.safetensors.index.json (+ shards) / the single *.safetensors file it holds.
  static SafetensorsReader open(const std::string& path);

  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // not_found error naming the tensor
  std::vector<std::string> names() const;                 // sorted
  Tensor get(const std::string& name) const;              // zero-copy, checkpoint dtype
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    TensorInfo info;
    std::shared_ptr<void> mapping;  // keeps the file mapped
    const char* data = nullptr;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::string source_;  // what was opened (file, index or folder), for error messages
};

// Writes tensors (any dtype; CPU) to one file, names sorted, 8-byte aligned header as the reference
// implementation does. `metadata` goes to "__metadata__".
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Writes a sharded checkpoint (model-0000i-of-0000n.safetensors + model.safetensors.index.json)
// when the total exceeds max_shard_bytes, else model.safetensors.
void write_safetensors_dir(const std::string& dir, const std::map<std::string, Tensor>& tensors,
                           size_t max_shard_bytes = size_t(5) << 30);

}  // namespace gyre::model
