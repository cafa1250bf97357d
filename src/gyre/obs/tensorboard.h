// TensorBoard event files written natively (no TensorFlow, no protobuf library).
//
// An event file is a sequence of TFRecords: uint64 length (little endian), uint32 masked CRC-32C of
// those 8 bytes, the payload, uint32 masked CRC-32C of the payload (TensorFlow
// core/lib/io/record_writer.cc; mask = rotate right by 15 + 0xa282ead8). Each payload is a
// serialized tensorflow.Event protobuf: wall_time (1, double), step (2, int64), file_version
// (3, string: the first record is always "brain.Event:2"), summary (5) holding repeated
// Summary.Value {tag (1), simple_value (2, float)}. Files are named
// events.out.tfevents.<unix seconds>.<hostname> so TensorBoard's directory watcher picks them up.
//
// Invariants: every record on disk is complete once flush() returns; writes are serialised by a
// mutex, so one writer may be shared by threads.
#pragma once
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gyre::obs {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as TFRecord uses; crc32c("123456789")
// is 0xE3069283.
uint32_t crc32c(const void* data, size_t n);
// TFRecord's masked form of a CRC (so a CRC of data containing CRCs is not degenerate).
inline uint32_t mask_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

// Protobuf encoding of one Event with scalar summaries (exposed for tests and for `gyre inspect`).
std::string encode_scalar_event(double wall_time, int64_t step,
                                const std::vector<std::pair<std::string, float>>& scalars);
std::string encode_file_version_event(double wall_time);
// Frames a payload as one TFRecord.
std::string frame_record(std::string_view payload);

class TensorBoardWriter {
 public:
  // Creates `dir` if needed and opens a new event file in it (writing the file_version record).
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event holding all scalars of a step (wall_time < 0: now).
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& scalars,
                   double wall_time = -1);
  void add_scalar(const std::string& tag, float value, int64_t step, double wall_time = -1) {
    add_scalars(step, {{tag, value}}, wall_time);
  }
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);

  std::mutex mu_;
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace gyre::obs
