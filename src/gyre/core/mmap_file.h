// MappedFile: a whole file mapped read-only into memory (POSIX mmap), shared by every tensor view
// that borrows bytes from it; the mapping is released when the last owner goes away.
//
// Invariants: data() is valid for size() bytes for the lifetime of the object; the bytes are
// read-only (PROT_READ) — writing through them faults, so callers that mutate must copy first. A
// zero-length file is representable (data() == nullptr, size() == 0) since mmap cannot map it.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace gyre {

class MappedFile {
 public:
  // Maps `path`; Error(not_found) if it does not exist, Error(io) naming the path and the OS
  // reason if it cannot be opened, stat'ed or mapped (e.g. it is a directory).
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace gyre
