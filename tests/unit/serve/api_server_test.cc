// ApiServer over loopback (ephemeral ports) with the deterministic FakeEngine: native /generate
// (single, batch, stream, abort, disconnect), control routes, OpenAI routes, auth, limits and
// HTTP-level bad input (tests named *Parse* run under ASan in CI).
#include "gyre/serve/api_server.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/serve/http_client.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"
#include "unit/serve/fake_engine.h"
#include "unit/serve/tiny_tokenizer.h"

using namespace gyre;
using namespace gyre::serve;
using nlohmann::json;

namespace {

struct Fixture {
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  std::shared_ptr<test::FakeEngine> engine;
  std::unique_ptr<ApiServer> server;
  HttpClient client{1};
  Url url;
  std::vector<std::string> loaded;
  std::vector<WeightGroupInit> inits;            // with_weight_groups: what the routes passed on
  std::vector<DistributedWeightUpdate> updates;  // (the NCCL side runs in tests/gpu/rl)

  explicit Fixture(const std::string& api_key = "", uint64_t max_body = 1 << 20,
                   bool with_weight_groups = false) {
    std::string dir = test::write_tiny_tokenizer_dir();
    tok = tokenizer::Tokenizer::from_dir(dir);
    auto tmpl = std::make_shared<tokenizer::ChatTemplate>(tokenizer::ChatTemplate::from_dir(dir));
    engine = std::make_shared<test::FakeEngine>(tok);
    ServeConfig cfg;
    cfg.http.port = 0;
    cfg.http.api_key = api_key;
    cfg.http.max_body_bytes = max_body;
    cfg.served_model_name = "tiny";
    cfg.context_len = 512;
    cfg.vocab_size = 512;
    cfg.tool_call_parser = "qwen25";
    cfg.reasoning_parser = "qwen3";
    if (with_weight_groups) {
      cfg.weight_groups.init = [this](const WeightGroupInit& w) { inits.push_back(w); };
      cfg.weight_groups.destroy = [](const std::string& g) {
        if (g != "weight_update_group") GYRE_THROW(not_found, "no group named '{}'", g);
      };
      cfg.weight_groups.receive_and_load = [this](const DistributedWeightUpdate& u) {
        if (u.names[0] == "bogus") GYRE_THROW(invalid_argument, "'bogus' is not a parameter");
        updates.push_back(u);
      };
    }
    server = std::make_unique<ApiServer>(cfg, engine, tok, tmpl, [this](const std::string& d) {
      if (d == "/bad") GYRE_THROW(not_found, "no checkpoint in {}", d);
      loaded.push_back(d);
    });
    server->start();
    url = Url::parse("http://127.0.0.1:" + std::to_string(server->port()));
  }
  HttpResponse call(const std::string& method, const std::string& target,
                    const std::string& body = "", Headers h = {}) {
    ClientRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers = std::move(h);
    r.timeout_s = 20;
    return client.request_sync(url, r);
  }
  json post(const std::string& target, const json& body, int expect = 200) {
    auto r = call("POST", target, body.dump());
    EXPECT_EQ(r.status, expect) << r.error << r.body;
    return json::parse(r.body, nullptr, false);
  }
  // Streams and returns the "data:" payloads.
  std::vector<std::string> stream(const std::string& target, const json& body) {
    std::string raw;
    ClientRequest r;
    r.method = "POST";
    r.target = target;
    r.body = body.dump();
    r.timeout_s = 20;
    auto done = std::make_shared<std::promise<HttpResponse>>();
    HttpClient::StreamCallbacks cb;
    cb.on_data = [&raw](std::string_view d) { raw.append(d); };
    cb.on_done = [done](HttpResponse&& x) { done->set_value(std::move(x)); };
    client.request_stream(url, r, cb);
    auto resp = done->get_future().get();
    EXPECT_EQ(resp.status, 200) << resp.error;
    EXPECT_EQ(resp.header("content-type"), "text/event-stream");
    std::vector<std::string> events;
    size_t pos = 0;
    while ((pos = raw.find("data: ", pos)) != std::string::npos) {
      size_t end = raw.find("\n\n", pos);
      events.push_back(raw.substr(pos + 6, end - pos - 6));
      pos = end;
    }
    return events;
  }
};

}  // namespace

