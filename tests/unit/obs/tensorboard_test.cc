// TensorBoard event files: CRC-32C known answers, and records read back by an independent TFRecord
// + protobuf reader (written here) with every length and data CRC checked.
#include "gyre/obs/tensorboard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gyre/core/error.h"
#include "gyre/obs/metrics.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::obs;

namespace {

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> values;
};

uint64_t read_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(s.at(at + i))) << (8 * i);
  return v;
}

uint64_t read_varint(const std::string& s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    uint8_t b = uint8_t(s.at(at++));
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw std::runtime_error("varint too long");
}

// Calls fn(field, wire, varint_or_fixed, bytes) for every field of a protobuf message.
template <typename Fn>
void for_each_field(const std::string& msg, Fn fn) {
  size_t at = 0;
  while (at < msg.size()) {
    uint64_t key = read_varint(msg, at);
    int field = int(key >> 3), wire = int(key & 7);
    if (wire == 0) {
      fn(field, wire, read_varint(msg, at), std::string());
    } else if (wire == 1) {
      fn(field, wire, read_le(msg, at, 8), std::string());
      at += 8;
    } else if (wire == 5) {
      fn(field, wire, read_le(msg, at, 4), std::string());
      at += 4;
    } else if (wire == 2) {
      uint64_t n = read_varint(msg, at);
      fn(field, wire, 0, msg.substr(at, n));
      if (at + n > msg.size()) throw std::runtime_error("truncated field");
      at += n;
    } else {
      throw std::runtime_error("unexpected wire type");
    }
  }
}

Event decode_event(const std::string& payload) {
  Event ev;
  for_each_field(payload, [&](int f, int w, uint64_t v, const std::string& bytes) {
    if (f == 1 && w == 1) std::memcpy(&ev.wall_time, &v, 8);
    if (f == 2 && w == 0) ev.step = int64_t(v);
    if (f == 3 && w == 2) ev.file_version = bytes;
    if (f == 5 && w == 2) {
      for_each_field(bytes, [&](int sf, int sw, uint64_t, const std::string& value) {
        ASSERT_EQ(sf, 1);
        ASSERT_EQ(sw, 2);
        std::string tag;
        float simple = NAN;
        for_each_field(value, [&](int vf, int vw, uint64_t bits, const std::string& b) {
          if (vf == 1 && vw == 2) tag = b;
          if (vf == 2 && vw == 5) {
            uint32_t u = uint32_t(bits);
            std::memcpy(&simple, &u, 4);
          }
        });
        ev.values.emplace_back(tag, simple);
      });
    }
  });
  return ev;
}

// Reads a TFRecord file, verifying both masked CRCs of every record; throws on any corruption.
std::vector<std::string> read_records(const std::string& path) {
  std::string data = test::read_file(path);
  std::vector<std::string> out;
  size_t at = 0;
  while (at < data.size()) {
    if (at + 12 > data.size()) throw std::runtime_error("truncated header");
    uint64_t len = read_le(data, at, 8);
    uint32_t len_crc = uint32_t(read_le(data, at + 8, 4));
    if (len_crc != mask_crc(crc32c(data.data() + at, 8))) throw std::runtime_error("length crc");
    if (at + 12 + len + 4 > data.size()) throw std::runtime_error("truncated record");
    std::string payload = data.substr(at + 12, len);
    uint32_t data_crc = uint32_t(read_le(data, at + 12 + len, 4));
    if (data_crc != mask_crc(crc32c(payload.data(), payload.size())))
      throw std::runtime_error("data crc");
    out.push_back(payload);
    at += 12 + len + 4;
  }
  return out;
}

