// `gyre score` and `gyre grad` on a Hugging Face fixture, compared with the reference outputs in
// expected.safetensors (transformers, float64).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gyre/model/safetensors.h"
#include "test_util.h"

namespace gyre::model {
namespace {

const std::string kModel = "tests/fixtures/models/qwen3moe_tiny";

std::vector<std::vector<int64_t>> fixture_ids(const SafetensorsReader& r) {
  std::vector<std::vector<int64_t>> out;
  for (int i = 0; r.contains("seq" + std::to_string(i) + ".ids"); ++i) {
    Tensor t = r.get("seq" + std::to_string(i) + ".ids");
    out.emplace_back(t.i64(), t.i64() + t.numel());
  }
  return out;
}

TEST(ModelCli, ScoreMatchesReference) {
  const std::string dir = test::source_path(kModel);
  SafetensorsReader ref = SafetensorsReader::open(dir + "/expected.safetensors");
  auto seqs = fixture_ids(ref);
  const std::string tmp = test::temp_dir("cli_score");
  std::string input;
  for (const auto& s : seqs) input += nlohmann::json{{"ids", s}}.dump() + "\n";
  test::write_file(tmp + "/in.jsonl", input);
  // stdout mode, with a token budget that forces several forward passes.
  auto r = test::run_command(test::gyre_bin() + " score --model " + dir + " --input " + tmp +
                             "/in.jsonl --batch-tokens 20");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    ASSERT_LT(i, seqs.size());
    auto j = nlohmann::json::parse(line);
    auto lp = j["token_logprobs"].get<std::vector<double>>();
    auto ent = j["entropy"].get<std::vector<double>>();
    auto want_lp = ref.get("seq" + std::to_string(i) + ".token_logprobs").to_vector();
    auto want_ent = ref.get("seq" + std::to_string(i) + ".entropy").to_vector();
    ASSERT_EQ(lp.size(), want_lp.size());
    ASSERT_EQ(ent.size(), want_ent.size());
    for (size_t k = 0; k < lp.size(); ++k) EXPECT_NEAR(lp[k], want_lp[k], 1e-4);
    for (size_t k = 0; k < ent.size(); ++k) EXPECT_NEAR(ent[k], want_ent[k], 1e-4);
  }
  EXPECT_EQ(i, seqs.size());
  // --output mode writes the same lines to a file.
  auto r2 = test::run_command(test::gyre_bin() + " score --model " + dir + " --input " + tmp +
                              "/in.jsonl --batch-tokens 20 --output " + tmp + "/out.jsonl");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(test::read_file(tmp + "/out.jsonl"), r.out);
}

TEST(ModelCli, GradMatchesReference) {
  const std::string dir = test::source_path(kModel);
  SafetensorsReader ref = SafetensorsReader::open(dir + "/expected.safetensors");
  auto fixture = nlohmann::json::parse(test::read_file(dir + "/fixture.json"));
  auto seqs = fixture_ids(ref);
  const std::string tmp = test::temp_dir("cli_grad");
  std::string input;
  for (size_t i = 0; i < seqs.size(); ++i)
    input += nlohmann::json{{"ids", seqs[i]},
                            {"prompt_len", fixture["prompt_lens"][i]},
                            {"advantage", fixture["advantages"][i]}}
                 .dump() +
             "\n";
  test::write_file(tmp + "/in.jsonl", input);
  auto r = test::run_command(test::gyre_bin() + " grad --model " + dir + " --input " + tmp +
                             "/in.jsonl --output " + tmp + "/grads.safetensors");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double loss = nlohmann::json::parse(r.out)["loss"].get<double>();
  const double want_loss = ref.get("loss").to_vector()[0];
  EXPECT_NEAR(loss, want_loss, 1e-5 * std::fabs(want_loss));

  SafetensorsReader got = SafetensorsReader::open(tmp + "/grads.safetensors");
  SafetensorsReader ckpt = SafetensorsReader::open(dir);
  EXPECT_EQ(got.names(), ckpt.names());  // the checkpoint's own names, nothing more
  for (const auto& name : ckpt.names()) {
    ASSERT_TRUE(got.contains(name)) << name;
    EXPECT_EQ(got.info(name).dtype, DType::f32) << name;
    EXPECT_EQ(got.info(name).shape, ckpt.info(name).shape) << name;
    auto g = got.get(name).to_vector();
    auto w = ref.get("grad." + name).to_vector();
    double num = 0, den = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      num += (double(g[k]) - w[k]) * (double(g[k]) - w[k]);
      den += double(w[k]) * w[k];
    }
    if (den > 0) {
      EXPECT_LT(std::sqrt(num / den), 1e-4) << name;
    } else {
      EXPECT_EQ(num, 0.0) << name;
    }
  }
}

}  // namespace
}  // namespace gyre::model
