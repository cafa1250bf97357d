// Weight sync: disk (full) and delta round trips bit-exact, delta smaller than full after one
// AdamW step, wrong base refused with a full-sync fallback, corrupt delta files refused atomically,
// and the bucketed broadcast under `mpirun -np 2` (bit-exact f32, bf16 wire, manifest mismatch).
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>

#include "dist/mpi_launch.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/rl/weight_sync/broadcast_sync.h"
#include "gyre/rl/weight_sync/delta_sync.h"
#include "gyre/rl/weight_sync/disk_sync.h"
#include "gyre/train/optimizer.h"

namespace gyre::rl {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) {
  return test::source_path("tests/fixtures/models/" + name);
}

// xxh3 over every parameter's bytes, in order (bitwise identity of two models).
uint64_t weights_hash(const model::CausalLM& m) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (auto& p : m.parameters()) XXH3_64bits_update(st, p.tensor.raw(), p.tensor.nbytes());
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

void expect_bit_equal(const model::CausalLM& a, const model::CausalLM& b) {
  auto pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].name, pb[i].name);
    ASSERT_EQ(pa[i].tensor.nbytes(), pb[i].tensor.nbytes());
    EXPECT_EQ(std::memcmp(pa[i].tensor.raw(), pb[i].tensor.raw(), pa[i].tensor.nbytes()), 0)
        << pa[i].name;
  }
}

// One AdamW step with a deterministic gradient that touches every tensor except the embedding
// rows past 32 (as a real step leaves unseen tokens' rows alone when weight decay is 0).
void adamw_step(model::CausalLM& m, uint64_t seed, double lr = 1e-4) {
  train::AdamWConfig c;
  c.lr = lr;
  c.clip_grad = 0;
  train::AdamW opt(c, {});
  train::NamedTensors params, grads;
  uint64_t k = seed;
  for (auto& p : m.parameters()) {
    Tensor g = Tensor::zeros(p.tensor.shape());
    int64_t n = g.numel();
    if (p.name == "model.embed_tokens.weight") n = 32 * p.tensor.size(1);
    for (int64_t i = 0; i < n; ++i) {
      k = k * 6364136223846793005ull + 1442695040888963407ull;
      g.f32()[i] = float((k >> 40) % 2001) / 1000.0f - 1.0f;
    }
    params.emplace_back(p.name, p.tensor);
    grads.emplace_back(p.name, g);
  }
  opt.step(params, grads);
}

