// Router (router.h): worker registry, health probes, request forwarding with retries and stream
// relay. Management and fan-out routes are in router_admin.cc.
#include "gyre/serve/router.h"

#include <random>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/serve/request_json.h"
#include "gyre/serve/router_state.h"

namespace gyre::serve {

std::string new_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffull) | 0x4000ull;              // version 4
  b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull;  // RFC 4122 variant
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", uint32_t(a >> 32),
                     uint32_t((a >> 16) & 0xffff), uint32_t(a & 0xffff), uint32_t(b >> 48),
                     b & 0xffffffffffffull);
}

bool looks_like_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::string routing_text(const HttpRequest& req) {
  // SMG: /generate routes on text, else prompt, else input_ids as decimal strings joined by
  // spaces; chat on the concatenated message texts. A body that is not JSON routes on nothing
  // (the worker will answer 400).
  auto j = nlohmann::json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return {};
  auto text_of = [](const nlohmann::json& v) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_array() && !v.empty() && v[0].is_string()) return v[0].get<std::string>();
    if (v.is_array() && !v.empty()) {
      const nlohmann::json& ids = v[0].is_array() ? v[0] : v;
      std::string s;
      for (const auto& t : ids) {
        if (!t.is_number_integer()) break;
        if (!s.empty()) s += ' ';
        s += std::to_string(t.get<int64_t>());
      }
      return s;
    }
    return {};
  };
  if (j.contains("text")) return text_of(j["text"]);
  if (j.contains("prompt")) return text_of(j["prompt"]);
  if (j.contains("input_ids")) return text_of(j["input_ids"]);
  if (j.contains("messages") && j["messages"].is_array()) {
    std::string s;
    for (const auto& m : j["messages"])
      if (m.is_object() && m.contains("content") && m["content"].is_string())
        s += m["content"].get<std::string>();
    return s;
  }
  return {};
}

std::vector<std::shared_ptr<Worker>> Router::State::snapshot() const {
  std::lock_guard<std::mutex> lk(mu);
  return workers;
}

std::shared_ptr<Worker> Router::State::find(int32_t num) const {
  std::lock_guard<std::mutex> lk(mu);
  for (const auto& w : workers)
    if (w->num == num) return w;
  return nullptr;
}

void Router::State::mark(const std::shared_ptr<Worker>& w, bool ok, bool hard_failure) {
  std::lock_guard<std::mutex> lk(mu);
  if (ok) {
    w->fails = 0;
    w->successes++;
    if (!w->registered) {
      w->registered = true;
      w->healthy = true;
      log::info("router: worker {} ({}) is up", w->url, w->id);
    } else if (!w->healthy && w->successes >= cfg.health_success_threshold) {
      w->healthy = true;
      log::info("router: worker {} is healthy again", w->url);
    }
  } else {
    w->successes = 0;
    w->fails++;
    if (w->healthy && (hard_failure || w->fails >= cfg.health_failure_threshold)) {
      w->healthy = false;
      log::warn("router: worker {} marked unhealthy", w->url);
    }
  }
}

Headers Router::State::upstream_headers(const HttpRequest& req, const Worker& w) const {
  static const char* kAllowed[] = {"x-request-id", "x-correlation-id", "traceparent", "tracestate",
                                   "x-smg-routing-key"};
  Headers h;
  for (const auto& [k, v] : req.headers)
    for (const char* a : kAllowed)
      if (k == a || k.starts_with("x-request-id-")) {
        h.emplace_back(k, v);
        break;
      }
  std::string auth = req.header("authorization");
  const std::string& key = !w.api_key.empty() ? w.api_key : cfg.worker_api_key;
  if (!key.empty())
    h.emplace_back("authorization", "Bearer " + key);
  else if (!auth.empty())
    h.emplace_back("authorization", auth);
  return h;
}

void Router::State::probe(const std::shared_ptr<Worker>& w) {
  ClientRequest r;
  r.method = "GET";
  r.target = "/health";
  r.timeout_s = cfg.health_check_timeout_s;
  const std::string& key = !w->api_key.empty() ? w->api_key : cfg.worker_api_key;
  if (!key.empty()) r.headers.emplace_back("authorization", "Bearer " + key);
  std::weak_ptr<State> weak = shared_from_this();
  client.request(w->u, std::move(r), [weak, w](HttpResponse&& resp) {
    auto st = weak.lock();
    if (!st || w->removed) return;
    st->mark(w, resp.ok(), false);
  });
}

