// Router: radix tree and policies in isolation, then a Router over two loopback ApiServers with
// FakeEngines (spreading, affinity, failover, worker management), and the HTTP rollout client.
#include "gyre/serve/router.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/serve/api_server.h"
#include "gyre/serve/http_client.h"
#include "gyre/serve/http_rollout_client.h"
#include "gyre/serve/task_thread.h"
#include "unit/serve/fake_engine.h"

using namespace gyre;
using namespace gyre::serve;
using nlohmann::json;

TEST(RadixTree, PrefixMatchAndTenants) {
  ApproxRadixTree t;
  t.insert("hello world", 0);
  t.insert("hello there", 1);
  auto m = t.prefix_match("hello world!");
  EXPECT_EQ(m.matched, 11u);
  EXPECT_EQ(m.tenant, 0);
  m = t.prefix_match("hello th");
  EXPECT_EQ(m.matched, 8u);
  EXPECT_EQ(m.tenant, 1);
  m = t.prefix_match("hello", {1});  // only worker 1 allowed
  EXPECT_EQ(m.tenant, 1);
  EXPECT_EQ(t.tenant_size(0), 11u);
  EXPECT_EQ(t.tenant_size(1), 11u);
  t.remove_tenant(0);
  EXPECT_EQ(t.prefix_match("hello world").matched, 6u);  // "world" gone with worker 0
  EXPECT_EQ(t.tenant_size(0), 0u);
  t.insert("abcdefgh", 2);
  t.insert("abcdxyz", 2);
  t.evict(4);
  EXPECT_LE(t.tenant_size(2), 4u);
  EXPECT_LE(t.tenant_size(1), 4u);
  EXPECT_EQ(t.prefix_match("abcdefgh", {2}).tenant == 2, t.tenant_size(2) > 0);
}

