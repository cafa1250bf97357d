// End to end: real `gyre serve` processes on the qwen3_tiny fixture (random weights, vocab 512)
// with a 512-token byte-level tokenizer (tiny_tokenizer.h: the fixture tokenizers' ids would not
// fit the model), driven by curl (native API), the official OpenAI Node SDK, the HTTP rollout
// client and `gyre router`. Checks: /generate log-probs equal `gyre score`; streams concatenate to
// the non-streamed output; an abort mid-stream returns partial output and frees every KV page; a
// client disconnect aborts; the router spreads, keeps sessions, fails over; 512 concurrent
// streams finish without errors or leaked pages.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <cmath>
#include <future>
#include <map>
#include <regex>

#include "e2e/serve/serve_process.h"
#include "gyre/serve/http_client.h"
#include "gyre/serve/http_rollout_client.h"
#include "test_util.h"
#include "unit/serve/tiny_tokenizer.h"

using namespace gyre;
using namespace gyre::serve;
using nlohmann::json;

namespace {

std::string g_tok_dir;

std::unique_ptr<test::ChildProcess> start_serve(std::vector<std::string> extra = {}) {
  if (g_tok_dir.empty()) g_tok_dir = test::write_tiny_tokenizer_dir();
  std::vector<std::string> argv = {test::gyre_bin(),
                                   "serve",
                                   "--model-path",
                                   test::source_path("tests/fixtures/models/qwen3_tiny"),
                                   "--tokenizer-path",
                                   g_tok_dir,
                                   "--port",
                                   "0",
                                   "--tool-call-parser",
                                   "qwen25",
                                   "--reasoning-parser",
                                   "qwen3",
                                   "--num-pages",
                                   "4096",
                                   "--page-size",
                                   "16",
                                   "--max-running-requests",
                                   "256",
                                   "--io-threads",
                                   "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<test::ChildProcess>(argv, 120);
}

std::string curl(const std::string& url, const std::string& body) {
  std::string f = test::temp_dir("curl") + "/body.json";
  test::write_file(f, body);
  auto r = test::run_command(
      "curl -sS -N -X POST -H 'Content-Type: application/json' --data-binary @" + f + " " + url);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

std::string get(const std::string& url) {
  auto r = test::run_command("curl -sS " + url);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

double metric(const std::string& text, const std::string& name) {
  std::regex re("\\n" + name + "(\\{[^}]*\\})? ([0-9.eE+-]+)");
  std::smatch m;
  std::string t = "\n" + text;
  if (!std::regex_search(t, m, re)) return NAN;
  return std::stod(m[2]);
}

// Waits until nothing is in flight, flushes the prefix cache and checks every page is free.
void expect_no_leak(const std::string& url) {
  std::string m;
  for (int i = 0; i < 500; ++i) {
    m = get(url + "/metrics");
    if (metric(m, "gyre:in_flight_requests") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(metric(m, "gyre:in_flight_requests"), 0);
  auto r = test::run_command("curl -sS -o /dev/null -w '%{http_code}' " + url + "/flush_cache");
  EXPECT_EQ(r.out, "200");
  // The engine refreshes its page counts after each step, so run one tiny step (1 prompt + 1
  // output token: less than a page, so nothing of it stays cached) before reading them.
  r = test::run_command("curl -sS -o /dev/null -w '%{http_code}' " + url + "/health_generate");
  EXPECT_EQ(r.out, "200");
  m = get(url + "/metrics");
  EXPECT_EQ(metric(m, "gyre:kv_free_pages"), metric(m, "gyre:kv_total_pages")) << m;
}

class ServeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = start_serve().release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static test::ChildProcess* server_;
  std::string url() const { return server_->url(); }
};
test::ChildProcess* ServeE2E::server_ = nullptr;

}  // namespace

TEST_F(ServeE2E, CurlGenerateLogprobsMatchGyreScore) {
  std::vector<int32_t> prompt = {5, 77, 300, 12, 9};
  json body = {
      {"input_ids", prompt},
      {"sampling_params", {{"temperature", 0}, {"max_new_tokens", 16}, {"ignore_eos", true}}},
      {"return_logprob", true}};
  json r = json::parse(curl(url() + "/generate", body.dump()));
  ASSERT_EQ(r["output_ids"].size(), 16u) << r.dump();
  EXPECT_EQ(r["meta_info"]["finish_reason"], json({{"type", "length"}, {"length", 16}}));
  EXPECT_EQ(r["meta_info"]["prompt_tokens"], 5);
  const json& lps = r["meta_info"]["output_token_logprobs"];
  ASSERT_EQ(lps.size(), 16u);
  std::vector<int32_t> all = prompt;
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(lps[i][1], r["output_ids"][i]);
    all.push_back(r["output_ids"][i].get<int32_t>());
  }
  std::string dir = test::temp_dir("score");
  test::write_file(dir + "/in.jsonl", json{{"ids", all}}.dump() + "\n");
  auto s = test::run_command(test::gyre_bin() + " score --model " +
                             test::source_path("tests/fixtures/models/qwen3_tiny") + " --input " +
                             dir + "/in.jsonl");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  json sc = json::parse(s.out);
  for (size_t i = 0; i < 16; ++i)
    EXPECT_NEAR(lps[i][0].get<double>(), sc["token_logprobs"][prompt.size() - 1 + i].get<double>(),
                2e-4)
        << "token " << i;
}

TEST_F(ServeE2E, StreamedChunksConcatenateToTheNonStreamedText) {
  json body = {
      {"text", "hello world"},
      {"sampling_params", {{"temperature", 0}, {"max_new_tokens", 24}, {"ignore_eos", true}}}};
  json plain = json::parse(curl(url() + "/generate", body.dump()));
  body["stream"] = true;
  std::string raw = curl(url() + "/generate", body.dump());
  std::vector<json> chunks;
  size_t pos = 0;
  while ((pos = raw.find("data: ", pos)) != std::string::npos) {
    size_t end = raw.find("\n\n", pos);
    std::string d = raw.substr(pos + 6, end - pos - 6);
    pos = end;
    if (d == "[DONE]") break;
    chunks.push_back(json::parse(d));
  }
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_NE(raw.find("data: [DONE]"), std::string::npos);
  // Cumulative (SGLang default): each chunk's text extends the previous one.
  for (size_t i = 1; i < chunks.size(); ++i)
    EXPECT_EQ(
        chunks[i]["text"].get<std::string>().rfind(chunks[i - 1]["text"].get<std::string>(), 0),
        0u);
  EXPECT_EQ(chunks.back()["text"], plain["text"]);
  EXPECT_EQ(chunks.back()["output_ids"], plain["output_ids"]);
}

TEST_F(ServeE2E, AbortMidStreamReturnsPartialOutputAndFreesPages) {
  HttpClient client(1);
  ClientRequest req;
  req.method = "POST";
  req.target = "/generate";
  req.body = json{{"input_ids", {1, 2, 3}},
                  {"rid", "long-one"},
                  {"stream", true},
                  {"sampling_params", {{"max_new_tokens", 500}, {"ignore_eos", true}}}}
                 .dump();
  std::mutex mu;
  std::string raw;
  std::promise<void> first;
  bool first_set = false;
  auto done = std::make_shared<std::promise<HttpResponse>>();
  HttpClient::StreamCallbacks cb;
  cb.on_data = [&](std::string_view d) {
    std::lock_guard<std::mutex> lk(mu);
    raw.append(d);
    if (!first_set) first_set = true, first.set_value();
  };
  cb.on_done = [done](HttpResponse&& r) { done->set_value(std::move(r)); };
  client.request_stream(Url::parse(url()), req, cb);
  first.get_future().wait();
  curl(url() + "/abort_request", R"({"rid":"long-one"})");
  auto resp = done->get_future().get();
  ASSERT_EQ(resp.status, 200);
  std::lock_guard<std::mutex> lk(mu);
  size_t last = raw.rfind("data: {");
  ASSERT_NE(last, std::string::npos);
  json fin = json::parse(raw.substr(last + 6, raw.find("\n\n", last) - last - 6));
  EXPECT_EQ(fin["meta_info"]["finish_reason"]["type"], "abort");
  EXPECT_GT(fin["output_ids"].size(), 0u);
  EXPECT_LT(fin["output_ids"].size(), 500u);
  EXPECT_NE(raw.find("data: [DONE]"), std::string::npos);
  expect_no_leak(url());
}

TEST_F(ServeE2E, ClientDisconnectAbortsTheRequest) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), uint16_t(server_->port())});
  std::string body =
      R"({"input_ids":[4,5],"stream":true,"sampling_params":{"max_new_tokens":500,"ignore_eos":true}})";
  std::string req =
      "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  boost::asio::write(s, boost::asio::buffer(req));
  char buf[256];
  s.read_some(boost::asio::buffer(buf));  // the stream started
  s.close();
  expect_no_leak(url());
  EXPECT_GE(metric(get(url() + "/metrics"), "gyre:client_disconnect_aborts_total"), 1);
}

