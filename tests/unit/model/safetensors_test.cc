// safetensors: bit-exact write -> read round trips (single file and sharded), the on-disk layout
// the reference implementation produces, folder resolution, and one test per malformed-file case,
// each checking that the error names the file and the tensor.
#include "gyre/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre::model {
namespace {

namespace fs = std::filesystem;

template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected gyre::Error";
  return Error(ErrorKind::internal, "");
}

// Raw bytes of a tensor filled with a recognisable pattern.
Tensor patterned(const Shape& shape, DType dt, uint8_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(seed + i * 31 + (i >> 8));
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

std::map<std::string, Tensor> sample_tensors() {
  std::map<std::string, Tensor> t;
  t["b.f32"] = patterned({3, 5}, DType::f32, 1);
  t["a.bf16"] = patterned({4, 2, 2}, DType::bf16, 2);
  t["c.f16"] = patterned({7}, DType::f16, 3);
  t["d.i64"] = patterned({2, 3}, DType::i64, 4);
  t["e.scalar"] = patterned({}, DType::f32, 5);      // 0-dim: one element
  t["f.empty"] = patterned({0, 4}, DType::bf16, 6);  // no elements
  t["g.empty1d"] = patterned({0}, DType::i64, 7);
  return t;
}

// A file from a hand-written header and data section.
std::string make_file(const std::string& dir, const std::string& name, const std::string& header,
                      const std::string& data, int64_t len_override = -1) {
  std::string bytes(8, '\0');
  uint64_t n = len_override >= 0 ? uint64_t(len_override) : header.size();
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(n >> (8 * i));
  std::string path = dir + "/" + name;
  test::write_file(path, bytes + header + data);
  return path;
}

TEST(Safetensors, RoundTripIsBitExact) {
  std::string dir = test::temp_dir("st_rt");
  auto tensors = sample_tensors();
  write_safetensors(dir + "/x.safetensors", tensors, {{"format", "pt"}, {"note", "a \"q\""}});
  SafetensorsReader r = SafetensorsReader::open(dir + "/x.safetensors");
  std::vector<std::string> names;
  for (auto& [n, t] : tensors) names.push_back(n);
  EXPECT_EQ(r.names(), names);
  for (auto& [n, t] : tensors) {
    SCOPED_TRACE(n);
    Tensor got = r.get(n);
    EXPECT_TRUE(same_bytes(got, t));
    EXPECT_EQ(r.info(n).file, dir + "/x.safetensors");
  }
  EXPECT_EQ(r.get("e.scalar").dim(), 0);
  EXPECT_EQ(r.get("e.scalar").numel(), 1);
  EXPECT_EQ(r.metadata().at("note"), "a \"q\"");
  EXPECT_EQ(r.metadata().at("format"), "pt");
}

TEST(Safetensors, LayoutMatchesReferenceWriter) {
  std::string dir = test::temp_dir("st_layout");
  auto tensors = sample_tensors();
  write_safetensors(dir + "/x.safetensors", tensors, {{"format", "pt"}});
  std::string bytes = test::read_file(dir + "/x.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"},\"a.bf16\":", 0), 0u) << header;
  auto j = nlohmann::json::parse(header);
  // Data is contiguous, in name order, and fills the file exactly.
  uint64_t expect = 0;
  for (auto& [name, t] : tensors) {
    EXPECT_EQ(j[name]["data_offsets"][0].get<uint64_t>(), expect) << name;
    expect += t.nbytes();
    EXPECT_EQ(j[name]["data_offsets"][1].get<uint64_t>(), expect) << name;
  }
  EXPECT_EQ(bytes.size(), 8 + n + expect);
  // Atomic write leaves no temporary behind.
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
}

TEST(Safetensors, ViewsAreZeroCopyAndOutliveTheReader) {
  std::string dir = test::temp_dir("st_view");
  write_safetensors(dir + "/x.safetensors", sample_tensors());
  Tensor a, b;
  {
    SafetensorsReader r = SafetensorsReader::open(dir + "/x.safetensors");
    a = r.get("b.f32");
    b = r.get("b.f32");
    EXPECT_EQ(a.raw(), b.raw());  // same mapped bytes, no copy
  }
  fs::remove(dir + "/x.safetensors");  // the mapping keeps the data alive
  EXPECT_TRUE(same_bytes(a, sample_tensors()["b.f32"]));
}

