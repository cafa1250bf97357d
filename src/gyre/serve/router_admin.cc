// Router routes (router.h): data-plane dispatch, worker management (current and legacy API),
// fan-out admin routes and Prometheus metrics.
#include "gyre/core/logging.h"
#include "gyre/serve/request_json.h"
#include "gyre/serve/router_state.h"

namespace gyre::serve {

using nlohmann::json;

json Router::State::worker_json(const Worker& w) const {
  return json{{"id", w.id},
              {"url", w.url},
              {"model_id", "default"},
              {"priority", 50},
              {"cost", 1.0},
              {"worker_type", "regular"},
              {"is_healthy", w.healthy.load()},
              {"load", w.load.load()},
              {"connection_mode", "http"},
              {"processed", w.processed.load()},
              {"job_status", w.registered ? "ready" : "pending"}};
}

void Router::State::fan_out(
    const HttpRequest& req,
    std::function<void(std::vector<std::shared_ptr<Worker>>, std::vector<HttpResponse>)> done) {
  std::vector<std::shared_ptr<Worker>> ws;
  for (const auto& w : snapshot())
    if (w->registered && !w->removed) ws.push_back(w);
  struct Acc {
    std::mutex mu;
    std::vector<HttpResponse> out;
    size_t left;
  };
  auto acc = std::make_shared<Acc>();
  acc->out.resize(ws.size());
  acc->left = ws.size();
  if (ws.empty()) return done(ws, {});
  for (size_t i = 0; i < ws.size(); ++i) {
    ClientRequest r;
    r.method = req.method;
    r.target = req.target;
    r.body = req.body;
    r.headers = upstream_headers(req, *ws[i]);
    r.timeout_s = 60;
    client.request(ws[i]->u, std::move(r), [acc, ws, i, done](HttpResponse&& resp) {
      bool last;
      {
        std::lock_guard<std::mutex> lk(acc->mu);
        acc->out[i] = std::move(resp);
        last = --acc->left == 0;
      }
      if (last) done(ws, std::move(acc->out));
    });
  }
}

std::string Router::State::metrics_text() const {
  std::string out;
  prom_metric(out, "sgl_router_requests_total", "counter", "Requests forwarded",
              double(m.requests.load()));
  prom_metric(out, "sgl_router_request_errors_total", "counter", "Requests that failed",
              double(m.errors.load()));
  prom_metric(out, "sgl_router_retries_total", "counter", "Retried attempts",
              double(m.retries.load()));
  prom_metric(out, "sgl_router_cache_hits_total", "counter", "Cache-aware prefix hits",
              double(m.cache_hits.load()));
  prom_metric(out, "sgl_router_cache_misses_total", "counter", "Cache-aware prefix misses",
              double(m.cache_misses.load()));
  auto ws = snapshot();
  int64_t active = 0, running = 0;
  for (const auto& w : ws) active += w->healthy ? 1 : 0, running += w->load;
  prom_metric(out, "sgl_router_active_workers", "gauge", "Healthy workers", double(active));
  prom_metric(out, "sgl_router_running_requests", "gauge", "Requests in flight", double(running));
  out +=
      "# HELP sgl_router_worker_health Worker health (1 healthy)\n"
      "# TYPE sgl_router_worker_health gauge\n";
  for (const auto& w : ws)
    out +=
        fmt::format("sgl_router_worker_health{{worker=\"{}\"}} {}\n", w->url, w->healthy ? 1 : 0);
  out +=
      "# HELP sgl_router_worker_load Requests in flight per worker\n"
      "# TYPE sgl_router_worker_load gauge\n";
  for (const auto& w : ws)
    out += fmt::format("sgl_router_worker_load{{worker=\"{}\"}} {}\n", w->url, w->load.load());
  out +=
      "# HELP sgl_router_processed_requests_total Requests completed per worker\n"
      "# TYPE sgl_router_processed_requests_total counter\n";
  for (const auto& w : ws)
    out += fmt::format("sgl_router_processed_requests_total{{worker=\"{}\"}} {}\n", w->url,
                       w->processed.load());
  out +=
      "# HELP sgl_router_policy_decisions_total Routing decisions\n"
      "# TYPE sgl_router_policy_decisions_total counter\n";
  {
    std::lock_guard<std::mutex> lk(mu);
    for (const auto& [url, n] : decisions)
      out += fmt::format("sgl_router_policy_decisions_total{{policy=\"{}\",worker=\"{}\"}} {}\n",
                         policy_name(policy.config().kind), url, n);
  }
  m.duration.render(out, "sgl_router_request_duration_seconds", "Forwarded request duration");
  return out;
}

void Router::State::route(HttpRequest& req, const std::shared_ptr<Responder>& res) {
  const std::string& p = req.path;
  const std::string& method = req.method;
  auto send_json = [&](int status, const json& j, Headers extra = {}) {
    res->send(status, dump_json(j), "application/json", std::move(extra));
  };
  if (p == "/generate" || p == "/v1/chat/completions" || p == "/v1/completions") {
    if (method != "POST" && method != "PUT")
      return res->send(405, json_error_body(405, p + " needs POST"));
    return forward(req, res, true);
  }
  if (p == "/health" || p == "/liveness") return res->send(200, "OK", "text/plain");
  if (p == "/readiness") {
    int64_t healthy = 0, total = 0;
    for (const auto& w : snapshot()) ++total, healthy += w->healthy ? 1 : 0;
    return send_json(healthy > 0 ? 200 : 503, json{{"status", healthy > 0 ? "ready" : "not_ready"},
                                                   {"healthy_workers", healthy},
                                                   {"total_workers", total}});
  }
  if (p == "/health_generate" || p == "/v1/models" || p.starts_with("/v1/models/") ||
      p == "/get_model_info" || p == "/model_info" || p == "/get_server_info" ||
      p == "/server_info" || p == "/get_weight_version" || p == "/tokenize" || p == "/detokenize")
    return forward(req, res, false);
  if (p == "/metrics") return res->send(200, metrics_text(), "text/plain; version=0.0.4");

  if (p == "/workers") {
    if (method == "GET") {
      json list = json::array();
      for (const auto& w : snapshot()) list.push_back(worker_json(*w));
      size_t n = list.size();
      return send_json(
          200, json{{"workers", std::move(list)},
                    {"total", n},
                    {"stats", {{"prefill_count", 0}, {"decode_count", 0}, {"regular_count", n}}}});
    }
    if (method != "POST") return res->send(405, json_error_body(405, "/workers: GET or POST"));
    json b = parse_json_object(req.body);
    auto url = opt_string(b, "url", "url");
    if (!url) bad_field("url", "is required (http://host:port of a worker)");
    std::string type = opt_string(b, "worker_type", "worker_type").value_or("regular");
    if (type != "regular")
      bad_field("worker_type", "only \"regular\" workers are supported (no PD disaggregation)");
    std::string id = add_worker(*url, opt_string(b, "api_key", "api_key").value_or(""));
    return send_json(202,
                     json{{"status", "accepted"},
                          {"worker_id", id},
                          {"url", *url},
                          {"location", "/workers/" + id},
                          {"message", "Worker registration accepted; probing /health"}},
                     {{"Location", "/workers/" + id}});
  }
  if (p.starts_with("/workers/")) {
    std::string id = p.substr(9);
    if (!looks_like_uuid(id))
      return res->send(400, json_error_body(400, "worker id '" + id + "' is not a UUID"));
    if (method == "DELETE") {
      if (!remove_worker(id))
        return send_json(404, json{{"error", "worker not found"}, {"code", "WORKER_NOT_FOUND"}});
      return send_json(202, json{{"status", "accepted"}, {"worker_id", id}});
    }
    for (const auto& w : snapshot())
      if (w->id == id) return send_json(200, worker_json(*w));
    return send_json(404, json{{"error", "worker not found"}, {"code", "WORKER_NOT_FOUND"}});
  }
  // Legacy (sglang_router <= 0.2.1) management routes.
  if (p == "/add_worker" || p == "/remove_worker") {
    auto url = req.query_param("url");
    if (!url) return res->send(400, "missing ?url=", "text/plain");
    if (p == "/add_worker") {
      try {
        add_worker(*url, req.query_param("api_key").value_or(""));
      } catch (const Error& e) {
        return res->send(400, e.what(), "text/plain");
      }
      return res->send(200, "Successfully added worker: " + *url, "text/plain");
    }
    std::string norm = Url::parse(*url).origin() + Url::parse(*url).path;
    for (const auto& w : snapshot())
      if (w->url == norm) {
        remove_worker(w->id);
        return res->send(200, "Successfully removed worker: " + *url, "text/plain");
      }
    return res->send(400, "worker not found: " + *url, "text/plain");
  }
  if (p == "/list_workers") {
    json urls = json::array();
    for (const auto& w : snapshot()) urls.push_back(w->url);
    return send_json(200, json{{"urls", urls}});
  }
  if (p == "/flush_cache") {
    return fan_out(
        req, [res](std::vector<std::shared_ptr<Worker>> ws, std::vector<HttpResponse> rs) {
          json failed = json::array();
          for (size_t i = 0; i < ws.size(); ++i)
            if (!rs[i].ok())
              failed.push_back({{"worker", ws[i]->url},
                                {"error", rs[i].error.empty() ? rs[i].body : rs[i].error}});
          size_t ok = ws.size() - failed.size();
          json j{{"status", failed.empty() ? "success" : "partial_success"},
                 {"message", fmt::format("flushed {} of {} workers", ok, ws.size())},
                 {"workers_flushed", ok},
                 {"total_http_workers", ws.size()},
                 {"total_workers", ws.size()}};
          if (!failed.empty()) j["failed"] = failed;
          res->send(failed.empty() ? 200 : 206, dump_json(j));
        });
  }
  if (p == "/abort_request" || p == "/pause_generation" || p == "/continue_generation") {
    // Extension: SMG has no such routes; broadcasting them lets slime-style callers address the
    // router like one engine.
    return fan_out(req,
                   [res](std::vector<std::shared_ptr<Worker>> ws, std::vector<HttpResponse> rs) {
                     json failed = json::array();
                     for (size_t i = 0; i < ws.size(); ++i)
                       if (!rs[i].ok()) failed.push_back(ws[i]->url);
                     res->send(failed.empty() ? 200 : 502,
                               dump_json(json{{"workers", ws.size()}, {"failed", failed}}));
                   });
  }
  if (p == "/v1/loads" || p == "/get_loads") {
    return fan_out(req,
                   [res](std::vector<std::shared_ptr<Worker>> ws, std::vector<HttpResponse> rs) {
                     json loads = json::array();
                     size_t ok = 0;
                     for (size_t i = 0; i < ws.size(); ++i) {
                       json l = -1;
                       if (rs[i].ok()) {
                         auto j = json::parse(rs[i].body, nullptr, false);
                         if (!j.is_discarded()) l = j, ++ok;
                       }
                       loads.push_back({{"worker", ws[i]->url}, {"load", l}});
                     }
                     res->send(200, dump_json(json{{"loads", loads},
                                                   {"total_workers", ws.size()},
                                                   {"successful", ok},
                                                   {"failed", ws.size() - ok}}));
                   });
  }
  res->send(404, json_error_body(404, fmt::format("no route for {} {}", method, p)));
}

}  // namespace gyre::serve