TEST(ApiServer, GenerateSingleAndBatch) {
  Fixture f;
  json r = f.post("/generate", {{"input_ids", {65, 66}},
                                {"sampling_params", {{"max_new_tokens", 3}}},
                                {"return_logprob", true}});
  EXPECT_EQ(r["output_ids"], json({67, 68, 69}));
  EXPECT_EQ(r["text"], "CDE");
  EXPECT_EQ(r["meta_info"]["finish_reason"], json({{"type", "length"}, {"length", 3}}));
  EXPECT_EQ(r["meta_info"]["output_token_logprobs"],
            json::parse("[[-0.125,67,null],[-0.25,68,null],[-0.375,69,null]]"));
  EXPECT_EQ(r["meta_info"]["prompt_tokens"], 2);
  EXPECT_EQ(r["meta_info"]["weight_version"], "0");
  json b = f.post("/generate",
                  {{"text", {"A", "B"}}, {"sampling_params", {{"max_new_tokens", 1}, {"n", 2}}}});
  ASSERT_TRUE(b.is_array());
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0]["text"], "B");
  EXPECT_EQ(b[1]["text"], "B");
  EXPECT_EQ(b[2]["text"], "C");
  EXPECT_NE(b[0]["meta_info"]["id"], b[1]["meta_info"]["id"]);
}