TEST(Safetensors, ShardedRoundTripWritesHfIndex) {
  std::string dir = test::temp_dir("st_shard");
  auto tensors = sample_tensors();
  // 40-byte shards: b.f32 (60 bytes) exceeds the limit and gets a shard of its own.
  write_safetensors_dir(dir, tensors, 40);
  auto index = nlohmann::json::parse(test::read_file(dir + "/model.safetensors.index.json"));
  size_t total = 0;
  for (auto& [n, t] : tensors) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  std::set<std::string> shards;
  for (auto& [n, f] : index["weight_map"].items()) shards.insert(f.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  std::string count = std::to_string(shards.size());
  EXPECT_TRUE(shards.count("model-00001-of-0000" + count + ".safetensors"));
  EXPECT_EQ(index["weight_map"]["a.bf16"], "model-00001-of-0000" + count + ".safetensors");
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));

  SafetensorsReader r = SafetensorsReader::open(dir);
  EXPECT_EQ(r.names().size(), tensors.size());
  for (auto& [n, t] : tensors) EXPECT_TRUE(same_bytes(r.get(n), t)) << n;
  EXPECT_EQ(r.metadata().at("format"), "pt");
  // The index path itself opens too.
  EXPECT_EQ(SafetensorsReader::open(dir + "/model.safetensors.index.json").names().size(),
            tensors.size());

  // Re-saving unsharded replaces the index and its shards.
  write_safetensors_dir(dir, tensors);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  SafetensorsReader r2 = SafetensorsReader::open(dir);
  for (auto& [n, t] : tensors) EXPECT_TRUE(same_bytes(r2.get(n), t)) << n;
}

TEST(Safetensors, FolderResolution) {
  std::string dir = test::temp_dir("st_folder");
  Error e = error_of([&] { SafetensorsReader::open(dir); });
  EXPECT_EQ(e.kind(), ErrorKind::not_found);
  EXPECT_EQ(std::string(e.what()),
            "no model.safetensors or model.safetensors.index.json in " + dir);
  write_safetensors(dir + "/weights.safetensors", sample_tensors());
  EXPECT_EQ(SafetensorsReader::open(dir).names().size(), sample_tensors().size());
  write_safetensors(dir + "/other.safetensors", sample_tensors());
  Error amb = error_of([&] { SafetensorsReader::open(dir); });
  EXPECT_NE(std::string(amb.what()).find(dir), std::string::npos) << amb.what();
  Error nf = error_of([&] { SafetensorsReader::open(dir + "/nope.safetensors"); });
  EXPECT_EQ(nf.kind(), ErrorKind::not_found);
  SafetensorsReader r = SafetensorsReader::open(dir + "/other.safetensors");
  Error nt = error_of([&] { r.get("no.such.tensor"); });
  EXPECT_EQ(nt.kind(), ErrorKind::not_found);
  EXPECT_NE(std::string(nt.what()).find("no.such.tensor"), std::string::npos);
  EXPECT_FALSE(r.contains("no.such.tensor"));
  EXPECT_TRUE(r.contains("c.f16"));
}