TEST(RoutingPolicy, CacheAwareFollowsPrefixUnlessImbalanced) {
  PolicyConfig cfg;
  cfg.kind = PolicyKind::cache_aware;
  RoutingPolicy p(cfg);
  std::vector<Candidate> ws = {{0, "http://a:1", 0}, {1, "http://b:1", 0}};
  int32_t first = p.select(ws, "system prompt: you are helpful. question 1", "");
  bool hit = false;
  int32_t again = p.select(ws, "system prompt: you are helpful. question 2", "", &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(again, first);
  // Imbalance (abs > 10 and rel > 1.2): the least-loaded worker wins despite the prefix.
  ws[size_t(first)].load = 30;
  ws[size_t(1 - first)].load = 5;
  EXPECT_EQ(p.select(ws, "system prompt: you are helpful. question 3", "", &hit), 1 - first);
  EXPECT_FALSE(hit);
}

TEST(RoutingPolicy, HashingIsStickyAndRoundRobinAlternates) {
  PolicyConfig cfg;
  cfg.kind = PolicyKind::round_robin;
  RoutingPolicy p(cfg);
  std::vector<Candidate> ws = {{0, "http://a:1", 0}, {1, "http://b:1", 0}, {2, "http://c:1", 0}};
  std::map<int32_t, int> seen;
  for (int i = 0; i < 30; ++i) seen[p.select(ws, "", "")]++;
  EXPECT_EQ(seen[0], 10);
  EXPECT_EQ(seen[1], 10);
  int32_t w = p.select(ws, "", "session-42");
  for (int i = 0; i < 10; ++i) EXPECT_EQ(p.select(ws, "", "session-42"), w);
  // Removing another worker does not move the key.
  std::vector<Candidate> fewer;
  for (auto& c : ws)
    if (c.id == w || fewer.empty()) fewer.push_back(c);
  EXPECT_EQ(p.select(fewer, "", "session-42"), w);
  // Keys spread over workers.
  std::map<int32_t, int> spread;
  for (int i = 0; i < 300; ++i) spread[p.select(ws, "", "k" + std::to_string(i))]++;
  for (auto& [id, n] : spread) EXPECT_GT(n, 40) << id;
  EXPECT_THROW(parse_policy("fastest"), Error);
}

namespace {

struct Worker {
  std::shared_ptr<test::FakeEngine> engine = std::make_shared<test::FakeEngine>();
  std::unique_ptr<ApiServer> server;
  std::vector<std::string> loaded;
  Worker() { start(0); }
  // (Re)starts the HTTP server on `port` (0: a fresh ephemeral one) over the same engine.
  void start(int port) {
    server.reset();
    ServeConfig cfg;
    cfg.http.port = port;
    cfg.context_len = 512;
    cfg.vocab_size = 512;
    server = std::make_unique<ApiServer>(cfg, engine, nullptr, nullptr,
                                         [this](const std::string& d) { loaded.push_back(d); });
    server->start();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server->port()); }
};

HttpResponse call(HttpClient& c, int port, const std::string& method, const std::string& target,
                  const std::string& body = "", Headers h = {}) {
  ClientRequest r;
  r.method = method;
  r.target = target;
  r.body = body;
  r.headers = std::move(h);
  r.timeout_s = 20;
  return c.request_sync(Url::parse("http://127.0.0.1:" + std::to_string(port)), r);
}

void wait_healthy(Router& r, size_t n) {
  for (int i = 0; i < 3000; ++i) {  // 30 s: generous for a loaded CI machine
    size_t h = 0;
    for (auto& w : r.workers()) h += w.healthy;
    if (h == n) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL() << "workers did not become healthy";
}

}  // namespace

TEST(Router, SpreadsAffinityFailoverAndWorkers) {
  Worker a, b;
  RouterConfig cfg;
  cfg.http.port = 0;
  cfg.worker_urls = {a.url(), b.url()};
  cfg.policy.kind = PolicyKind::round_robin;
  cfg.health_check_interval_s = 0.2;
  Router router(cfg);
  router.start();
  wait_healthy(router, 2);
  HttpClient c(1);
  int port = router.port();
  for (int i = 0; i < 10; ++i) {
    auto r = call(c, port, "POST", "/generate",
                  R"({"input_ids":[65],"sampling_params":{"max_new_tokens":2}})");
    ASSERT_EQ(r.status, 200) << r.error << r.body;
    EXPECT_EQ(json::parse(r.body)["output_ids"], json({66, 67}));
  }
  EXPECT_EQ(a.engine->submitted.load(), 5);
  EXPECT_EQ(b.engine->submitted.load(), 5);
  // Session affinity: one routing key, one worker.
  int a0 = a.engine->submitted, b0 = b.engine->submitted;
  for (int i = 0; i < 6; ++i)
    call(c, port, "POST", "/generate",
         R"({"input_ids":[65],"sampling_params":{"max_new_tokens":1}})",
         {{"x-smg-routing-key", "session-7"}});
  EXPECT_TRUE((a.engine->submitted - a0 == 6) != (b.engine->submitted - b0 == 6));
  // Streams are relayed.
  auto s = call(c, port, "POST", "/generate",
                R"({"input_ids":[65],"stream":true,"sampling_params":{"max_new_tokens":2}})");
  EXPECT_NE(s.body.find("data: [DONE]"), std::string::npos);
  // Workers API.
  json ws = json::parse(call(c, port, "GET", "/workers").body);
  ASSERT_EQ(ws["total"], 2);
  EXPECT_EQ(call(c, port, "DELETE", "/workers/not-a-uuid").status, 400);
  EXPECT_EQ(call(c, port, "DELETE", "/workers/00000000-0000-4000-8000-000000000000").status, 404);
  // /abort_request is broadcast to every worker.
  auto ab = call(c, port, "POST", "/abort_request", R"({"rid":"everywhere"})");
  EXPECT_EQ(ab.status, 200) << ab.body;
  EXPECT_EQ(json::parse(ab.body)["workers"], 2);
  EXPECT_TRUE(a.engine->aborted().count("everywhere"));
  EXPECT_TRUE(b.engine->aborted().count("everywhere"));
  // Failover: kill worker b; requests keep succeeding on a.
  int b_port = b.server->port();
  b.server->stop();
  for (int i = 0; i < 6; ++i) {
    auto r = call(c, port, "POST", "/generate",
                  R"({"input_ids":[65],"sampling_params":{"max_new_tokens":1}})");
    EXPECT_EQ(r.status, 200) << r.body;
  }
  bool b_healthy = true;
  for (auto& w : router.workers())
    if (w.url == b.url()) b_healthy = w.healthy;
  EXPECT_FALSE(b_healthy);
  // Recovery: b comes back on its port; the health check puts it back into the rotation.
  b.start(b_port);
  wait_healthy(router, 2);
  int b_before = b.engine->submitted;
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(call(c, port, "POST", "/generate",
                   R"({"input_ids":[65],"sampling_params":{"max_new_tokens":1}})")
                  .status,
              200);
  EXPECT_EQ(b.engine->submitted - b_before, 2);
  // Remove and re-add through the API.
  std::string bid;
  for (auto& w : ws["workers"])
    if (w["url"] == b.url()) bid = w["id"];
  EXPECT_EQ(call(c, port, "DELETE", "/workers/" + bid).status, 202);
  EXPECT_EQ(router.workers().size(), 1u);
  auto added = call(c, port, "POST", "/workers", json{{"url", b.url()}}.dump());
  EXPECT_EQ(added.status, 202);
  EXPECT_EQ(json::parse(added.body)["location"],
            "/workers/" + json::parse(added.body)["worker_id"].get<std::string>());
  EXPECT_EQ(call(c, port, "POST", "/workers", json{{"url", "ftp://x"}}.dump()).status, 400);
  std::string m = call(c, port, "GET", "/metrics").body;
  EXPECT_NE(m.find("sgl_router_requests_total"), std::string::npos);
  EXPECT_NE(m.find("sgl_router_retries_total"), std::string::npos);
  router.stop();
}

TEST(HttpRolloutClient, BehavesLikeTheEngine) {
  Worker w;
  HttpRolloutClientConfig cfg;
  cfg.url = w.url();
  cfg.request_timeout_s = 20;  // every wait below is bounded by this
  HttpRolloutClient client(cfg);
  infer::GenerateRequest req;
  req.input_ids = {65, 66};
  req.sampling.max_new_tokens = 3;
  req.return_logprob = true;
  req.rid = "x";
  infer::GenerateResult r = client.generate(req).get();
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.rid, "x");
  EXPECT_EQ(r.output_ids, (std::vector<int32_t>{67, 68, 69}));
  EXPECT_EQ(r.output_logprobs, (std::vector<float>{-0.125f, -0.25f, -0.375f}));
  EXPECT_EQ(r.finish.type, infer::FinishType::length);
  EXPECT_EQ(r.prompt_tokens, 2);
  EXPECT_EQ(r.completion_tokens, 3);
  // n > 1: n results with their index, like the engine.
  req.sampling.n = 2;
  std::promise<void> both;
  std::atomic<int> got{0};
  std::vector<int32_t> idx(2, -1);
  client.generate(req, [&](infer::GenerateResult&& x) {
    idx[size_t(x.index)] = x.index;
    if (++got == 2) both.set_value();
  });
  ASSERT_EQ(both.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  // A bad request comes back as an error result, not an exception.
  infer::GenerateRequest bad;
  bad.input_ids = {9999};
  auto e = client.generate(bad).get();
  EXPECT_FALSE(e.error.empty());
  EXPECT_EQ(e.finish.type, infer::FinishType::abort);
  EXPECT_EQ(client.weight_version(), 0);
  EXPECT_TRUE(client.flush_cache());
  EXPECT_EQ(client.sync_weights(nullptr, "/ckpt/3"), 1);
  EXPECT_EQ(w.loaded, std::vector<std::string>{"/ckpt/3"});
  client.pause();
  client.resume();
  client.abort_all();
  // Unreachable server: the result carries the transport error.
  HttpRolloutClientConfig dead;
  dead.url = "http://127.0.0.1:1";
  dead.max_retries = 1;
  dead.retry_backoff_s = 0.01;
  HttpRolloutClient d(dead);
  req.sampling.n = 1;  // the future form expects one result
  auto de = d.generate(req).get();
  EXPECT_NE(de.error.find("connect"), std::string::npos);
}

TEST(HttpRolloutClientParse, BadReplies) {
  EXPECT_THROW(parse_rollout_response("{}", "r"), Error);
  EXPECT_THROW(parse_rollout_response("nope", "r"), Error);
  EXPECT_THROW(
      parse_rollout_response(
          R"({"output_ids":[1],"meta_info":{"output_token_logprobs":[[0.1,2,null]]}})", "r"),
      Error);
  EXPECT_THROW(parse_rollout_response(R"({"meta_info":{"finish_reason":{"type":"weird"}}})", "r"),
               Error);
  auto r = parse_rollout_response(
      R"({"text":"a","output_ids":[3],"meta_info":{"id":"q","finish_reason":{"type":"stop","matched":"</s>"},
          "weight_version":"12","output_token_logprobs":[[-1.5,3,null]]}})",
      "r");
  EXPECT_EQ(r.rid, "q");
  EXPECT_EQ(*r.finish.matched_str, "</s>");
  EXPECT_EQ(r.weight_version, 12);
  EXPECT_EQ(r.output_logprobs, std::vector<float>{-1.5f});
  json body = json::parse(rollout_request_body(infer::GenerateRequest{}));
  EXPECT_TRUE(body.contains("sampling_params"));
  EXPECT_EQ(body["sampling_params"]["max_new_tokens"], 128);
}

