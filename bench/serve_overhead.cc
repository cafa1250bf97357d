// Serving overhead: small /generate requests (4 prompt tokens, 1 output token, greedy) on the
// qwen3_tiny fixture, one at a time, (a) submitted to the in-process engine, (b) over HTTP to the
// API server (keep-alive), (c) through the router in front of it. Reports p50/p99 latency and
// requests/s of each, the HTTP overhead per request (b - a, goal <= 100 us) and the router's added
// latency (c - b, goal <= 200 us); then `wrk` on /health (goal >= 20k req/s on 2 cores).
// One JSON line per figure. Usage: bench_serve_overhead [requests=2000] [wrk_seconds=5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <regex>
#include <string>
#include <vector>

#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/serve/api_server.h"
#include "gyre/serve/http_client.h"
#include "gyre/serve/router.h"

using namespace gyre;

namespace {

struct Stats {
  double p50_us, p99_us, rps;
};

Stats summarize(std::vector<double> lat_s, double wall_s) {
  std::sort(lat_s.begin(), lat_s.end());
  auto q = [&](double p) { return lat_s[size_t(p * double(lat_s.size() - 1))] * 1e6; };
  return {q(0.5), q(0.99), double(lat_s.size()) / wall_s};
}

infer::GenerateRequest small_request(int i) {
  infer::GenerateRequest r;
  r.input_ids = {1 + i % 100, 2, 3, 4};
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = 1;
  r.sampling.ignore_eos = true;
  return r;
}

Stats run_inproc(infer::Engine& engine, int n) {
  std::vector<double> lat;
  Timer wall;
  for (int i = 0; i < n; ++i) {
    std::promise<void> done;
    infer::RequestCallbacks cb;
    cb.on_done = [&](infer::GenerateResult&&) { done.set_value(); };
    Timer t;
    engine.submit(small_request(i), std::move(cb));
    done.get_future().wait();
    lat.push_back(t.elapsed());
  }
  return summarize(lat, wall.elapsed());
}

Stats run_http(int port, int n) {
  serve::HttpClient client(1);
  serve::Url url = serve::Url::parse("http://127.0.0.1:" + std::to_string(port));
  std::vector<double> lat;
  Timer wall;
  for (int i = 0; i < n; ++i) {
    serve::ClientRequest r;
    r.method = "POST";
    r.target = "/generate";
    r.body = "{\"input_ids\":[" + std::to_string(1 + i % 100) +
             ",2,3,4],\"sampling_params\":{\"temperature\":0,\"max_new_tokens\":1,"
             "\"ignore_eos\":true}}";
    Timer t;
    auto resp = client.request_sync(url, r);
    lat.push_back(t.elapsed());
    if (resp.status != 200) {
      std::fprintf(stderr, "request failed: %d %s %s\n", resp.status, resp.error.c_str(),
                   resp.body.c_str());
      std::exit(1);
    }
  }
  return summarize(lat, wall.elapsed());
}

void print(const char* name, const Stats& s) {
  std::printf(
      "{\"bench\":\"serve_overhead\",\"path\":\"%s\",\"p50_us\":%.1f,\"p99_us\":%.1f,"
      "\"req_per_s\":%.0f}\n",
      name, s.p50_us, s.p99_us, s.rps);
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 2000;
  int wrk_s = argc > 2 ? std::atoi(argv[2]) : 5;
  std::string model_dir = std::string(GYRE_SOURCE_DIR) + "/tests/fixtures/models/qwen3_tiny";
  auto model = model::CausalLM::load(model_dir);
  infer::EngineConfig ec;
  ec.num_pages = 1024;
  auto engine = std::make_shared<infer::Engine>(*model, nullptr, ec);
  engine->start();

  serve::ServeConfig sc;
  sc.http.port = 0;
  sc.context_len = engine->config().context_len;
  sc.vocab_size = model->config().vocab_size;
  serve::ApiServer server(sc, engine, nullptr, nullptr, nullptr);
  server.start();
  serve::RouterConfig rc;
  rc.http.port = 0;
  rc.worker_urls = {"http://127.0.0.1:" + std::to_string(server.port())};
  rc.policy.kind = serve::PolicyKind::round_robin;
  serve::Router router(rc);
  router.start();
  for (int i = 0; i < 200 && !(router.workers().size() == 1 && router.workers()[0].healthy); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));

  run_inproc(*engine, n / 10);  // warm up
  run_http(server.port(), n / 10);
  Stats a = run_inproc(*engine, n);
  Stats b = run_http(server.port(), n);
  Stats c = run_http(router.port(), n);
  print("in_process", a);
  print("http", b);
  print("router", c);
  std::printf(
      "{\"bench\":\"serve_overhead\",\"figure\":\"http_overhead_us_p50\",\"value\":%.1f,"
      "\"goal\":100}\n",
      b.p50_us - a.p50_us);
  std::printf(
      "{\"bench\":\"serve_overhead\",\"figure\":\"router_added_us_p50\",\"value\":%.1f,"
      "\"goal\":200}\n",
      c.p50_us - b.p50_us);

  // wrk on /health: the server's raw request rate (keep-alive, 64 connections, 2 threads).
  std::string cmd = "wrk -t2 -c64 -d" + std::to_string(wrk_s) +
                    "s http://127.0.0.1:" + std::to_string(server.port()) + "/health 2>&1";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  std::smatch m;
  if (std::regex_search(out, m, std::regex("Requests/sec:\\s+([0-9.]+)")))
    std::printf(
        "{\"bench\":\"serve_overhead\",\"figure\":\"wrk_health_req_per_s\",\"value\":%s,"
        "\"goal\":20000}\n",
        m[1].str().c_str());
  else
    std::printf(
        "{\"bench\":\"serve_overhead\",\"figure\":\"wrk_health_req_per_s\",\"error\":\"wrk "
        "unavailable or failed\"}\n");
  router.stop();
  server.stop();
  engine->stop();
  return 0;
}