TEST_F(ServeE2E, HttpRolloutClientMatchesCurl) {
  HttpRolloutClientConfig cfg;
  cfg.url = url();
  HttpRolloutClient client(cfg);
  infer::GenerateRequest req;
  req.input_ids = {10, 20, 30};
  req.sampling.temperature = 0;
  req.sampling.max_new_tokens = 10;
  req.sampling.ignore_eos = true;
  req.return_logprob = true;
  auto r = client.generate(req).get();
  ASSERT_TRUE(r.error.empty()) << r.error;
  json c = json::parse(curl(url() + "/generate",
                            R"({"input_ids":[10,20,30],"return_logprob":true,
                                "sampling_params":{"temperature":0,"max_new_tokens":10,"ignore_eos":true}})"));
  EXPECT_EQ(json(r.output_ids), c["output_ids"]);
  EXPECT_EQ(r.text, c["text"]);
  for (size_t i = 0; i < r.output_logprobs.size(); ++i)
    EXPECT_FLOAT_EQ(r.output_logprobs[i],
                    c["meta_info"]["output_token_logprobs"][i][0].get<float>());
  EXPECT_EQ(r.finish.type, infer::FinishType::length);
  int64_t v0 = client.weight_version();
  EXPECT_EQ(client.sync_weights(nullptr, test::source_path("tests/fixtures/models/qwen3_tiny")),
            v0 + 1);
  EXPECT_EQ(client.weight_version(), v0 + 1);
  auto after = client.generate(req).get();
  EXPECT_EQ(after.weight_version, v0 + 1);
  EXPECT_EQ(after.output_ids, r.output_ids);  // same weights reloaded: same greedy output
}

