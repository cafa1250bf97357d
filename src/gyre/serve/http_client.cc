// HttpClient (http_client.h): one Call object per request drives resolve -> connect (or a pooled
// connection) -> write -> read on the connection's strand; streamed bodies are handed out chunk by
// chunk through Beast's on_chunk_body hook.
#include "gyre/serve/http_client.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "gyre/core/error.h"

namespace gyre::serve {
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

Url Url::parse(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    GYRE_THROW(invalid_argument,
               "URL '{}' must start with http:// (https is not supported; put a local TLS proxy "
               "in front)",
               url);
  Url u;
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    u.path = rest.substr(slash);
    rest = rest.substr(0, slash);
    while (!u.path.empty() && u.path.back() == '/') u.path.pop_back();
  }
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(']') == std::string::npos) {
    u.port = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
  }
  u.host = rest;
  if (u.host.empty() || u.port.empty() ||
      u.port.find_first_not_of("0123456789") != std::string::npos)
    GYRE_THROW(invalid_argument, "URL '{}': expected http://HOST:PORT", url);
  return u;
}

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

std::string HttpResponse::error_message() const {
  if (!error.empty()) return error;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    if (j.contains("error") && j["error"].is_object() && j["error"].contains("message"))
      return j["error"]["message"].is_string() ? j["error"]["message"].get<std::string>()
                                               : j["error"]["message"].dump();
    if (j.contains("message") && j["message"].is_string()) return j["message"].get<std::string>();
  }
  return fmt::format("HTTP {}: {}", status, body.substr(0, 300));
}

using Conn = beast::tcp_stream;

struct HttpClient::Impl : std::enable_shared_from_this<HttpClient::Impl> {
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<int> running{0};
  size_t max_idle;
  mutable std::mutex mu;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle;
  std::list<std::weak_ptr<Handle>> calls;
  std::atomic<int64_t> open{0};
  bool closing = false;

  explicit Impl(int n) : ioc(std::max(1, n)) {}

  std::unique_ptr<Conn> take(const std::string& key) {
    std::lock_guard<std::mutex> lk(mu);
    auto it = idle.find(key);
    if (it == idle.end() || it->second.empty()) return nullptr;
    auto c = std::move(it->second.back());
    it->second.pop_back();
    return c;
  }
  void give_back(const std::string& key, std::unique_ptr<Conn> c) {
    std::lock_guard<std::mutex> lk(mu);
    auto& v = idle[key];
    if (closing || v.size() >= max_idle) {
      beast::error_code ec;
      c->socket().close(ec);
      open--;
      return;
    }
    v.push_back(std::move(c));
  }
};

namespace {

struct Call final : HttpClient::Handle, std::enable_shared_from_this<Call> {
  std::shared_ptr<HttpClient::Impl> impl;
  Url url;
  std::string key;
  ClientRequest req;
  bool stream = false;
  HttpClient::StreamCallbacks cb;
  std::unique_ptr<Conn> conn;
  std::optional<tcp::resolver> resolver;
  bool reused = false, retried = false, got_bytes = false, finished = false;
  std::atomic<bool> cancelled{false};
  http::request<http::string_body> msg;
  beast::flat_buffer buf;
  std::optional<http::response_parser<http::string_body>> parser;
  std::function<size_t(uint64_t, beast::string_view, beast::error_code&)> chunk_cb;
  std::chrono::steady_clock::time_point deadline;
  net::any_io_executor ex;  // the strand of this call (fixed before any operation starts)
  std::mutex ex_mu;         // guards ex against a concurrent cancel() before start() set it

  void start() {
    msg = {};
    msg.method_string(req.method);
    msg.target(url.path + req.target);
    msg.version(11);
    msg.set(http::field::host, url.host + ":" + url.port);
    msg.set(http::field::user_agent, "gyre");
    for (const auto& [k, v] : req.headers) msg.set(k, v);
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT") {
      if (!req.body.empty()) msg.set(http::field::content_type, req.content_type);
      msg.body() = req.body;
      msg.prepare_payload();
    }
    if (req.timeout_s > 0)
      deadline = std::chrono::steady_clock::now() +
                 std::chrono::microseconds(int64_t(req.timeout_s * 1e6));
    conn = impl->take(key);
    {
      std::lock_guard<std::mutex> lk(ex_mu);
      ex = conn ? conn->get_executor() : net::any_io_executor(net::make_strand(impl->ioc));
    }
    if (conn) {
      reused = true;
      net::dispatch(conn->get_executor(), [self = shared_from_this()] { self->do_write(); });
    } else {
      connect();
    }
  }

