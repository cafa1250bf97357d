// CausalLM checkpoint handling and input validation: broken checkpoints (missing tensor, wrong
// shape, wrong dtype) fail with an Error naming the tensor; out-of-vocabulary ids and empty
// sequences are rejected; save/load round-trips (f32 exactly, bf16 as rounded); load_weights
// updates weights in place (and bumps weights_generation); the parameter layout agrees with
// model/param_names.h.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "gyre/core/philox.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/param_names.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/scoring.h"
#include "test_util.h"

namespace gyre::model {
namespace {

namespace fs = std::filesystem;

const std::string kFixture = "tests/fixtures/models/qwen3_tiny";

// Copies the fixture's config.json and a modified version of its weights into a temp folder.
std::string modified_copy(const std::string& tag,
                          const std::function<void(std::map<std::string, Tensor>&)>& edit) {
  const std::string src = test::source_path(kFixture);
  const std::string dir = test::temp_dir(tag);
  fs::copy_file(src + "/config.json", dir + "/config.json");
  SafetensorsReader r = SafetensorsReader::open(src + "/model.safetensors");
  std::map<std::string, Tensor> tensors;
  for (const auto& n : r.names()) tensors[n] = r.get(n).clone();
  edit(tensors);
  write_safetensors(dir + "/model.safetensors", tensors);
  return dir;
}

void expect_error_mentions(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    FAIL() << "expected gyre::Error";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' does not mention '" << p << "'";
  }
}

TEST(ModelCheckpoint, ParseMissingTensorNamesIt) {
  const std::string name = "model.layers.1.self_attn.k_norm.weight";
  auto dir = modified_copy("missing", [&](auto& t) { t.erase(name); });
  expect_error_mentions([&] { CausalLM::load(dir); }, {name, "missing"});
}

TEST(ModelCheckpoint, ParseWrongShapeNamesTensorAndShapes) {
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  auto dir = modified_copy("shape", [&](auto& t) {
    Tensor w = t[name];
    t[name] = w.narrow(0, w.size(0) - 1).clone();
  });
  expect_error_mentions([&] { CausalLM::load(dir); }, {name, "shape"});
}

TEST(ModelCheckpoint, ParseWrongDtypeNamesTensor) {
  const std::string name = "model.norm.weight";
  auto dir = modified_copy("dtype",
                           [&](auto& t) { t[name] = Tensor::zeros(t[name].shape(), DType::i32); });
  expect_error_mentions([&] { CausalLM::load(dir); }, {name, "dtype"});
}

TEST(ModelCheckpoint, ParseTokenIdOutOfVocabulary) {
  auto m = CausalLM::load(test::source_path(kFixture));
  const int32_t V = int32_t(m->config().vocab_size);
  expect_error_mentions(
      [&] {
        m->forward(Batch::pack({{1, 2, 3}, {4, V, 5}}), {});
      },
      {std::to_string(V), "sequence 1", "position 1", "vocabulary"});
  expect_error_mentions([&] { m->forward(Batch::pack({{-3}}), {}); }, {"-3"});
  expect_error_mentions([&] { score(*m, {{1, 2}, {V + 7}}); }, {std::to_string(V + 7)});
}

TEST(ModelCheckpoint, ParseEmptySequenceRejected) {
  auto m = CausalLM::load(test::source_path(kFixture));
  expect_error_mentions([&] { Batch::pack({{1, 2}, {}}); }, {"sequence 1", "empty"});
  expect_error_mentions([&] { Batch::pack({}); }, {"no sequences"});
  expect_error_mentions([&] { score(*m, {{1, 2}, {}}); }, {"sequence 1"});
  expect_error_mentions(
      [&] {
        policy_gradient_loss_and_grad(*m, {{1, 2, 3}}, {4}, {1.0f});
      },
      {"prompt_len 4"});
}

TEST(ModelCheckpoint, ParseBadBatchTensorsRejected) {
  auto m = CausalLM::load(test::source_path(kFixture));
  Batch b = Batch::pack({{1, 2, 3}});
  b.cu_seqlens = Tensor::from_vector(std::vector<int32_t>{0, 2}, {2});  // does not cover T = 3
  expect_error_mentions([&] { m->forward(b, {}); }, {"cu_seqlens"});
  ForwardOptions o;
  o.logits_rows = Tensor::from_vector(std::vector<int32_t>{5}, {1});
  expect_error_mentions([&] { m->forward(Batch::pack({{1, 2}}), o); }, {"logits_rows"});
  ForwardState st;
  Gradients g = m->zeros_like_parameters();
  expect_error_mentions([&] { m->backward(Tensor::zeros({2, 8}), st, g); }, {"save_for_backward"});
}

TEST(ModelCheckpoint, SaveLoadRoundTrip) {
  auto m = CausalLM::load(test::source_path(kFixture));
  const std::string dir = test::temp_dir("save");
  m->save(dir, DType::f32);
  auto m2 = CausalLM::load(dir);
  Batch b = Batch::pack({{5, 6, 7, 8}});
  Tensor a = m->forward(b, {}), c = m2->forward(b, {});
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.f32()[i], c.f32()[i]);