TEST_F(ServeE2E, OpenAiNodeSdk) {
  std::string node_dir = test::source_path("tests/e2e/node");
  if (test::run_command("test -d " + node_dir + "/node_modules/openai").exit_code != 0)
    GTEST_SKIP() << "OpenAI Node SDK not installed: run scripts/install_node_deps.sh";
  auto r = test::run_command("cd " + node_dir + " && node openai_client.mjs " + url());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out << r.err;
}

TEST_F(ServeE2E, FiveHundredTwelveConcurrentStreams) {
  HttpClient client(2, 1024);
  const int kN = 512;
  std::atomic<int> ok{0}, bad{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::future<void>> waits;
  std::vector<std::shared_ptr<std::promise<void>>> ps;
  for (int i = 0; i < kN; ++i) {
    ClientRequest req;
    req.method = "POST";
    req.target = "/generate";
    req.timeout_s = 300;
    req.body = json{{"input_ids", {1 + i % 200, 7, 9}},
                    {"stream", true},
                    {"sampling_params", {{"max_new_tokens", 8}, {"ignore_eos", true}}}}
                   .dump();
    auto p = std::make_shared<std::promise<void>>();
    waits.push_back(p->get_future());
    auto raw = std::make_shared<std::string>();
    HttpClient::StreamCallbacks cb;
    cb.on_data = [raw](std::string_view d) { raw->append(d); };
    cb.on_done = [&, p, raw](HttpResponse&& r) {
      bool good = r.status == 200 && raw->find("data: [DONE]") != std::string::npos &&
                  raw->find("\"error\"") == std::string::npos &&
                  raw->find("\"length\"") != std::string::npos;
      (good ? ok : bad)++;
      if (!good) {
        std::lock_guard<std::mutex> lk(mu);
        if (first_error.empty())
          first_error = r.error + " " + std::to_string(r.status) + " " + *raw;
      }
      p->set_value();
    };
    client.request_stream(Url::parse(url()), req, cb);
  }
  for (auto& w : waits) w.wait();
  EXPECT_EQ(ok.load(), kN) << first_error;
  EXPECT_EQ(bad.load(), 0);
  expect_no_leak(url());
}

TEST(RouterE2E, SpreadsLoadKeepsSessionsAndFailsOver) {
  auto w1 = start_serve();
  auto w2 = start_serve();
  test::ChildProcess router({test::gyre_bin(), "router", "--port", "0", "--policy", "round_robin",
                             "--worker-urls", w1->url(), w2->url(), "--health-check-interval-secs",
                             "0.5"});
  std::string gen =
      R"({"input_ids":[3,4,5],"sampling_params":{"max_new_tokens":4,"ignore_eos":true}})";
  // Wait for both workers to be registered healthy.
  for (int i = 0; i < 200; ++i) {
    json ws = json::parse(get(router.url() + "/workers"));
    int healthy = 0;
    for (const auto& w : ws["workers"]) healthy += w["is_healthy"].get<bool>();
    if (healthy == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto served = [&](const test::ChildProcess& w) {
    return metric(get(w.url() + "/metrics"), "sglang:num_requests_total");
  };
  for (int i = 0; i < 8; ++i) {
    json r = json::parse(curl(router.url() + "/generate", gen));
    EXPECT_EQ(r["output_ids"].size(), 4u);
  }
  EXPECT_EQ(served(*w1), 4);
  EXPECT_EQ(served(*w2), 4);
  // Session affinity: one routing key always lands on one worker.
  std::string f = test::temp_dir("rk") + "/b.json";
  test::write_file(f, gen);
  for (int i = 0; i < 6; ++i)
    test::run_command("curl -sS -X POST -H 'X-SMG-Routing-Key: sess-1' --data-binary @" + f + " " +
                      router.url() + "/generate");
  double a = served(*w1) - 4, b = served(*w2) - 4;
  EXPECT_TRUE((a == 6 && b == 0) || (a == 0 && b == 6)) << a << " " << b;
  // Kill one worker: requests keep succeeding through the other.
  w2->stop(SIGKILL);
  for (int i = 0; i < 6; ++i) {
    json r = json::parse(curl(router.url() + "/generate", gen));
    EXPECT_EQ(r["output_ids"].size(), 4u) << r.dump();
  }
  std::string m = get(router.url() + "/metrics");
  EXPECT_NE(m.find("sgl_router_worker_health{worker=\"" + w2->url() + "\"} 0"), std::string::npos)
      << m;
}