  void arm() {
    if (req.timeout_s > 0)
      conn->expires_at(deadline);
    else
      conn->expires_never();
  }

  void connect() {
    reused = false;
    conn = std::make_unique<Conn>(ex);
    impl->open++;
    resolver.emplace(ex);
    net::dispatch(ex, [self = shared_from_this()] {
      if (self->cancelled) return self->fail("cancelled");
      self->resolver->async_resolve(
          self->url.host, self->url.port,
          [self](beast::error_code ec, tcp::resolver::results_type results) {
            if (ec) return self->fail("resolve " + self->url.host + ": " + ec.message());
            self->arm();
            self->conn->async_connect(results, [self](beast::error_code ec, const tcp::endpoint&) {
              if (ec) return self->fail("connect " + self->url.origin() + ": " + ec.message());
              beast::error_code ig;
              self->conn->socket().set_option(tcp::no_delay(true), ig);
              self->do_write();
            });
          });
    });
  }

  void do_write() {
    if (cancelled) return fail("cancelled");
    arm();
    http::async_write(*conn, msg, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->on_error("write", ec);
      self->parser.emplace();
      self->parser->body_limit(std::numeric_limits<std::uint64_t>::max());
      self->buf.clear();
      if (self->stream) {
        http::async_read_header(*self->conn, self->buf, *self->parser,
                                [self](beast::error_code ec, size_t) { self->on_header(ec); });
      } else {
        http::async_read(*self->conn, self->buf, *self->parser,
                         [self](beast::error_code ec, size_t) { self->on_read(ec); });
      }
    });
  }

  Headers headers_of() {
    Headers h;
    for (const auto& f : parser->get()) {
      std::string name(f.name_string());
      for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      h.emplace_back(std::move(name), std::string(f.value()));
    }
    return h;
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_error("read", ec);
    got_bytes = true;
    if (cb.on_head) cb.on_head(int(parser->get().result_int()), headers_of());
    if (parser->chunked()) {
      chunk_cb = [self = this](uint64_t, beast::string_view body, beast::error_code&) {
        if (self->cb.on_data && !body.empty())
          self->cb.on_data(std::string_view(body.data(), body.size()));
        return body.size();
      };
      parser->on_chunk_body(chunk_cb);
    }
    http::async_read(
        *conn, buf, *parser,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_error("read", ec);
    HttpResponse r;
    r.status = int(parser->get().result_int());
    r.headers = headers_of();
    bool keep = parser->get().keep_alive() && buf.size() == 0 && !cancelled;
    if (stream) {
      if (!parser->chunked() && cb.on_data && !parser->get().body().empty())
        cb.on_data(parser->get().body());
    } else {
      r.body = std::move(parser->get().body());
    }
    if (keep) {
      impl->give_back(key, std::move(conn));
    } else {
      drop();
    }
    done(std::move(r));
  }

  void on_error(const char* what, beast::error_code ec) {
    // A pooled connection the server closed while idle fails before any byte: retry once fresh.
    if (reused && !got_bytes && !retried && !cancelled && ec != beast::error::timeout) {
      retried = true;
      drop();
      return connect();
    }
    if (cancelled) return fail("cancelled");
    fail(std::string(what) + " " + url.origin() + ": " +
         (ec == beast::error::timeout ? std::string("timed out") : ec.message()));
  }

  void drop() {
    if (!conn) return;
    beast::error_code ec;
    conn->socket().close(ec);
    // Destroy on its own strand later is unnecessary: no operation is pending on it any more.
    conn.reset();
    impl->open--;
  }

  void fail(std::string error) {
    drop();
    HttpResponse r;
    r.error = std::move(error);
    done(std::move(r));
  }

  void done(HttpResponse&& r) {
    if (finished) return;
    finished = true;
    auto fn = std::move(cb.on_done);
    cb = {};
    if (fn) fn(std::move(r));
  }

  void cancel() override {
    cancelled = true;
    auto self = shared_from_this();
    net::any_io_executor e;
    {
      std::lock_guard<std::mutex> lk(ex_mu);
      e = ex;
    }
    if (!e) return;  // not started yet: start() sees `cancelled` and fails the call
    net::dispatch(e, [self] {
      if (self->resolver) self->resolver->cancel();
      if (self->conn) {
        beast::error_code ec;
        self->conn->socket().cancel(ec);
        self->conn->socket().close(ec);
      }
    });
  }
};

}  // namespace

