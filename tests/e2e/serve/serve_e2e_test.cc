// End to end: real `gyre serve` processes on the qwen3_tiny fixture (random weights, vocab 512)
// with a 512-token byte-level tokenizer (tiny_tokenizer.h: the fixture tokenizers' ids would not
// fit the model), driven by curl (native API), the official OpenAI Node SDK, the HTTP rollout
// client and `gyre router`. Checks: /generate log-probs equal `gyre score`; streams concatenate to
// the non-streamed output; an abort mid-stream returns partial output and frees every KV page; a
// client disconnect aborts; bad input gets the right status; the router spreads, keeps sessions,
// fails over; 512 concurrent streams finish without errors or leaked pages.
//
// Robustness on a loaded CI box: every wait has a deadline and polls a condition (never a fixed
// sleep), every curl has --max-time, and callbacks only touch shared_ptr-held state so a timed-out
// wait cannot leave them writing into a dead stack frame.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

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

constexpr double kWaitS = 60;  // any single wait; generous for a loaded 2-core machine

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

bool wait_until(const std::function<bool()>& pred, double seconds = kWaitS) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string curl(const std::string& url, const std::string& body, const std::string& extra = "") {
  std::string f = test::temp_dir("curl") + "/body.json";
  test::write_file(f, body);
  auto r = test::run_command("curl -sS -N -m 60 -X POST -H 'Content-Type: application/json' " +
                             extra + " --data-binary @" + f + " " + url);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

// In-process client for the many small control/metrics calls (a curl process each would cost
// more than the request on a loaded box).
HttpResponse call(const std::string& base, const std::string& method, const std::string& target,
                  const std::string& body = "", Headers headers = {}) {
  static HttpClient client(1);
  ClientRequest r;
  r.method = method;
  r.target = target;
  r.body = body;
  r.headers = std::move(headers);
  r.timeout_s = kWaitS;
  return client.request_sync(Url::parse(base), std::move(r));
}

std::string get(const std::string& url, const std::string& target) {
  auto r = call(url, "GET", target);
  EXPECT_EQ(r.status, 200) << target << ": " << r.error << r.body;
  return r.body;
}

// Value of the first sample of `name` whose label set contains `labels` (NaN if absent).
double metric(const std::string& text, const std::string& name, const std::string& labels = "") {
  std::regex re("\\n" + std::regex_replace(name, std::regex(R"([{}])"), R"(\$&)") +
                "(\\{[^}]*\\})? ([0-9.eE+-]+)");
  std::string t = "\n" + text;
  for (std::sregex_iterator it(t.begin(), t.end(), re), end; it != end; ++it)
    if (labels.empty() || (*it)[1].str().find(labels) != std::string::npos)
      return std::stod((*it)[2]);
  return NAN;
}

double metric_of(const std::string& url, const std::string& name, const std::string& labels = "") {
  return metric(get(url, "/metrics"), name, labels);
}

// Waits until nothing is in flight, flushes the prefix cache and checks every page is free.
void expect_no_leak(const std::string& url) {
  EXPECT_TRUE(wait_until([&] { return metric_of(url, "gyre:in_flight_requests") == 0; }))
      << "requests still in flight: " << get(url, "/metrics");
  auto f = call(url, "GET", "/flush_cache");
  EXPECT_EQ(f.status, 200) << f.body;
  // The engine refreshes its page counts when it has processed the flush; poll for them.
  std::string m;
  bool all_free = wait_until([&] {
    m = get(url, "/metrics");
    return metric(m, "gyre:kv_free_pages") == metric(m, "gyre:kv_total_pages");
  });
  EXPECT_TRUE(all_free) << m;
}

// Parses the SSE "data:" payloads of a raw stream (stops at [DONE]).
std::vector<json> sse_events(const std::string& raw, bool* done = nullptr) {
  std::vector<json> out;
  size_t pos = 0;
  if (done) *done = false;
  while ((pos = raw.find("data: ", pos)) != std::string::npos) {
    size_t end = raw.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string d = raw.substr(pos + 6, end - pos - 6);
    pos = end;
    if (d == "[DONE]") {
      if (done) *done = true;
      break;
    }
    out.push_back(json::parse(d));
  }
  return out;
}

// A streamed request whose callbacks only touch this shared state.
struct StreamState {
  std::mutex mu;
  std::string raw;
  std::promise<HttpResponse> done;
  std::function<void()> on_first;  // runs once, on the client's I/O thread, at the first bytes
  bool first = true;
};

std::shared_ptr<StreamState> start_stream(HttpClient& client, const std::string& url,
                                          const json& body,
                                          std::function<void()> on_first = nullptr) {
  auto st = std::make_shared<StreamState>();
  st->on_first = std::move(on_first);
  ClientRequest req;
  req.method = "POST";
  req.target = "/generate";
  req.timeout_s = kWaitS;
  req.body = body.dump();
  HttpClient::StreamCallbacks cb;
  cb.on_data = [st](std::string_view d) {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->raw.append(d);
      if (st->first) st->first = false, fn = st->on_first;
    }
    if (fn) fn();
  };
  cb.on_done = [st](HttpResponse&& r) { st->done.set_value(std::move(r)); };
  client.request_stream(Url::parse(url), req, cb);
  return st;
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
  auto s = test::run_command("timeout 120 " + test::gyre_bin() + " score --model " +
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
  bool done = false;
  std::vector<json> chunks = sse_events(raw, &done);
  ASSERT_GE(chunks.size(), 2u) << raw;
  EXPECT_TRUE(done) << raw;
  // Cumulative (SGLang default): each chunk's text extends the previous one.
  for (size_t i = 1; i < chunks.size(); ++i)
    EXPECT_EQ(
        chunks[i]["text"].get<std::string>().rfind(chunks[i - 1]["text"].get<std::string>(), 0),
        0u);
  EXPECT_EQ(chunks.back()["text"], plain["text"]);
  EXPECT_EQ(chunks.back()["output_ids"], plain["output_ids"]);
}

TEST_F(ServeE2E, AbortMidStreamReturnsPartialOutputAndFreesPages) {
  // The abort is sent the moment the first chunk arrives, but it still races the request's own end
  // (500 tokens of this tiny model take a fraction of a second). An attempt whose abort landed too
  // late finished by length; it is retried with a new rid (bounded), and must be rare.
  HttpClient client(1), control(1);
  const std::string u = url();
  int attempts = 0;
  bool aborted = false;
  for (; attempts < 5 && !aborted; ++attempts) {
    std::string rid = "long-" + std::to_string(attempts);
    json body = {{"input_ids", {1, 2, 3}},
                 {"rid", rid},
                 {"stream", true},
                 {"sampling_params", {{"max_new_tokens", 500}, {"ignore_eos", true}}}};
    auto st = start_stream(client, u, body, [&control, u, rid] {
      ClientRequest a;
      a.method = "POST";
      a.target = "/abort_request";
      a.body = json{{"rid", rid}}.dump();
      a.timeout_s = kWaitS;
      control.request(Url::parse(u), a, [](HttpResponse&&) {});
    });
    auto fut = st->done.get_future();
    ASSERT_EQ(fut.wait_for(std::chrono::duration<double>(kWaitS)), std::future_status::ready)
        << "stream did not end";
    HttpResponse resp = fut.get();
    ASSERT_EQ(resp.status, 200) << resp.error;
    std::lock_guard<std::mutex> lk(st->mu);
    bool done = false;
    auto ev = sse_events(st->raw, &done);
    EXPECT_TRUE(done) << "no [DONE] in " << st->raw.substr(0, 400);
    ASSERT_FALSE(ev.empty());
    const json& fin = ev.back();
    std::string type = fin["meta_info"]["finish_reason"]["type"];
    if (type == "length") {
      EXPECT_EQ(fin["output_ids"].size(), 500u);
      continue;  // the abort came too late
    }
    EXPECT_EQ(type, "abort") << fin.dump();
    EXPECT_GT(fin["output_ids"].size(), 0u);
    EXPECT_LT(fin["output_ids"].size(), 500u);
    EXPECT_EQ(fin["meta_info"]["id"], rid);
    aborted = true;
  }
  EXPECT_TRUE(aborted) << "no abort landed before the request's end in " << attempts << " tries";
  expect_no_leak(u);
}

TEST_F(ServeE2E, ClientDisconnectAbortsTheRequest) {
  // A raw socket (POSIX, so every read has a poll() deadline): send a long streaming request,
  // read until the first event arrived, close. Like the abort test, an attempt whose request
  // ended before the close is retried.
  const std::string u = url();
  double aborts0 = metric_of(u, "gyre:finished_requests_total", "reason=\"abort\"");
  double disc0 = metric_of(u, "gyre:client_disconnect_aborts_total");
  bool aborted = false;
  for (int attempt = 0; attempt < 5 && !aborted; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(server_->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string body =
        R"({"input_ids":[4,5],"stream":true,"sampling_params":{"max_new_tokens":500,"ignore_eos":true}})";
    std::string req =
        "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
    std::string got;
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(kWaitS);
    while (got.find("data: ") == std::string::npos && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, size_t(n));
    }
    ::close(fd);
    ASSERT_NE(got.find("data: "), std::string::npos) << "no event before the deadline: " << got;
    ASSERT_TRUE(wait_until([&] { return metric_of(u, "gyre:in_flight_requests") == 0; }))
        << "the disconnected request is still in flight";
    aborted = metric_of(u, "gyre:finished_requests_total", "reason=\"abort\"") > aborts0;
  }
  EXPECT_TRUE(aborted) << "the request always finished before the client went away";
  EXPECT_GE(metric_of(u, "gyre:client_disconnect_aborts_total"), disc0 + 1);
  expect_no_leak(u);
}

TEST_F(ServeE2E, BadInputGetsJsonErrors) {
  const std::string u = url();
  auto r = call(u, "POST", "/generate", "{\"input_ids\": [1, 2");
  EXPECT_EQ(r.status, 400);
  json e = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(e.is_object()) << r.body;
  EXPECT_EQ(e["error"]["code"], 400);
  r = call(u, "POST", "/generate", R"({"input_ids":[1],"sampling_params":{"temperature":"hot"}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "sampling_params.temperature") << r.body;
  // An unknown top-level field is ignored (as SGLang does); an unknown sampling key is refused (as
  // SGLang's SamplingParams(**dict) does), named with the known ones listed.
  r = call(u, "POST", "/generate",
           R"({"input_ids":[1],"frobnicate":3,"sampling_params":{"max_new_tokens":1}})");
  EXPECT_EQ(r.status, 200) << r.body;
  r = call(u, "POST", "/generate", R"({"input_ids":[1],"sampling_params":{"zz":1}})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "sampling_params.zz") << r.body;
  EXPECT_NE(r.body.find("known: max_new_tokens"), std::string::npos) << r.body;
  // A prompt over the model's 512-token context.
  r = call(u, "POST", "/generate", json{{"input_ids", std::vector<int>(600, 7)}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("context"), std::string::npos) << r.body;
  r = call(u, "POST", "/v1/chat/completions", R"({"messages":"hi"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "messages") << r.body;
  // The server is still fine.
  EXPECT_EQ(call(u, "GET", "/health").status, 200);
}

TEST(ServeE2EParse, ApiKeyAndBodyLimit) {
  auto s = start_serve({"--api-key", "sekret", "--max-body-bytes", "2048"});
  const std::string u = s->url();
  EXPECT_EQ(call(u, "GET", "/health").status, 401);
  EXPECT_EQ(call(u, "GET", "/health", "", {{"authorization", "Bearer nope"}}).status, 401);
  Headers ok = {{"authorization", "Bearer sekret"}};
  EXPECT_EQ(call(u, "GET", "/health", "", ok).status, 200);
  std::string big = json{{"text", std::string(4000, 'a')}}.dump();
  auto r = call(u, "POST", "/generate", big, ok);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(json::parse(r.body, nullptr, false)["error"]["code"], 413) << r.body;
  // curl's view: the status code, also when the key is missing.
  std::string code =
      curl(u + "/generate", R"({"input_ids":[1]})", "-o /dev/null -w '%{http_code}'");
  EXPECT_EQ(code, "401");
}

TEST_F(ServeE2E, HttpRolloutClientMatchesCurl) {
  HttpRolloutClientConfig cfg;
  cfg.url = url();
  cfg.request_timeout_s = kWaitS;
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
  auto r = test::run_command("cd " + node_dir + " && timeout 120 node openai_client.mjs " + url());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out << r.err;
}

TEST_F(ServeE2E, FiveHundredTwelveConcurrentStreams) {
  const int kN = 512;
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    int ok = 0, bad = 0;
    std::string first_error;
  };
  auto sh = std::make_shared<Shared>();
  HttpClient client(2, 1024);
  Url u = Url::parse(url());
  for (int i = 0; i < kN; ++i) {
    ClientRequest req;
    req.method = "POST";
    req.target = "/generate";
    req.timeout_s = 120;
    req.body = json{{"input_ids", {1 + i % 200, 7, 9}},
                    {"stream", true},
                    {"sampling_params", {{"max_new_tokens", 8}, {"ignore_eos", true}}}}
                   .dump();
    auto raw = std::make_shared<std::string>();
    HttpClient::StreamCallbacks cb;
    cb.on_data = [raw](std::string_view d) { raw->append(d); };
    cb.on_done = [sh, raw](HttpResponse&& r) {
      bool good = r.status == 200 && raw->find("data: [DONE]") != std::string::npos &&
                  raw->find("\"error\"") == std::string::npos &&
                  raw->find("\"length\"") != std::string::npos;
      std::lock_guard<std::mutex> lk(sh->mu);
      (good ? sh->ok : sh->bad)++;
      if (!good && sh->first_error.empty())
        sh->first_error = r.error + " " + std::to_string(r.status) + " " + raw->substr(0, 400);
      sh->cv.notify_all();
    };
    client.request_stream(u, req, cb);
  }
  {
    std::unique_lock<std::mutex> lk(sh->mu);
    bool all =
        sh->cv.wait_for(lk, std::chrono::seconds(150), [&] { return sh->ok + sh->bad == kN; });
    ASSERT_TRUE(all) << "only " << sh->ok + sh->bad << " of " << kN << " streams ended";
    EXPECT_EQ(sh->ok, kN) << sh->first_error;
    EXPECT_EQ(sh->bad, 0);
  }
  expect_no_leak(url());
}

TEST(RouterE2E, SpreadsLoadKeepsSessionsAndFailsOver) {
  auto w1 = start_serve();
  auto w2 = start_serve();
  test::ChildProcess router({test::gyre_bin(), "router", "--port", "0", "--policy", "round_robin",
                             "--worker-urls", w1->url(), w2->url(), "--health-check-interval-secs",
                             "0.5"});
  const std::string r = router.url();
  std::string gen =
      R"({"input_ids":[3,4,5],"sampling_params":{"max_new_tokens":4,"ignore_eos":true}})";
  ASSERT_TRUE(wait_until([&] {
    json ws = json::parse(get(r, "/workers"), nullptr, false);
    int healthy = 0;
    if (ws.is_object())
      for (const auto& w : ws["workers"]) healthy += w["is_healthy"].get<bool>();
    return healthy == 2;
  })) << "workers never became healthy: "
      << get(r, "/workers");
  auto served = [&](const test::ChildProcess& w) {
    return metric_of(w.url(), "sglang:num_requests_total");
  };
  for (int i = 0; i < 8; ++i) {
    json out = json::parse(curl(r + "/generate", gen));
    EXPECT_EQ(out["output_ids"].size(), 4u) << out.dump();
  }
  EXPECT_EQ(served(*w1), 4);
  EXPECT_EQ(served(*w2), 4);
  // Session affinity: one routing key always lands on one worker.
  for (int i = 0; i < 6; ++i) {
    auto resp = call(r, "POST", "/generate", gen, {{"X-SMG-Routing-Key", "sess-1"}});
    EXPECT_EQ(resp.status, 200) << resp.error << resp.body;
  }
  double a = served(*w1) - 4, b = served(*w2) - 4;
  EXPECT_TRUE((a == 6 && b == 0) || (a == 0 && b == 6)) << a << " " << b;
  // /abort_request is broadcast to every worker.
  auto ab = call(r, "POST", "/abort_request", R"({"rid":"nothing-by-this-name"})");
  EXPECT_EQ(ab.status, 200) << ab.body;
  EXPECT_EQ(json::parse(ab.body)["workers"], 2);
  // Kill one worker: requests keep succeeding through the other.
  w2->stop(SIGKILL);
  for (int i = 0; i < 6; ++i) {
    json out = json::parse(curl(r + "/generate", gen));
    EXPECT_EQ(out["output_ids"].size(), 4u) << out.dump();
  }
  std::string m = get(r, "/metrics");
  EXPECT_NE(m.find("sgl_router_worker_health{worker=\"" + w2->url() + "\"} 0"), std::string::npos)
      << m;
}

// Device / dtype flags are checked before the server starts: bf16 needs the GPU, and a CPU-only
// machine gets a clear message for --device cuda (exit code 2, nothing served).
TEST(ServeE2EParse, DeviceAndDtypeFlags) {
  const std::string model = test::source_path("tests/fixtures/models/qwen2_tiny");
  auto r = test::run_command("timeout 60 " + test::gyre_bin() + " serve --model-path " + model +
                             " --skip-tokenizer-init --port 0 --dtype bf16");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--dtype bf16 needs --device cuda"), std::string::npos) << r.err;
  r = test::run_command("timeout 60 " + test::gyre_bin() + " serve --model-path " + model +
                        " --skip-tokenizer-init --port 0 --kv-cache-dtype bf16");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("kv_cache_dtype bf16 needs the model on a CUDA device"), std::string::npos)
      << r.err;
  r = test::run_command("timeout 60 " + test::gyre_bin() + " serve --model-path " + model +
                        " --skip-tokenizer-init --port 0 --dtype fp4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;
  r = test::run_command("timeout 60 " + test::gyre_bin() + " serve --model-path " + model +
                        " --skip-tokenizer-init --port 0 --cuda-graph-max-bs -4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--cuda-graph-max-bs"), std::string::npos) << r.err;
}