MetricsOptions options(const std::string& dir, bool tensorboard) {
  MetricsOptions o;
  o.dir = dir;
  o.tensorboard = tensorboard;
  return o;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST(TensorBoard, Crc32cKnownAnswers) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4 test vector
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(TensorBoard, RecordsReadBackWithValidCrcs) {
  std::string dir = test::temp_dir("tb");
  std::string path;
  {
    TensorBoardWriter w(dir);
    path = w.path();
    w.add_scalars(0, {{"train/loss", 1.5f}, {"rollout/raw_reward", 0.25f}}, 1000.5);
    w.add_scalar("train/loss", -3.0f, 7, 1001.25);
    w.add_scalar("perf/step_time", 2.0f, 1LL << 40, 1002.0);
    w.flush();
  }
  EXPECT_NE(path.find("/events.out.tfevents."), std::string::npos);
  auto records = read_records(path);
  ASSERT_EQ(records.size(), 4u);
  Event first = decode_event(records[0]);
  EXPECT_EQ(first.file_version, "brain.Event:2");
  EXPECT_GT(first.wall_time, 1.6e9);
  Event e0 = decode_event(records[1]);
  EXPECT_EQ(e0.step, 0);
  EXPECT_DOUBLE_EQ(e0.wall_time, 1000.5);
  ASSERT_EQ(e0.values.size(), 2u);
  EXPECT_EQ(e0.values[0].first, "train/loss");
  EXPECT_EQ(e0.values[0].second, 1.5f);
  EXPECT_EQ(e0.values[1].first, "rollout/raw_reward");
  EXPECT_EQ(e0.values[1].second, 0.25f);
  Event e1 = decode_event(records[2]);
  EXPECT_EQ(e1.step, 7);
  EXPECT_EQ(e1.values.at(0).second, -3.0f);
  EXPECT_EQ(decode_event(records[3]).step, 1LL << 40);
}

TEST(TensorBoard, CorruptionIsDetectedByReader) {
  std::string dir = test::temp_dir("tbc");
  std::string path;
  {
    TensorBoardWriter w(dir);
    path = w.path();
    w.add_scalar("train/loss", 1.0f, 1, 5.0);
  }
  std::string data = test::read_file(path);
  ASSERT_NO_THROW(read_records(path));
  data[data.size() - 6] ^= 0x01;  // a payload byte of the last record
  test::write_file(path, data);
  EXPECT_THROW(read_records(path), std::runtime_error);
}

TEST(TensorBoard, FrameRecordMatchesTfRecordLayout) {
  // TFRecord framing of the empty payload: 8 zero bytes, masked crc of them, masked crc of "".
  std::string rec = frame_record("");
  ASSERT_EQ(rec.size(), 16u);
  EXPECT_EQ(read_le(rec, 0, 8), 0u);
  EXPECT_EQ(uint32_t(read_le(rec, 8, 4)), mask_crc(crc32c(rec.data(), 8)));
  EXPECT_EQ(uint32_t(read_le(rec, 12, 4)), mask_crc(0));
  EXPECT_EQ(mask_crc(0), 0xa282ead8u);
}

TEST(Metrics, JsonlLinesAndTensorBoardMirror) {
  std::string dir = test::temp_dir("metrics");
  {
    MetricsLogger logger(options(dir, true));
    logger.log(0, {{"train/loss", 0.5}, {"rollout/raw_reward", 0.25}, {"perf/step_time", 3.0}});
    logger.log(1, Metrics{{"train/loss", NAN}, {"train/pg_clipfrac", 0.125}});
    EXPECT_EQ(logger.last().at("train/pg_clipfrac"), 0.125);
  }
  {
    MetricsLogger again(options(dir, false));  // a resumed run appends
    again.log(2, {{"train/loss", 0.25}});
  }
  std::istringstream in(test::read_file(dir + "/metrics.jsonl"));
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["step"], 0);
  EXPECT_EQ(lines[0]["train/loss"], 0.5);
  EXPECT_EQ(lines[0]["rollout/raw_reward"], 0.25);
  EXPECT_EQ(lines[0]["perf/step_time"], 3.0);
  EXPECT_TRUE(lines[1]["train/loss"].is_null());
  EXPECT_EQ(lines[2]["step"], 2);
  EXPECT_EQ(MetricsLogger::format_line(5, {{"b", 1}, {"a", 2}}), R"({"step":5,"a":2.0,"b":1.0})");

  auto files = event_files(dir + "/tensorboard");
  ASSERT_EQ(files.size(), 1u);
  auto records = read_records(files[0]);
  ASSERT_EQ(records.size(), 3u);  // file_version + 2 steps
  Event e = decode_event(records[2]);
  EXPECT_EQ(e.step, 1);
  ASSERT_EQ(e.values.size(), 2u);
  EXPECT_TRUE(std::isnan(e.values[0].second));  // NaN reaches TensorBoard unchanged
}

TEST(Metrics, ParseBadMetricNames) {
  MetricsLogger logger(options("", false));
  EXPECT_THROW(logger.log(0, {{"step", 1.0}}), Error);
  EXPECT_THROW(logger.log(0, {{"", 1.0}}), Error);
  EXPECT_THROW(logger.log(0, {{"train loss", 1.0}}), Error);
  EXPECT_THROW(MetricsLogger(options("", true)), Error);
  EXPECT_THROW(MetricsLogger(options("/proc/definitely/not/here", false)), Error);
}