// Callbacks own what owns the client, so the client can be torn down from its own threads: a
// generate callback that destroys the HttpRolloutClient, and a TaskThread task that drops the last
// reference to the TaskThread's owner. Neither may join its own thread (std::terminate) or hang.
TEST(HttpRolloutClient, DestroyedFromItsOwnCallback) {
  Worker w;
  HttpRolloutClientConfig cfg;
  cfg.url = w.url();
  cfg.request_timeout_s = 20;
  auto client = std::make_shared<std::unique_ptr<HttpRolloutClient>>(
      std::make_unique<HttpRolloutClient>(cfg));
  infer::GenerateRequest req;
  req.input_ids = {65};
  req.sampling.max_new_tokens = 1;
  auto done = std::make_shared<std::promise<std::string>>();
  (*client)->generate(req, [client, done](infer::GenerateResult&& r) {
    client->reset();  // on the client's I/O thread
    done->set_value(r.error);
  });
  auto f = done->get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(f.get(), "");
}

TEST(TaskThread, OwnerReleasedByItsOwnTask) {
  struct Owner {
    TaskThread tasks;
  };
  auto ran = std::make_shared<std::promise<void>>();
  {
    auto owner = std::make_shared<Owner>();
    owner->tasks.post_after(0.01, [owner, ran] { ran->set_value(); });
    // The task now holds the only reference; it is released on the task thread.
  }
  ASSERT_EQ(ran->get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
}
