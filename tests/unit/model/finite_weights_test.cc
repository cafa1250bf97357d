// Non-finite checkpoint weights (model/checkpoint_io.h): NaN and +-inf are counted from the bits of
// every float dtype; CausalLM::load and load_weights (the path of `gyre serve`'s
// /update_weights_from_disk) refuse such a checkpoint naming each tensor, and load_weights keeps
// the weights it had; `gyre inspect` reports the count per tensor and exits 1.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "gyre/model/causal_lm.h"
#include "gyre/model/checkpoint_io.h"
#include "gyre/model/safetensors.h"
#include "test_util.h"

namespace gyre::model {
namespace {

namespace fs = std::filesystem;

const std::string kFixture = "tests/fixtures/models/qwen3_tiny";
const std::string kUp = "model.layers.1.mlp.up_proj.weight";
const std::string kNorm = "model.norm.weight";

// The fixture with one NaN in kUp and two infinities in kNorm, in `dtype`.
std::string non_finite_copy(DType dtype) {
  const std::string src = test::source_path(kFixture);
  const std::string dir = test::temp_dir("non_finite");
  fs::copy_file(src + "/config.json", dir + "/config.json");
  SafetensorsReader r = SafetensorsReader::open(src + "/model.safetensors");
  std::map<std::string, Tensor> tensors;
  for (const auto& n : r.names()) tensors[n] = r.get(n).clone();
  tensors[kUp].f32()[7] = NAN;
  tensors[kNorm].f32()[0] = INFINITY;
  tensors[kNorm].f32()[3] = -INFINITY;
  for (auto& [n, t] : tensors) t = t.to(dtype);
  write_safetensors(dir + "/model.safetensors", tensors);
  return dir;
}

TEST(FiniteWeights, ParseCountsNanAndInfInEveryFloatDtype) {
  const Tensor f32 = Tensor::from_vector(
      std::vector<float>{1.0f, NAN, INFINITY, 0.0f, -INFINITY, -2.5f, 65504.0f}, {7});
  for (DType t : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    const NonFiniteCount c = count_non_finite(f32.to(t));
    EXPECT_EQ(c.nan, 1) << dtype_name(t);
    EXPECT_EQ(c.inf, 2) << dtype_name(t);
    EXPECT_EQ(
        count_non_finite(Tensor::from_vector(std::vector<float>{1.0f, -0.0f, 3e-39f}, {3}).to(t))
            .total(),
        0)
        << dtype_name(t);
  }
  EXPECT_EQ(
      count_non_finite(Tensor::from_vector(std::vector<int32_t>{-1, 0x7F800000}, {2})).total(),
      0);  // integers are always finite, whatever their bits
}

TEST(FiniteWeights, ParseLoadRefusesNonFiniteCheckpointNamingTheTensors) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const std::string bad = non_finite_copy(dtype);
    const std::string e = test::error_of([&] { CausalLM::load(bad); });
    EXPECT_NE(e.find(bad), std::string::npos) << e;
    EXPECT_NE(e.find("'" + kUp + "' (1 NaN, 0 inf"), std::string::npos) << e;
    EXPECT_NE(e.find("'" + kNorm + "' (0 NaN, 2 inf"), std::string::npos) << e;

    // A reload in place (the server's /update_weights_from_disk) is refused before any weight
    // changes: the model keeps serving what it had.
    auto m = CausalLM::load(test::source_path(kFixture));
    std::vector<std::vector<float>> before;
    for (const auto& p : m->parameters()) before.push_back(p.tensor.to_vector());
    EXPECT_NE(test::error_of([&] { m->load_weights(bad); }).find(kUp), std::string::npos);
    const auto params = m->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      ASSERT_EQ(params[i].tensor.to_vector(), before[i]) << params[i].name;
  }
}

TEST(FiniteWeights, InspectReportsNonFiniteTensorsAndExits1) {
  const std::string bad = non_finite_copy(DType::bf16);
  auto r = test::run_command(test::gyre_bin() + " inspect --model " + bad);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("non-finite: " + kUp + ": 1 NaN, 0 inf"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("non-finite: " + kNorm + ": 0 NaN, 2 inf"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find(kUp), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(kNorm), std::string::npos) << r.err;

  r = test::run_command(test::gyre_bin() + " inspect --json --model " + bad);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["values_ok"].get<bool>());
  ASSERT_EQ(j["non_finite"].size(), 2u) << j["non_finite"];
  EXPECT_EQ(j["non_finite"][0]["name"], kUp);  // name order
  EXPECT_EQ(j["non_finite"][0]["nan"], 1);
  EXPECT_EQ(j["non_finite"][1]["name"], kNorm);
  EXPECT_EQ(j["non_finite"][1]["inf"], 2);

  // Headers only: nothing is read, nothing reported.
  r = test::run_command(test::gyre_bin() + " inspect --skip-value-check --model " + bad);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A clean checkpoint passes.
  r = test::run_command(test::gyre_bin() + " inspect --model " + test::source_path(kFixture));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("all finite"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace gyre::model