void Router::State::schedule_probes() {
  std::weak_ptr<State> weak = shared_from_this();
  // Unregistered workers are probed every 0.5 s (a fresh engine takes a while to load); the
  // periodic check covers registered ones.
  double now = now_s();
  bool pending = false;
  for (const auto& w : snapshot()) {
    if (w->removed) continue;
    if (!w->registered) {
      if (now - w->added_at < cfg.worker_startup_timeout_s) pending = true;
      probe(w);
    }
  }
  double next = pending ? 0.5 : cfg.health_check_interval_s;
  if (!cfg.disable_health_check && now - last_full_probe >= cfg.health_check_interval_s) {
    last_full_probe = now;
    for (const auto& w : snapshot())
      if (w->registered && !w->removed) probe(w);
  }
  if (now - last_eviction >= cfg.eviction_interval_s) {
    last_eviction = now;
    policy.evict();
  }
  timers.post_after(std::min(next, cfg.health_check_interval_s), [weak] {
    if (auto st = weak.lock()) st->schedule_probes();
  });
}

// ---- forwarding ---------------------------------------------------------------------------------

namespace {

bool retryable_status(int s) {
  return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

struct Forward : std::enable_shared_from_this<Forward> {
  std::shared_ptr<Router::State> st;
  HttpRequest req;
  std::shared_ptr<Responder> res;
  std::string text, key, route;
  int attempt = 0;
  double start = 0;
  // per attempt (only touched by the client's callbacks of the current attempt, sequentially)
  bool started = false, streaming = false, retry = false;
  int status = 0;
  std::string content_type, body;

  void run() {
    ++attempt;
    started = streaming = retry = false;
    body.clear();
    std::vector<Candidate> cands;
    std::vector<std::shared_ptr<Worker>> ws;
    for (const auto& w : st->snapshot())
      if (w->healthy && !w->removed) {
        cands.push_back({w->num, w->url, w->load.load()});
        ws.push_back(w);
      }
    if (cands.empty()) {
      st->m.errors++;
      res->send(503, json_error_body(503,
                                     "no healthy workers: register one with POST /workers "
                                     "or wait for the health check to find one up"));
      return;
    }
    bool hit = false;
    int32_t num = st->policy.select(cands, text, key, &hit);
    std::shared_ptr<Worker> w;
    for (auto& x : ws)
      if (x->num == num) w = x;
    if (st->policy.config().kind == PolicyKind::cache_aware && !text.empty())
      (hit ? st->m.cache_hits : st->m.cache_misses)++;
    w->load++;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->decisions[w->url]++;
    }
    ClientRequest cr;
    cr.method = req.method;
    cr.target = req.target;
    cr.headers = st->upstream_headers(req, *w);
    cr.body = req.body;
    cr.content_type =
        req.header("content-type").empty() ? "application/json" : req.header("content-type");
    cr.timeout_s = st->cfg.request_timeout_s;
    auto self = shared_from_this();
    HttpClient::StreamCallbacks cb;
    cb.on_head = [self](int s, const Headers& h) {
      self->status = s;
      for (const auto& [k, v] : h)
        if (k == "content-type") self->content_type = v;
      if (retryable_status(s) && self->attempt < self->st->cfg.max_attempts &&
          !self->res->disconnected()) {
        self->retry = true;  // drop this answer, try another worker
        return;
      }
      self->started = true;
      if (self->content_type.starts_with("text/event-stream")) {
        self->streaming = true;
        self->res->begin_stream(s, self->content_type);
      }
    };
    cb.on_data = [self](std::string_view d) {
      if (self->retry) return;
      if (self->streaming)
        self->res->write(std::string(d));
      else
        self->body.append(d);
    };
    cb.on_done = [self, w](HttpResponse&& r) {
      w->load--;
      w->processed++;
      Forward& f = *self;
      if (!r.error.empty()) {
        bool refused = r.error.find("refused") != std::string::npos ||
                       r.error.find("reset") != std::string::npos;
        if (!f.res->disconnected()) f.st->mark(w, false, refused);
        if (!f.started && f.attempt < f.st->cfg.max_attempts && !f.res->disconnected()) {
          f.st->m.retries++;
          return f.run();
        }
        f.st->m.errors++;
        if (f.streaming) return f.res->end_stream();
        return f.res->send(502, json_error_body(502, "worker " + w->url + " failed: " + r.error));
      }
      if (f.retry) {
        f.st->m.retries++;
        return f.run();
      }
      f.st->m.duration.observe(now_s() - f.start);
      if (f.status >= 400) f.st->m.errors++;
      if (f.streaming) return f.res->end_stream();
      f.res->send(f.status, std::move(f.body),
                  f.content_type.empty() ? "application/json" : f.content_type);
    };
    auto handle = st->client.request_stream(w->u, std::move(cr), std::move(cb));
    res->on_disconnect([handle] { handle->cancel(); });
  }
};

}  // namespace

