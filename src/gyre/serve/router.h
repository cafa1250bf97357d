// Router: `gyre router`, a drop-in for sgl-router / SMG in front of several `gyre serve` (or
// SGLang) workers (reference/sglang-api.md §3). Forwards /generate and /v1/* verbatim (streams
// relayed as they arrive), picks workers by policy (router_policy.h), manages workers
// (POST/GET /workers, GET/DELETE /workers/{id}, legacy /add_worker, /remove_worker,
// /list_workers), probes their /health periodically (a dead worker leaves the rotation after
// health_failure_threshold failures, or at once when its port refuses connections, and returns
// after health_success_threshold successes), retries failed attempts on another worker, fans
// /flush_cache, /abort_request (extension) and /v1/loads out to all workers, and serves
// Prometheus `sgl_router_*` metrics on /metrics.
//
// Invariants: a forwarded request counts in its worker's load from selection until its response
// completes; a stream is retried only before its first byte reached the client; when the client
// disconnects the upstream request is cancelled (closing the connection makes the worker abort).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/serve/http_server.h"
#include "gyre/serve/router_policy.h"

namespace gyre::serve {

struct RouterConfig {
  HttpServerConfig http;
  std::vector<std::string> worker_urls;
  PolicyConfig policy;
  double health_check_interval_s = 10;
  double health_check_timeout_s = 5;
  int health_failure_threshold = 3;
  int health_success_threshold = 2;
  bool disable_health_check = false;
  int max_attempts = 3;  // per request, each on a freshly selected worker
  double request_timeout_s = 1800;
  double eviction_interval_s = 60;
  double worker_startup_timeout_s = 600;  // a registered worker must answer /health by then
  std::string worker_api_key;             // sent as Bearer to workers that have no own key
  int client_threads = 2;
};

struct WorkerInfo {
  std::string id;  // UUID
  std::string url;
  bool healthy = false;
  bool registered = false;  // passed its first /health probe
  int64_t load = 0;         // requests in flight through this router
  int64_t processed = 0;
};

class Router {
 public:
  explicit Router(RouterConfig cfg);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  void start();  // listens, registers --worker-urls (probing them asynchronously)
  void stop();
  int port() const;
  // Registers a worker; returns its id. Throws gyre::Error(invalid_argument) for a bad URL or a
  // URL already registered.
  std::string add_worker(const std::string& url, const std::string& api_key = "");
  bool remove_worker(const std::string& id);
  std::vector<WorkerInfo> workers() const;

  struct State;

 private:
  std::shared_ptr<State> st_;
  std::unique_ptr<HttpServer> http_;
};

}  // namespace gyre::serve