TEST(Safetensors, MisalignedTensorIsReturnedAsAlignedCopy) {
  std::string dir = test::temp_dir("st_align");
  // A 3-element bf16 tensor (6 bytes) followed by an f32 tensor: the f32 data starts at offset 6.
  std::map<std::string, Tensor> t{{"a", patterned({3}, DType::bf16, 1)},
                                  {"b", Tensor::from_vector(std::vector<float>{1.5f, -2.f}, {2})}};
  write_safetensors(dir + "/x.safetensors", t);
  SafetensorsReader r = SafetensorsReader::open(dir + "/x.safetensors");
  Tensor b = r.get("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.raw()) % 4, 0u);
  EXPECT_EQ(b.to_vector(), (std::vector<float>{1.5f, -2.f}));
}

TEST(Safetensors, ReadsFixtureCheckpoint) {
  SafetensorsReader r =
      SafetensorsReader::open(test::source_path("tests/fixtures/models/qwen3_tiny_bf16"));
  const TensorInfo& i = r.info("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(i.dtype, DType::bf16);
  EXPECT_EQ(i.shape, (Shape{128, 64}));
  EXPECT_EQ(r.metadata().at("format"), "pt");
  Tensor n = r.get("model.norm.weight");
  EXPECT_EQ(n.shape(), (Shape{64}));
}

// ---- Malformed files: each error names the file and, where there is one, the tensor. ----

struct BadCase {
  const char* what;
  std::string header;
  std::string data;
  int64_t len_override;
  const char* tensor;  // must appear in the message ("" = no tensor involved)
  const char* needle;  // a word of the explanation
};

TEST(SafetensorsParse, MalformedFilesNameFileAndTensor) {
  std::string dir = test::temp_dir("st_bad");
  std::string d16(16, '\x01');
  const BadCase cases[] = {
      {"N past end", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d16, 4000, "",
       "past the end"},
      {"N absurd", "{}", "", int64_t(1) << 40, "", "limit"},
      {"invalid JSON", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", d16, -1, "",
       "not valid JSON"},
      {"not an object", R"([1,2])", "", -1, "", "object"},
      {"unknown dtype", R"({"w.bad":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", d16,
       -1, "w.bad", "F8_E4M3"},
      {"negative dim", R"({"w.neg":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", d16, -1,
       "w.neg", "negative"},
      {"fractional dim", R"({"w.frac":{"dtype":"F32","shape":[1.5],"data_offsets":[0,16]}})", d16,
       -1, "w.frac", "shape"},
      {"begin > end", R"({"w.rev":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", d16, -1,
       "w.rev", "begin > end"},
      {"offsets not a pair", R"({"w.one":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", d16, -1,
       "w.one", "[begin, end]"},
      {"end past data", R"({"w.far":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", d16, -1,
       "w.far", "past the end"},
      {"size mismatch", R"({"w.sz":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", d16, -1,
       "w.sz", "needs 12"},
      {"overlap",
       R"({"w.a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},
           "w.b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       d16, -1, "w.b", "overlap"},
      {"duplicate", R"({"w.d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
           "w.d":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       d16, -1, "w.d", "twice"},
      {"huge shape",
       R"({"w.big":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", d16,
       -1, "w.big", "too large"},
      {"missing dtype", R"({"w.nod":{"shape":[4],"data_offsets":[0,16]}})", d16, -1, "w.nod",
       "dtype"},
      {"bad metadata", R"({"__metadata__":{"format":1}})", "", -1, "", "__metadata__"},
  };
  int i = 0;
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.what);
    std::string path = make_file(dir, "bad" + std::to_string(i++) + ".safetensors", c.header,
                                 c.data, c.len_override);
    Error e = error_of([&] { SafetensorsReader::open(path); });
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(c.tensor), std::string::npos) << m;
    EXPECT_NE(m.find(c.needle), std::string::npos) << m;
  }
}

TEST(SafetensorsParse, ShortFilesAreRejected) {
  std::string dir = test::temp_dir("st_short");
  for (size_t len : {0, 1, 7}) {
    std::string path = dir + "/short" + std::to_string(len) + ".safetensors";
    test::write_file(path, std::string(len, '\x05'));
    Error e = error_of([&] { SafetensorsReader::open(path); });
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shorter than"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsParse, BadShardIndexes) {
  std::string dir = test::temp_dir("st_badidx");
  write_safetensors(dir + "/s1.safetensors", sample_tensors());
  std::string index = dir + "/model.safetensors.index.json";
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    SCOPED_TRACE(text);
    test::write_file(index, text);
    Error e = error_of([&] { SafetensorsReader::open(dir); });
    EXPECT_NE(std::string(e.what()).find(index), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  };
  expect_error(R"({"weight_map": {"b.f32": "s1.safetensors", "zz": "s1.safetensors"}})", "'zz'");
  expect_error(R"({"weight_map": {"b.f32": "missing.safetensors"}})", "missing.safetensors");
  expect_error(R"({"weight_map": {"b.f32": "../s1.safetensors"}})", "../s1.safetensors");
  expect_error(R"({"weight_map": {"b.f32": 3}})", "b.f32");
  expect_error(R"({"metadata": {}})", "weight_map");
  expect_error("{\"weight_map\": {\n\"b.f32\": }", "line 2");
  // Valid: every mapped name is in its shard.
  test::write_file(index, R"({"weight_map": {"b.f32": "s1.safetensors"}})");
  EXPECT_TRUE(SafetensorsReader::open(dir).contains("c.f16"));
}

TEST(SafetensorsParse, WriterRejectsBadTensors) {
  std::string dir = test::temp_dir("st_wbad");
  std::map<std::string, Tensor> undefined{{"w", Tensor()}};
  Error e = error_of([&] { write_safetensors(dir + "/x.safetensors", undefined); });
  EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  std::map<std::string, Tensor> reserved{{"__metadata__", Tensor::zeros({1})}};
  error_of([&] { write_safetensors(dir + "/x.safetensors", reserved); });
  Error io =
      error_of([&] { write_safetensors(dir + "/no/such/dir/x.safetensors", sample_tensors()); });
  EXPECT_EQ(io.kind(), ErrorKind::io);
  EXPECT_FALSE(fs::exists(dir + "/x.safetensors"));
}

}  // namespace
}  // namespace gyre::model