void Router::State::forward(HttpRequest& req, const std::shared_ptr<Responder>& res,
                            bool route_by_body) {
  auto f = std::make_shared<Forward>();
  f->st = shared_from_this();
  f->text = route_by_body ? routing_text(req) : std::string();
  f->key = req.header("x-smg-routing-key");
  if (f->key.empty() && policy.config().kind == PolicyKind::consistent_hashing) {
    // SMG's implicit keys, in order.
    for (const char* h : {"authorization", "x-forwarded-for", "cookie"})
      if (!(f->key = req.header(h)).empty()) break;
  }
  f->req = std::move(req);
  f->res = res;
  f->start = now_s();
  m.requests++;
  f->run();
}

// ---- Router -------------------------------------------------------------------------------------

Router::Router(RouterConfig cfg) : st_(std::make_shared<State>(std::move(cfg))) {
  std::weak_ptr<State> weak = st_;
  http_ = std::make_unique<HttpServer>(
      st_->cfg.http, [weak](HttpRequest& req, std::shared_ptr<Responder> res) {
        auto st = weak.lock();
        if (!st) return res->send(503, json_error_body(503, "router is shutting down"));
        try {
          st->route(req, res);
        } catch (const RequestError& e) {
          res->send(e.status(), json_error_body(e.status(), e.what(), e.param()));
        } catch (const Error& e) {
          res->send(400, json_error_body(400, e.what()));
        }
      });
}

Router::~Router() { stop(); }

void Router::start() {
  http_->start();
  for (const auto& u : st_->cfg.worker_urls) add_worker(u);
  st_->schedule_probes();
}

void Router::stop() {
  if (!http_) return;
  http_->stop();
  st_->timers.stop();
  // Upstream calls in flight hold the State; shut the client down here, on the owner's thread,
  // so that the State is never destroyed by (and joined from) one of the client's own threads.
  st_->client.shutdown();
  http_.reset();
}

int Router::port() const { return http_ ? http_->port() : 0; }

std::string Router::add_worker(const std::string& url, const std::string& api_key) {
  return st_->add_worker(url, api_key);
}

bool Router::remove_worker(const std::string& id) { return st_->remove_worker(id); }

std::vector<WorkerInfo> Router::workers() const {
  std::vector<WorkerInfo> out;
  for (const auto& w : st_->snapshot())
    out.push_back({w->id, w->url, w->healthy.load(), w->registered.load(), w->load.load(),
                   w->processed.load()});
  return out;
}

std::string Router::State::add_worker(const std::string& url, const std::string& api_key) {
  Url u = Url::parse(url);
  auto w = std::make_shared<Worker>();
  w->url = u.origin() + u.path;
  w->u = u;
  w->api_key = api_key;
  w->id = new_uuid();
  w->added_at = now_s();
  {
    std::lock_guard<std::mutex> lk(mu);
    for (const auto& x : workers)
      if (x->url == w->url)
        GYRE_THROW(invalid_argument, "worker {} is already registered (id {})", w->url, x->id);
    w->num = next_num++;
    workers.push_back(w);
  }
  log::info("router: registering worker {} ({})", w->url, w->id);
  probe(w);
  return w->id;
}

bool Router::State::remove_worker(const std::string& id) {
  std::shared_ptr<Worker> w;
  {
    std::lock_guard<std::mutex> lk(mu);
    for (auto it = workers.begin(); it != workers.end(); ++it)
      if ((*it)->id == id) {
        w = *it;
        workers.erase(it);
        break;
      }
  }
  if (!w) return false;
  w->removed = true;
  w->healthy = false;
  policy.remove_worker(w->num);
  log::info("router: removed worker {} ({})", w->url, w->id);
  return true;
}

}  // namespace gyre::serve
