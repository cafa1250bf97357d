// `gyre serve`'s /update_weights_from_disk refuses a checkpoint holding NaN / inf weights with
// HTTP 400 naming the tensor (it used to load it and answer 200, then serve garbage), and the
// server keeps serving the weights it had: same weight version, same greedy output.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "e2e/serve/serve_process.h"
#include "gyre/model/safetensors.h"
#include "test_util.h"
#include "unit/serve/tiny_tokenizer.h"

using namespace gyre;
using nlohmann::json;

namespace {

const std::string kFixture = "tests/fixtures/models/qwen3_tiny";

struct Reply {
  int status = 0;
  json body;
};

// POSTs (or GETs, without a body) with curl: the status and the JSON reply.
Reply call(const std::string& url, const std::string& body = "") {
  const std::string dir = test::temp_dir("finite_curl");
  test::write_file(dir + "/req.json", body);
  const std::string data =
      body.empty()
          ? ""
          : " -X POST -H 'Content-Type: application/json' --data-binary @" + dir + "/req.json";
  auto r = test::run_command("curl -sS -m 60 -o " + dir + "/reply.json -w '%{http_code}'" + data +
                             " " + url);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Reply out;
  out.status = std::atoi(r.out.c_str());
  out.body = json::parse(test::read_file(dir + "/reply.json"), nullptr, false);
  return out;
}

}  // namespace

TEST(UpdateWeightsFinite, NanCheckpointIsRefusedAndOldWeightsKeepServing) {
  // The fixture with one NaN weight.
  const std::string bad = test::temp_dir("nan_ckpt");
  const std::string src = test::source_path(kFixture);
  std::filesystem::copy_file(src + "/config.json", bad + "/config.json");
  model::SafetensorsReader reader = model::SafetensorsReader::open(src + "/model.safetensors");
  std::map<std::string, Tensor> tensors;
  for (const auto& n : reader.names()) tensors[n] = reader.get(n).clone();
  const std::string tensor = "model.layers.0.self_attn.q_proj.weight";
  tensors[tensor].f32()[5] = NAN;
  model::write_safetensors(bad + "/model.safetensors", tensors);

  test::ChildProcess server(
      {test::gyre_bin(), "serve", "--model-path", src, "--tokenizer-path",
       test::write_tiny_tokenizer_dir(), "--port", "0", "--num-pages", "256", "--io-threads", "1"},
      120);
  const std::string gen =
      R"({"input_ids":[5,77,300],"sampling_params":{"temperature":0,"max_new_tokens":8,"ignore_eos":true}})";
  const Reply before = call(server.url() + "/generate", gen);
  ASSERT_EQ(before.status, 200) << before.body;
  const json version = call(server.url() + "/get_weight_version").body["weight_version"];

  const Reply up =
      call(server.url() + "/update_weights_from_disk", json{{"model_path", bad}}.dump());
  EXPECT_EQ(up.status, 400) << up.body;
  EXPECT_FALSE(up.body.value("success", true)) << up.body;
  const std::string message = up.body.value("message", "");
  EXPECT_NE(message.find(tensor), std::string::npos) << message;
  EXPECT_NE(message.find("NaN"), std::string::npos) << message;

  EXPECT_EQ(call(server.url() + "/get_weight_version").body["weight_version"], version);
  const Reply after = call(server.url() + "/generate", gen);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.body["output_ids"], before.body["output_ids"]);
  // A clean checkpoint still goes through.
  EXPECT_EQ(
      call(server.url() + "/update_weights_from_disk", json{{"model_path", src}}.dump()).status,
      200);
}
