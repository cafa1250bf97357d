// Internal to the router: worker records and the shared state of router.cc / router_admin.cc.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "gyre/serve/http_client.h"
#include "gyre/serve/prometheus.h"
#include "gyre/serve/router.h"
#include "gyre/serve/task_thread.h"

namespace gyre::serve {

struct Worker {
  int32_t num = 0;  // stable small id for the policy
  std::string id;   // UUID (the API's worker id)
  std::string url;
  Url u;
  std::string api_key;
  double added_at = 0;
  std::atomic<bool> healthy{false}, registered{false}, removed{false};
  std::atomic<int64_t> load{0}, processed{0};
  int fails = 0, successes = 0;  // guarded by Router::State::mu
};

struct RouterMetrics {
  std::atomic<int64_t> requests{0}, errors{0}, retries{0}, cache_hits{0}, cache_misses{0};
  Histogram duration{latency_buckets()};
};

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string new_uuid();
bool looks_like_uuid(const std::string& s);
std::string routing_text(const HttpRequest& req);

struct Router::State : std::enable_shared_from_this<Router::State> {
  explicit State(RouterConfig c)
      : cfg(std::move(c)), policy(cfg.policy), client(std::max(1, cfg.client_threads)) {}

  RouterConfig cfg;
  RoutingPolicy policy;
  HttpClient client;
  RouterMetrics m;
  mutable std::mutex mu;
  std::vector<std::shared_ptr<Worker>> workers;
  std::map<std::string, int64_t> decisions;  // worker url -> routed requests
  int32_t next_num = 0;
  double last_full_probe = 0, last_eviction = 0;
  TaskThread timers;  // declared last: its thread stops before the rest is destroyed

  std::vector<std::shared_ptr<Worker>> snapshot() const;
  std::shared_ptr<Worker> find(int32_t num) const;
  // A probe or forward outcome; hard_failure (connection refused) takes the worker out at once.
  void mark(const std::shared_ptr<Worker>& w, bool ok, bool hard_failure);
  Headers upstream_headers(const HttpRequest& req, const Worker& w) const;
  void probe(const std::shared_ptr<Worker>& w);
  void schedule_probes();
  std::string add_worker(const std::string& url, const std::string& api_key);
  bool remove_worker(const std::string& id);

  void route(HttpRequest& req, const std::shared_ptr<Responder>& res);
  // Forwards to one worker chosen by policy (route_by_body: use the body's prompt as routing text).
  void forward(HttpRequest& req, const std::shared_ptr<Responder>& res, bool route_by_body);
  // Sends the request to every registered worker; `done` gets the responses in worker order.
  void fan_out(
      const HttpRequest& req,
      std::function<void(std::vector<std::shared_ptr<Worker>>, std::vector<HttpResponse>)> done);
  std::string metrics_text() const;
  nlohmann::json worker_json(const Worker& w) const;
};

}  // namespace gyre::serve