TEST(ApiServer, StreamIsCumulativeAndEndsWithDone) {
  Fixture f;
  json body = {{"input_ids", {65}},
               {"sampling_params", {{"max_new_tokens", 4}}},
               {"stream", true},
               {"return_logprob", true}};
  auto ev = f.stream("/generate", body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  json last = json::parse(ev[ev.size() - 2]);
  EXPECT_EQ(last["text"], "BCDE");
  EXPECT_EQ(last["meta_info"]["finish_reason"]["type"], "length");
  json first = json::parse(ev[0]);
  EXPECT_TRUE(first["meta_info"]["finish_reason"].is_null());
  EXPECT_EQ(first["text"], "B");
  json nonstream =
      f.post("/generate", {{"input_ids", {65}}, {"sampling_params", {{"max_new_tokens", 4}}}});
  EXPECT_EQ(nonstream["text"], last["text"]);
  // 4 streamed tokens in 4 chunks: one time-to-first-token, three inter-token latencies.
  std::string m = f.call("GET", "/metrics").body;
  EXPECT_NE(m.find("sglang:time_to_first_token_seconds_count{model_name=\"tiny\"} 1\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("sglang:inter_token_latency_seconds_count{model_name=\"tiny\"} 3\n"),
            std::string::npos)
      << m;
}

TEST(ApiServer, AbortReturnsPartialOutputWith200) {
  Fixture f;
  f.engine->pause();  // hold it so the abort lands mid-request
  std::thread t([&] {
    // Abort only once the request is in the engine (an abort before it would match nothing).
    for (int i = 0; i < 2000 && f.engine->active() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    f.post("/abort_request", {{"rid", "slow"}});
  });
  json r = f.post(
      "/generate",
      {{"input_ids", {65}}, {"rid", "slow"}, {"sampling_params", {{"max_new_tokens", 100}}}});
  t.join();
  EXPECT_EQ(r["meta_info"]["finish_reason"]["type"], "abort");
  EXPECT_EQ(r["meta_info"]["id"], "slow");
}

TEST(ApiServer, ClientDisconnectAbortsTheRequest) {
  Fixture f;
  f.engine->pause();
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket s(io);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), uint16_t(f.server->port())});
    std::string body = R"({"input_ids":[65],"rid":"gone","sampling_params":{"max_new_tokens":50}})";
    std::string req =
        "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    boost::asio::write(s, boost::asio::buffer(req));
    for (int i = 0; i < 2000 && f.engine->active() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(f.engine->active(), 1u);
  }  // closed
  for (int i = 0; i < 2000 && f.engine->active() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(f.engine->active(), 0u);
  EXPECT_TRUE(f.engine->aborted().count("gone"));
  for (int i = 0; i < 2000 && f.server->in_flight() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(f.server->in_flight(), 0);
}

TEST(ApiServer, ControlRoutes) {
  Fixture f;
  EXPECT_EQ(f.call("GET", "/health").status, 200);
  EXPECT_EQ(f.call("GET", "/health_generate").status, 200);
  json info = json::parse(f.call("GET", "/get_model_info").body);
  EXPECT_EQ(info["weight_version"], "0");
  EXPECT_TRUE(info["is_generation"].get<bool>());
  json si = json::parse(f.call("GET", "/server_info").body);
  EXPECT_EQ(si["context_length"], 512);
  EXPECT_EQ(si["internal_states"][0]["num_total_pages"], 64);
  json loads = json::parse(f.call("GET", "/v1/loads?include=core").body);
  EXPECT_EQ(loads["aggregate"]["total_reqs"], 0);
  EXPECT_EQ(loads["loads"][0]["num_total_reqs"], 0);
  EXPECT_EQ(f.call("GET", "/flush_cache").status, 200);
  // flush while a request runs -> 400
  f.engine->pause();
  auto h = f.client.request(f.url, {"POST", "/generate", {}, R"({"input_ids":[1],"rid":"busy"})"},
                            [](HttpResponse&&) {});
  for (int i = 0; i < 2000 && f.engine->active() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(f.call("GET", "/flush_cache").status, 400);
  json p = f.post("/pause_generation", json::object());
  EXPECT_EQ(p["status"], "ok");
  EXPECT_EQ(f.post("/continue_generation", json::object())["status"], "ok");
  json w = f.post("/update_weights_from_disk", {{"model_path", "/ckpt/1"}});
  EXPECT_TRUE(w["success"].get<bool>());
  ASSERT_EQ(f.loaded, std::vector<std::string>{"/ckpt/1"});
  EXPECT_EQ(json::parse(f.call("GET", "/get_weight_version").body)["weight_version"], "1");
  json bad = f.post("/update_weights_from_disk", {{"model_path", "/bad"}}, 400);
  EXPECT_FALSE(bad["success"].get<bool>());
  f.post("/update_weights_from_disk", {{"model_path", "/ckpt/2"}, {"weight_version", "step-2"}});
  EXPECT_EQ(json::parse(f.call("GET", "/get_weight_version").body)["weight_version"], "step-2");
  EXPECT_TRUE(f.post("/release_memory_occupation", json::object())["success"].get<bool>());
  EXPECT_TRUE(f.post("/resume_memory_occupation", {{"tags", {"weights"}}})["success"].get<bool>());
  f.post("/resume_memory_occupation", {{"tags", {"kv_cache", "cuda_graph"}}});
  json t = f.post("/tokenize", {{"prompt", "hello"}});
  EXPECT_EQ(f.post("/detokenize", {{"tokens", t["tokens"]}})["text"], "hello");
  std::string metrics = f.call("GET", "/metrics").body;
  EXPECT_NE(metrics.find("sglang:num_running_reqs"), std::string::npos);
  EXPECT_NE(metrics.find("sglang:e2e_request_latency_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.find("gyre:kv_free_pages"), std::string::npos);
}

TEST(ApiServer, WeightGroupRoutesParseSglangBodies) {
  // A server without the hooks (a CPU model) says so, and what to use instead.
  Fixture plain;
  json no = plain.post(
      "/init_weights_update_group",
      {{"master_address", "h"}, {"master_port", 1}, {"rank_offset", 1}, {"world_size", 2}}, 400);
  EXPECT_NE(no.dump().find("cannot join NCCL weight-update groups"), std::string::npos) << no;
  EXPECT_NE(no.dump().find("update_weights_from_disk"), std::string::npos);

  Fixture f("", 1 << 20, true);
  json ok = f.post("/init_weights_update_group", {{"master_address", "10.1.2.3"},
                                                  {"master_port", 29555},
                                                  {"rank_offset", 2},
                                                  {"world_size", 3},
                                                  {"group_name", "slime-pp_0"},
                                                  {"backend", "nccl"}});
  EXPECT_TRUE(ok["success"].get<bool>());
  ASSERT_EQ(f.inits.size(), 1u);
  EXPECT_EQ(f.inits[0].master_address, "10.1.2.3");
  EXPECT_EQ(f.inits[0].master_port, 29555);
  EXPECT_EQ(f.inits[0].rank_offset, 2);
  EXPECT_EQ(f.inits[0].world_size, 3);
  EXPECT_EQ(f.inits[0].group_name, "slime-pp_0");
  // Missing or out-of-range fields are named.
  json bad = f.post(
      "/init_weights_update_group",
      {{"master_address", "h"}, {"master_port", 1}, {"rank_offset", 0}, {"world_size", 2}}, 400);
  EXPECT_NE(bad.dump().find("rank_offset"), std::string::npos) << bad;

  json up = f.post("/update_weights_from_distributed",
                   {{"names", {"model.norm.weight", "lm_head.weight"}},
                    {"dtypes", {"bfloat16", "bfloat16"}},
                    {"shapes", {{64}, {512, 64}}},
                    {"group_name", "weight_update_group"},
                    {"flush_cache", false},
                    {"weight_version", "12"},
                    {"load_format", "flattened_bucket"}});
  EXPECT_TRUE(up["success"].get<bool>()) << up;
  ASSERT_EQ(f.updates.size(), 1u);
  EXPECT_TRUE(f.updates[0].flattened_bucket);
  EXPECT_EQ(f.updates[0].shapes[1], (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(json::parse(f.call("GET", "/get_weight_version").body)["weight_version"], "12");
  // Lists of different lengths, a bad shape, a refusal by the receiver: 400 with the reason.
  json lens =
      f.post("/update_weights_from_distributed",
             {{"names", {"a", "b"}}, {"dtypes", {"bfloat16"}}, {"shapes", {{1}, {2}}}}, 400);
  EXPECT_NE(lens.dump().find("2 names, 1 dtypes, 2 shapes"), std::string::npos) << lens;
  json shape = f.post("/update_weights_from_distributed",
                      {{"names", {"a"}}, {"dtypes", {"bfloat16"}}, {"shapes", {{"x"}}}}, 400);
  EXPECT_NE(shape.dump().find("shapes[0][0]"), std::string::npos) << shape;
  json refused = f.post("/update_weights_from_distributed",
                        {{"names", {"bogus"}}, {"dtypes", {"bfloat16"}}, {"shapes", {{1}}}}, 400);
  EXPECT_FALSE(refused["success"].get<bool>());
  EXPECT_NE(refused["message"].get<std::string>().find("'bogus' is not a parameter"),
            std::string::npos);
  EXPECT_EQ(json::parse(f.call("GET", "/get_weight_version").body)["weight_version"], "12");
  EXPECT_TRUE(
      f.post("/destroy_weights_update_group", {{"group_name", "weight_update_group"}})["success"]
          .get<bool>());
  EXPECT_FALSE(f.post("/destroy_weights_update_group", {{"group_name", "other"}}, 400)["success"]
                   .get<bool>());
}

TEST(ApiServerParse, HttpBadInputs) {
  Fixture f("", 4096);
  auto r = f.call("POST", "/generate", "{not json");
  EXPECT_EQ(r.status, 400);
  json e = json::parse(r.body);
  EXPECT_EQ(e["error"]["code"], 400);
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  r = f.call("POST", "/generate", R"({"input_ids":[1],"sampling_params":{"top_p":"x"}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "sampling_params.top_p");
  r = f.call("POST", "/generate", R"({"input_ids":[1],"sampling_params":{"max_new_tokens":600}})");
  EXPECT_EQ(r.status, 400);  // over the context
  EXPECT_NE(r.body.find("context length"), std::string::npos);
  r = f.call("POST", "/generate", R"({"input_ids":[600]})");
  EXPECT_EQ(r.status, 400);  // id out of the vocabulary
  r = f.call("POST", "/generate", std::string(5000, ' '));
  EXPECT_EQ(r.status, 413);
  r = f.call("GET", "/nope");
  EXPECT_EQ(r.status, 404);
  r = f.call("GET", "/generate");
  EXPECT_EQ(r.status, 405);
  r = f.call("POST", "/v1/chat/completions", "{}", {{"content-type", "text/plain"}});
  EXPECT_EQ(r.status, 400);
  // A malformed request line: 400 and the connection closes.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), uint16_t(f.server->port())});
  boost::asio::write(s, boost::asio::buffer(std::string("BLAH\r\n\r\n")));
  std::string got;
  boost::system::error_code ec;
  char buf[512];
  for (;;) {
    size_t n = s.read_some(boost::asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_NE(got.find("400"), std::string::npos);
}

// Over HTTP: an unknown sampling key on /generate is a 400 naming it (it used to be dropped,
// answering 200); unknown top-level fields pass on every route, as in SGLang.
TEST(ApiServerParse, GenerateRefusesUnknownSamplingKeys) {
  Fixture f;
  auto r = f.call("POST", "/generate", R"({"input_ids":[65],"sampling_params":{"max_tokens":2}})");
  EXPECT_EQ(r.status, 400) << r.body;
  json e = json::parse(r.body);
  EXPECT_EQ(e["error"]["param"], "sampling_params.max_tokens");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("known: max_new_tokens"),
            std::string::npos)
      << r.body;
  r = f.call("POST", "/generate",
             R"({"input_ids":[65],"x_vendor_field":1,"sampling_params":{"max_new_tokens":2}})");
  EXPECT_EQ(r.status, 200) << r.body;
  json c =
      f.post("/v1/completions",
             {{"prompt", "A"}, {"max_tokens", 2}, {"user", "u"}, {"x_vendor_field", {{"a", 1}}}});
  EXPECT_EQ(c["choices"][0]["text"], "BC");
  json ch = f.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "A"}}}},
                                            {"max_tokens", 1},
                                            {"user", "u"},
                                            {"x_vendor_field", true}});
  EXPECT_EQ(ch["object"], "chat.completion");
}

TEST(ApiServerParse, ApiKey) {
  Fixture f("sekret");
  EXPECT_EQ(f.call("GET", "/health").status, 401);
  EXPECT_EQ(f.call("GET", "/health", "", {{"authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(f.call("GET", "/health", "", {{"authorization", "Bearer sekret"}}).status, 200);
}

TEST(ApiServer, KeepAliveReusesOneConnection) {
  Fixture f;
  for (int i = 0; i < 20; ++i) ASSERT_EQ(f.call("GET", "/health").status, 200);
  EXPECT_EQ(f.client.open_connections(), 1);
}

TEST(ApiServer, OpenAiCompletionsAndChat) {
  Fixture f;
  json m = json::parse(f.call("GET", "/v1/models").body);
  EXPECT_EQ(m["data"][0]["id"], "tiny");
  EXPECT_EQ(f.call("GET", "/v1/models/other").status, 404);
  json c = f.post("/v1/completions",
                  {{"prompt", "A"}, {"max_tokens", 2}, {"logprobs", 1}, {"echo", true}});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "ABC");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["choices"][0]["logprobs"]["tokens"], json({"B", "C"}));
  EXPECT_EQ(c["usage"]["completion_tokens"], 2);

  // Chat with a scripted tool call: the engine "writes" the Hermes block, the server parses it.
  std::string out =
      "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>";
  f.engine->script = f.tok->encode(out, false);
  f.engine->script.push_back(506);
  json req = {{"model", "tiny"},
              {"messages", {{{"role", "user"}, {"content", "time?"}}}},
              {"tools", {{{"type", "function"}, {"function", {{"name", "get_time"}}}}}},
              {"max_tokens", 100}};
  json r = f.post("/v1/chat/completions", req);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(r["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_time");
  EXPECT_TRUE(r["choices"][0]["message"]["content"].is_null());
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  auto ev = f.stream("/v1/chat/completions", req);
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev.back(), "[DONE]");
  json usage = json::parse(ev[ev.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], int(f.engine->script.size()));
  EXPECT_EQ(json::parse(ev[0])["choices"][0]["delta"]["role"], "assistant");
  std::string name, finish;
  for (size_t i = 0; i + 2 < ev.size(); ++i) {
    json ch = json::parse(ev[i])["choices"][0];
    if (ch["delta"].contains("tool_calls")) name = ch["delta"]["tool_calls"][0]["function"]["name"];
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(name, "get_time");
  EXPECT_EQ(finish, "tool_calls");
}