TEST(DiskSync, FullRoundTripIsBitExact) {
  const std::string root = test::temp_dir("disk_sync");
  auto trainer = model::CausalLM::load(fixture("qwen3_tiny"));
  adamw_step(*trainer, 1);
  auto engine = model::CausalLM::load(fixture("qwen3_tiny"));
  ASSERT_NE(weights_hash(*trainer), weights_hash(*engine));
  std::string path;
  SyncStats w = write_full_weights(*trainer, root, 7, DType::f32, &path);
  EXPECT_EQ(fs::path(path).filename(), "weight_v000007");
  EXPECT_TRUE(fs::exists(path + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(path + "/config.json"));
  EXPECT_GE(w.bytes, w.raw_bytes);
  SyncStats r = load_full_weights(*engine, path);
  EXPECT_EQ(r.version, 7);
  expect_bit_equal(*trainer, *engine);
  EXPECT_NE(describe(w).find("weight sync disk v7"), std::string::npos);
  EXPECT_EQ(sync_metrics(w).count("perf/update_weights_time"), 1u);
}

TEST(DiskSyncParse, NotASyncFolder) {
  auto engine = model::CausalLM::load(fixture("qwen3_tiny"));
  try {
    load_full_weights(*engine, fixture("qwen3_tiny"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gyre_weight_version.json not found"), std::string::npos);
  }
  const std::string root = test::temp_dir("disk_sync_bad");
  std::string path;
  write_full_weights(*engine, root, 1, DType::f32, &path);
  test::write_file(path + "/gyre_weight_version.json", "{\"weight_version\": \"x\"}");
  EXPECT_THROW(read_weight_version(path), Error);
}

TEST(DeltaSync, RoundTripIsBitExactAndSmallerThanFull) {
  const std::string root = test::temp_dir("delta_sync");
  auto trainer = model::CausalLM::load(fixture("qwen3_tiny"));
  auto engine = model::CausalLM::load(fixture("qwen3_tiny"));
  DeltaEncoder enc;
  enc.set_base(*trainer, 0);
  adamw_step(*trainer, 2);
  std::string path;
  SyncStats d = enc.write(*trainer, root, 1, &path);
  EXPECT_EQ(fs::path(path).filename(), "delta_v000001.gyre-delta");
  EXPECT_EQ(enc.base_version(), 1);
  SyncStats full = write_full_weights(*trainer, root, 1);
  EXPECT_LT(d.bytes, full.bytes) << describe(d) << " vs " << describe(full);
  EXPECT_EQ(d.changed_tensors, d.tensors);
  SyncStats a = apply_delta(*engine, path, 0);
  EXPECT_EQ(a.version, 1);
  EXPECT_EQ(a.base_version, 0);
  expect_bit_equal(*trainer, *engine);
  // A second step against the advanced base applies on top.
  adamw_step(*trainer, 3);
  std::string p2;
  enc.write(*trainer, root, 2, &p2);
  apply_delta(*engine, p2, 1);
  expect_bit_equal(*trainer, *engine);
  // Nothing changed: an empty delta (no tensors) is still a valid version bump.
  std::string p3;
  SyncStats e = enc.write(*trainer, root, 3, &p3);
  EXPECT_EQ(e.changed_tensors, 0);
  EXPECT_EQ(apply_delta(*engine, p3, 2).version, 3);
  expect_bit_equal(*trainer, *engine);
}

TEST(DeltaSync, WrongBaseIsRefusedAndDiskSyncFallsBackToFull) {
  const std::string root = test::temp_dir("delta_base");
  auto trainer = model::CausalLM::load(fixture("qwen3_tiny"));
  auto engine = model::CausalLM::load(fixture("qwen3_tiny"));
  int64_t engine_version = -1;
  std::vector<std::string> applied;
  auto apply = [&](const std::string& p) {
    SyncStats s = receive_weights(*engine, p, engine_version);
    engine_version = s.version;
    applied.push_back(s.method);
  };
  DiskWeightSync sync(root, DiskSyncMode::delta);
  EXPECT_EQ(sync.sync(*trainer, 0, apply).method, "disk");  // first sync is full
  adamw_step(*trainer, 4);
  EXPECT_EQ(sync.sync(*trainer, 1, apply).method, "delta");
  expect_bit_equal(*trainer, *engine);
  EXPECT_EQ(engine_version, 1);
  EXPECT_FALSE(fs::exists(root + "/weight_v000000"));  // superseded files are removed

  // The engine restarts from the original checkpoint: the next delta's base (v1) is refused...
  engine = model::CausalLM::load(fixture("qwen3_tiny"));
  engine_version = 0;
  adamw_step(*trainer, 5);
  const uint64_t before = weights_hash(*engine);
  std::string path;
  DeltaEncoder probe = sync.encoder();
  probe.write(*trainer, root + "/probe", 2, &path);
  try {
    apply_delta(*engine, path, engine_version);
    FAIL() << "wrong base accepted";
  } catch (const DeltaBaseMismatch& e) {
    EXPECT_EQ(e.base_version, 1);
    EXPECT_EQ(e.engine_version, 0);
    EXPECT_NE(std::string(e.what()).find("encoded against weight version 1 but this engine holds "
                                         "version 0"),
              std::string::npos);
  }
  EXPECT_EQ(weights_hash(*engine), before);
  // ... and the driver falls back to a full sync.
  SyncStats s = sync.sync(*trainer, 2, apply);
  EXPECT_EQ(s.method, "disk");
  EXPECT_EQ(engine_version, 2);
  expect_bit_equal(*trainer, *engine);
  EXPECT_EQ(applied, (std::vector<std::string>{"disk", "delta", "disk"}));
  // Deltas resume from the new base.
  adamw_step(*trainer, 6);
  EXPECT_EQ(sync.sync(*trainer, 3, apply).method, "delta");
  expect_bit_equal(*trainer, *engine);
}

class DeltaSyncParse : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir("delta_parse");
    trainer = model::CausalLM::load(fixture("qwen3_tiny"));
    engine = model::CausalLM::load(fixture("qwen3_tiny"));
    DeltaEncoder enc;
    enc.set_base(*trainer, 0);
    adamw_step(*trainer, 7);
    enc.write(*trainer, root, 1, &path);
    bytes = test::read_file(path);
    before = weights_hash(*engine);
  }
  // Writes `b` as a delta file and expects apply to fail with `needle`, weights untouched.
  void expect_refused(const std::string& b, const std::string& needle) {
    const std::string p = root + "/bad.gyre-delta";
    test::write_file(p, b);
    try {
      apply_delta(*engine, p, 0);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(weights_hash(*engine), before) << needle;
  }
  std::string root, path, bytes;
  std::unique_ptr<model::CausalLM> trainer, engine;
  uint64_t before = 0;
};

TEST_F(DeltaSyncParse, CorruptFilesLeaveTheWeightsUntouched) {
  expect_refused("", "missing the GYREDLT1 magic");
  expect_refused("NOTDELTA" + bytes.substr(8), "missing the GYREDLT1 magic");
  expect_refused(bytes.substr(0, 20), "runs past the end");
  expect_refused(bytes.substr(0, bytes.size() - 10), "runs past the");
  std::string flipped = bytes;
  flipped[flipped.size() - 3] ^= 0x5a;  // inside the last tensor's payload
  expect_refused(flipped, "payload checksum mismatch");
  uint64_t hl = 0;
  std::memcpy(&hl, bytes.data() + 8, 8);
  std::string header = bytes.substr(16, hl), payload = bytes.substr(16 + hl);
  auto with_header = [&](std::string h) {
    std::string out = bytes.substr(0, 8);
    uint64_t n = h.size();
    out.append(reinterpret_cast<const char*>(&n), 8);
    return out + h + payload;
  };
  expect_refused(with_header("{not json"), "header is not valid JSON");
  std::string h2 = header;
  h2.replace(h2.find("\"xxh3_128\":\"") + 12, 4, "0000");
  expect_refused(with_header(h2), "checksum of the reconstructed weights does not match");
  std::string h3 = header;
  h3.replace(h3.find("model.norm.weight"), 17, "model.nope.weight");
  expect_refused(with_header(h3), "'model.nope.weight' is not a parameter of this model");
  std::string h4 = header;
  h4.erase(h4.find("\"encoding\""), std::string("\"encoding\":\"xor+byteplanes4+zstd\",").size());
  expect_refused(with_header(h4), "header field encoding");
}

TEST_F(DeltaSyncParse, EngineWeightsThatDifferFromTheSnapshotAreDetected) {
  // The engine claims v0 but its weights are not the trainer's v0 snapshot: the reconstructed
  // tensors fail their checksums and nothing is written.
  auto params = engine->parameters();
  params.back().tensor.f32()[0] += 1.0f;
  before = weights_hash(*engine);
  expect_refused(bytes, "checksum of the reconstructed weights does not match");
}

TEST_F(DeltaSyncParse, OtherArchitectureIsRefused) {
  engine = model::CausalLM::load(fixture("llama3_tiny"));
  before = weights_hash(*engine);
  expect_refused(bytes, "nothing applied");
}

// ---- broadcast under mpirun: rank 0 trains (random weights), rank 1 is the engine.

TEST(DistWorker, DISABLED_BroadcastSync) {
  auto world = dist::init_distributed({.timeout_s = 60});
  const int r = world->rank();
  auto m = model::CausalLM::load(fixture("qwen3_tiny"));
  if (r == 0) adamw_step(*m, 9, 1e-2);
  BroadcastSyncOptions o;
  o.bucket_bytes = 64 << 10;  // several buckets; the embedding (128 KiB) travels alone
  SyncStats s = broadcast_weights(*world, *m, 4, o);
  EXPECT_EQ(s.version, 4);
  EXPECT_EQ(s.bytes, s.raw_bytes);
  std::vector<int64_t> h{int64_t(weights_hash(*m)), 0};
  std::vector<int64_t> all(4);
  world->all_gather(h.data(), all.data(), 2 * sizeof(int64_t));
  EXPECT_EQ(all[0], all[2]) << "f32 broadcast is not bit-exact";
  // bf16 on the wire: the engine holds the trainer's weights rounded to bf16.
  if (r == 0) adamw_step(*m, 10, 1e-2);
  o.wire_dtype = DType::bf16;
  SyncStats b = broadcast_weights(*world, *m, 5, o);
  EXPECT_EQ(b.bytes * 2, b.raw_bytes);
  uint64_t mine = weights_hash(*m);
  if (r == 0) {
    auto rounded = model::CausalLM::load(fixture("qwen3_tiny"));
    auto src = m->parameters(), dst = rounded->parameters();
    for (size_t i = 0; i < src.size(); ++i)
      for (int64_t k = 0; k < src[i].tensor.numel(); ++k)
        dst[i].tensor.f32()[k] = bf16_to_f32(f32_to_bf16(src[i].tensor.f32()[k]));
    mine = weights_hash(*rounded);
  }
  h = {int64_t(mine), 0};
  world->all_gather(h.data(), all.data(), 2 * sizeof(int64_t));
  EXPECT_EQ(all[0], all[2]) << "bf16 broadcast differs from bf16 rounding";
  // A receiver with another architecture refuses before any weight moves; both ranks throw.
  auto other = r == 1 ? model::CausalLM::load(fixture("llama3_tiny")) : std::move(m);
  try {
    broadcast_weights(*world, *other, 6, o);
    ADD_FAILURE() << "mismatch not refused";
  } catch (const Error& e) {
    std::printf("rank %d refused: %s\n", r, e.what());
  }
  world->barrier();
  std::printf("broadcast ok on rank %d\n", r);
}

TEST(BroadcastSync, TwoRanksRoundTripBitExact) {
  auto m = test::run_mpi_worker("DistWorker.DISABLED_BroadcastSync");
  ASSERT_EQ(m.r.exit_code, 0) << m.all();
  EXPECT_NE(m.r.out.find("broadcast ok on rank 1"), std::string::npos) << m.all();
  EXPECT_NE(m.r.out.find("rank 1 refused: rank 1 of 2 in 'world'"), std::string::npos) << m.all();
  EXPECT_NE(m.r.out.find("rank 0 refused: rank 0 of 2 in 'world'"), std::string::npos) << m.all();
  EXPECT_NE(m.r.out.find("refused by another rank"), std::string::npos) << m.all();
}

}  // namespace
}  // namespace gyre::rl