  const std::string dir16 = test::temp_dir("save_bf16");
  m->save(dir16, DType::bf16);
  SafetensorsReader r = SafetensorsReader::open(dir16);
  EXPECT_EQ(r.info("model.embed_tokens.weight").dtype, DType::bf16);
  auto m3 = CausalLM::load(dir16);
  auto p = m->parameters(), p3 = m3->parameters();
  ASSERT_EQ(p.size(), p3.size());
  for (size_t i = 0; i < p.size(); ++i) {
    ASSERT_EQ(p[i].name, p3[i].name);
    for (int64_t k = 0; k < p[i].tensor.numel(); ++k)
      ASSERT_EQ(bf16_to_f32(f32_to_bf16(p[i].tensor.f32()[k])), p3[i].tensor.f32()[k]) << p[i].name;
  }
}

TEST(ModelCheckpoint, LoadWeightsInPlaceKeepsStorage) {
  auto m = CausalLM::load(test::source_path(kFixture));
  Tensor embed = m->parameters()[0].tensor;  // a view held elsewhere (e.g. by a rollout engine)
  const float before = embed.f32()[3];
  auto dir =
      modified_copy("reload", [](auto& t) { t["model.embed_tokens.weight"].f32()[3] += 1.0f; });
  const uint64_t generation = m->weights_generation();
  m->load_weights(dir);
  EXPECT_FLOAT_EQ(embed.f32()[3], before + 1.0f);
  // The weights changed in place: holders of derived copies (rl::ActorTrainer's bf16 copies) see
  // a new generation.
  EXPECT_EQ(m->weights_generation(), generation + 1);
  // A different architecture is refused and leaves the weights (and the generation) untouched.
  expect_error_mentions(
      [&] { m->load_weights(test::source_path("tests/fixtures/models/llama3_tiny")); },
      {"different architecture"});
  EXPECT_FLOAT_EQ(embed.f32()[3], before + 1.0f);
  EXPECT_EQ(m->weights_generation(), generation + 1);
  m->to(Device::cpu);  // already there: nothing moves
  EXPECT_EQ(m->weights_generation(), generation + 1);
  m->mark_weights_changed();  // a writer outside the model (through parameters())
  EXPECT_EQ(m->weights_generation(), generation + 2);
}

TEST(ModelCheckpoint, ParameterLayoutMatchesParamNames) {
  for (const char* name : {"llama3_tiny", "qwen2_tiny", "qwen3_tiny", "qwen3moe_tiny"}) {
    auto m = CausalLM::load(test::source_path(std::string("tests/fixtures/models/") + name));
    std::map<std::string, Shape> want;
    for (const auto& [n, s] : expected_tensors(m->config())) want[n] = s;
    std::map<std::string, Shape> got;
    for (const auto& p : m->parameters()) got[p.name] = p.tensor.shape();
    EXPECT_EQ(got, want) << name;
    EXPECT_EQ(m->num_parameters(), m->config().num_parameters()) << name;
  }
}

TEST(ModelCheckpoint, RandomInitIsDeterministicAndFollowsHfInit) {
  ModelConfig c = CausalLM::load(test::source_path(kFixture))->config();
  auto a = CausalLM::random_init(c, 7), b = CausalLM::random_init(c, 7);
  auto c8 = CausalLM::random_init(c, 8);
  auto pa = a->parameters(), pb = b->parameters(), pc = c8->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    const bool is_norm = pa[i].name.find("norm") != std::string::npos;
    double sq = 0;
    for (int64_t k = 0; k < pa[i].tensor.numel(); ++k) {
      ASSERT_EQ(pa[i].tensor.f32()[k], pb[i].tensor.f32()[k]);
      if (is_norm) {
        ASSERT_EQ(pa[i].tensor.f32()[k], 1.0f) << pa[i].name;
      }
      sq += double(pa[i].tensor.f32()[k]) * pa[i].tensor.f32()[k];
    }
    if (!is_norm && pa[i].tensor.numel() >= 1000) {  // enough samples for the std estimate
      EXPECT_NEAR(std::sqrt(sq / double(pa[i].tensor.numel())), 0.02, 0.002) << pa[i].name;
      EXPECT_NE(pa[i].tensor.f32()[0], pc[i].tensor.f32()[0]) << pa[i].name;
    }
  }
}

// random_init fills each parameter in parallel chunks, each seeking its stream to the chunk's
// Philox block: the values must be the sequential draw's, bit for bit, across chunk boundaries
// (the embedding here is 2.5 chunks of 2^20 elements: two boundaries and a partial last chunk).
// The chunks are fixed by the size, not by the thread count, so one thread count suffices.
TEST(ModelCheckpoint, RandomInitEqualsTheSequentialDrawOfEachStream) {
  ModelConfig c = model::named_shape("tiny");
  c.vocab_size = 40961;  // x 64 = 2,621,504 elements
  c.hidden_size = 64;
  const float stddev = 0.5f;
  auto m = CausalLM::random_init(c, 11, stddev);
  const auto params = m->parameters();
  int64_t checked = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].name;
    if (name.find("norm") != std::string::npos || name.find("bias") != std::string::npos)
      continue;  // ones / zeros, no draw
    const Tensor& t = params[i].tensor;
    PhiloxStream rng(11, /*stream=*/i);
    for (int64_t k = 0; k < t.numel(); ++k)
      ASSERT_EQ(t.f32()[k], stddev * rng.next_normal()) << name << " [" << k << "]";
    checked += t.numel();
  }
  EXPECT_GT(checked, int64_t(2.5 * (1 << 20)));
}

}  // namespace
}  // namespace gyre::model
