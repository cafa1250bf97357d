// Read-only whole-file mmap (see mmap_file.h).
#include "gyre/core/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gyre/core/error.h"

namespace gyre {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) GYRE_THROW(not_found, "{}: file not found", path);
    GYRE_THROW(io, "{}: cannot open for reading: {}", path, std::strerror(e));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    GYRE_THROW(io, "{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    GYRE_THROW(io, "{}: not a regular file (pass a file, or a model folder where one is accepted)",
               path);
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size_t(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      GYRE_THROW(io, "{}: cannot mmap {} bytes: {}", path, m->size_, std::strerror(e));
    }
    m->data_ = static_cast<const char*>(p);
  }
  ::close(fd);  // the mapping stays valid after the descriptor is closed
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<char*>(data_), size_);
}

}  // namespace gyre