HttpClient::HttpClient(int io_threads, size_t max_idle_per_host)
    : impl_(std::make_shared<Impl>(io_threads)) {
  impl_->max_idle = max_idle_per_host;
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->running = std::max(1, io_threads);
  for (int i = 0; i < std::max(1, io_threads); ++i)
    // The thread co-owns the Impl, so a detached thread (shutdown from a callback) still runs on
    // a live io_context until it returns.
    impl_->threads.emplace_back([impl = impl_] {
      impl->ioc.run();
      impl->running--;
    });
}

HttpClient::~HttpClient() { shutdown(); }

void HttpClient::shutdown() {
  std::vector<std::shared_ptr<Handle>> live;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (impl_->closing) return;
    impl_->closing = true;
    for (auto& w : impl_->calls)
      if (auto c = w.lock()) live.push_back(std::move(c));
    impl_->calls.clear();
  }
  for (auto& c : live) c->cancel();
  impl_->work.reset();
  bool on_own_thread = false;
  for (auto& t : impl_->threads) on_own_thread |= t.get_id() == std::this_thread::get_id();
  // Let the cancellations complete (their on_done run), bounded; then stop what is left.
  for (int i = 0; i < 300 && impl_->running.load() > (on_own_thread ? 1 : 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.get_id() == std::this_thread::get_id())
      t.detach();
    else if (t.joinable())
      t.join();
  }
  impl_->threads.clear();
  // No handler runs any more (the context is stopped, the other threads joined): a call whose
  // cancellation did not complete in time is finished here, so its on_done still runs once.
  for (auto& h : live) {
    auto c = std::static_pointer_cast<Call>(h);
    if (!c->finished) c->fail("client shut down");
  }
  live.clear();
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->idle.clear();
}

static std::shared_ptr<Call> make_call(const std::shared_ptr<HttpClient::Impl>& impl,
                                       const Url& url, ClientRequest req) {
  auto c = std::make_shared<Call>();
  c->impl = impl;
  c->url = url;
  c->key = url.host + ":" + url.port;
  c->req = std::move(req);
  return c;
}

// Registers and starts the call, or fails it at once when the client is shut down (its I/O
// threads are gone: nothing would ever complete it).
static void launch(const std::shared_ptr<HttpClient::Impl>& impl, const std::shared_ptr<Call>& c) {
  bool closed;
  {
    std::lock_guard<std::mutex> lk(impl->mu);
    closed = impl->closing;
    if (!closed) {
      if (impl->calls.size() > 256)  // keep the registry the size of what is live
        impl->calls.remove_if([](const auto& w) { return w.expired(); });
      impl->calls.push_back(c);
    }
  }
  if (closed) {
    HttpResponse r;
    r.error = "client shut down";
    c->done(std::move(r));
    return;
  }
  c->start();
}

std::shared_ptr<HttpClient::Handle> HttpClient::request(const Url& url, ClientRequest req,
                                                        std::function<void(HttpResponse&&)> done) {
  auto c = make_call(impl_, url, std::move(req));
  c->cb.on_done = std::move(done);
  launch(impl_, c);
  return c;
}

std::shared_ptr<HttpClient::Handle> HttpClient::request_stream(const Url& url, ClientRequest req,
                                                               StreamCallbacks cb) {
  auto c = make_call(impl_, url, std::move(req));
  c->stream = true;
  c->cb = std::move(cb);
  launch(impl_, c);
  return c;
}

HttpResponse HttpClient::request_sync(const Url& url, ClientRequest req) {
  auto p = std::make_shared<std::promise<HttpResponse>>();
  auto f = p->get_future();
  request(url, std::move(req), [p](HttpResponse&& r) { p->set_value(std::move(r)); });
  return f.get();
}

int64_t HttpClient::open_connections() const { return impl_->open.load(); }

int64_t HttpClient::idle_connections() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  int64_t n = 0;
  for (const auto& [k, v] : impl_->idle) n += int64_t(v.size());
  return n;
}

}  // namespace gyre::serve
