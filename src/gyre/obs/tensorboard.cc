// TensorBoard event-file writer: hand-encoded protobuf inside TFRecord framing (see header).
#include "gyre/obs/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "gyre/core/error.h"

namespace gyre::obs {

namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

double wall_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Protobuf wire format: key = (field << 3) | wire type; 0 varint, 1 fixed64, 2 length-delimited,
// 5 fixed32; integers little endian.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void put_key(std::string& out, int field, int wire) {
  put_varint(out, uint64_t(field) << 3 | wire);
}
void put_fixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char(uint8_t(v >> (8 * i))));
}
void put_fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(char(uint8_t(v >> (8 * i))));
}
void put_bytes(std::string& out, int field, std::string_view s) {
  put_key(out, field, 2);
  put_varint(out, s.size());
  out.append(s.data(), s.size());
}
void put_double(std::string& out, int field, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  put_key(out, field, 1);
  put_fixed64(out, bits);
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> kTable = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string encode_scalar_event(double wall_time, int64_t step,
                                const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);  // Summary.Value.tag
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    put_key(v, 2, 5);  // Summary.Value.simple_value (float)
    put_fixed32(v, bits);
    put_bytes(summary, 1, v);  // Summary.value (repeated)
  }
  std::string ev;
  put_double(ev, 1, wall_time);  // Event.wall_time
  put_key(ev, 2, 0);             // Event.step (int64 varint: negative steps take 10 bytes)
  put_varint(ev, uint64_t(step));
  put_bytes(ev, 5, summary);  // Event.summary
  return ev;
}

std::string encode_file_version_event(double wall_time) {
  std::string ev;
  put_double(ev, 1, wall_time);
  put_bytes(ev, 3, "brain.Event:2");  // Event.file_version: what TensorBoard's loader expects
  return ev;
}

std::string frame_record(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  std::string len;
  put_fixed64(len, payload.size());
  out += len;
  put_fixed32(out, mask_crc(crc32c(len.data(), len.size())));
  out.append(payload.data(), payload.size());
  put_fixed32(out, mask_crc(crc32c(payload.data(), payload.size())));
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    GYRE_THROW(io, "cannot create TensorBoard directory '{}': {} (check --save / permissions)", dir,
               ec.message());
  double now = wall_now();
  // The pid keeps two writers started in the same second (several ranks, tests) apart.
  path_ = fmt::format("{}/events.out.tfevents.{}.{}", dir, int64_t(now), host_name());
  if (std::filesystem::exists(path_)) path_ += fmt::format(".{}", getpid());
  for (int k = 1; std::filesystem::exists(path_); ++k) path_ += fmt::format(".{}", k);
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) GYRE_THROW(io, "cannot open TensorBoard event file '{}': {}", path_, strerror(errno));
  write_record(encode_file_version_event(now));
  std::fflush(file_);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_record(const std::string& payload) {
  std::string rec = frame_record(payload);
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size())
    GYRE_THROW(io, "write to TensorBoard event file '{}' failed: {}", path_, strerror(errno));
}

void TensorBoardWriter::add_scalars(int64_t step,
                                    const std::vector<std::pair<std::string, float>>& scalars,
                                    double wall_time) {
  std::string ev = encode_scalar_event(wall_time < 0 ? wall_now() : wall_time, step, scalars);
  std::lock_guard<std::mutex> lock(mu_);
  write_record(ev);
}

void TensorBoardWriter::flush() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fflush(file_);
}

}  // namespace gyre::obs
