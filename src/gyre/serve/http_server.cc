// HttpServer: acceptor + per-connection sessions on strands. Requests are parsed by Beast's
// request_parser; responses are written as raw HTTP/1.1 bytes (status line, headers, body or
// chunked frames) so that streamed output from the engine thread is just bytes appended to a queue
// and flushed by one async_write at a time (queued frames are coalesced into one write).
#include "gyre/serve/http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"

namespace gyre::serve {
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += char(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';  // form encoding in query strings
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<std::string> HttpRequest::query_param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    size_t eq = kv.find('=');
    std::string_view k = kv.substr(0, eq);
    if (percent_decode(k) == name)
      return eq == std::string_view::npos ? std::string() : percent_decode(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

const char* http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
  }
}

std::string json_error_body(int status, std::string_view message, std::string_view param) {
  nlohmann::json e;
  e["message"] = std::string(message);
  e["type"] = status == 401   ? "authentication_error"
              : status == 404 ? "not_found_error"
              : status < 500  ? "invalid_request_error"
                              : "server_error";
  e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::string(param));
  e["code"] = status;
  // replace: a stray invalid UTF-8 byte in an echoed value must not turn the error into a crash
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false,
                                           nlohmann::json::error_handler_t::replace);
}

namespace {

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  HttpServerConfig cfg;
  Handler handler;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::atomic<int64_t> connections{0};
  std::atomic<bool> stopping{false};
  std::mutex sessions_mu;
  std::vector<std::weak_ptr<struct Session>> sessions;

  std::atomic<int> running{0};

  Impl(HttpServerConfig c, Handler h)
      : cfg(std::move(c)), handler(std::move(h)), ioc(std::max(1, cfg.io_threads)) {}
  void accept();
};

namespace {

constexpr size_t kWatchChunk = 4096;
constexpr size_t kMaxPipelined = 1 << 20;

}  // namespace

struct Session : std::enable_shared_from_this<Session> {
  std::shared_ptr<HttpServer::Impl> srv;
  beast::tcp_stream stream;
  beast::flat_buffer buf;
  std::optional<http::request_parser<http::string_body>> parser;
  std::string remote;

  // Response state; touched only on the strand.
  uint64_t seq = 0;
  bool responding = false;  // a request was dispatched and its response is not complete
  bool started = false;     // response headers are queued
  bool chunked = false;     // streaming with chunked framing (HTTP/1.1)
  bool complete = false;    // the whole response is queued; finish once written
  bool keep_alive = true;
  bool http10 = false;
  bool closed = false;
  bool writing = false;
  bool watching = false;
  std::string out, wbuf;
  std::vector<std::function<void()>> on_disc;
  std::shared_ptr<std::atomic<bool>> disc_flag;

  Session(std::shared_ptr<HttpServer::Impl> s, tcp::socket sock)
      : srv(std::move(s)), stream(std::move(sock)) {
    beast::error_code ec;
    stream.socket().set_option(tcp::no_delay(true), ec);  // SSE frames are tiny: no Nagle delay
    auto ep = stream.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
    srv->connections++;
  }
  ~Session() { srv->connections--; }

  void run() {
    net::dispatch(stream.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

  void do_read() {
    if (closed) return;
    parser.emplace();
    parser->body_limit(srv->cfg.max_body_bytes);
    parser->header_limit(64 * 1024);
    stream.expires_after(std::chrono::milliseconds(int64_t(srv->cfg.idle_timeout_s * 1000)));
    http::async_read_header(
        stream, buf, *parser,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    auto& msg = parser->get();
    keep_alive = msg.keep_alive();
    http10 = msg.version() == 10;
    if (auto cl = parser->content_length(); cl && *cl > srv->cfg.max_body_bytes)
      return reject(413, fmt::format("request body of {} bytes exceeds the server's limit of {} "
                                     "bytes (--max-body-bytes)",
                                     *cl, srv->cfg.max_body_bytes));
    if (parser->is_done()) return on_request();
    auto read_body = [self = shared_from_this()] {
      http::async_read(self->stream, self->buf, *self->parser,
                       [self](beast::error_code ec, size_t) {
                         if (ec) return self->on_read_error(ec);
                         self->on_request();
                       });
    };
    if (beast::iequals(msg[http::field::expect], "100-continue")) {
      // curl sends Expect: 100-continue for bodies over 1 KiB and waits a second without this.
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream, net::buffer(kContinue),
                       [self = shared_from_this(), read_body](beast::error_code ec, size_t) {
                         if (ec) return self->close();
                         read_body();
                       });
      return;
    }
    read_body();
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit)
      return reject(413, fmt::format("request body exceeds the server's limit of {} bytes",
                                     srv->cfg.max_body_bytes));
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::bad_descriptor) {
      return close();
    }
    if (ec.category() == beast::error_code(http::error::end_of_stream).category()) {
      return reject(400, fmt::format("malformed HTTP request: {}", ec.message()));
    }
    close();
  }

  // An error answered before any handler ran; the connection closes afterwards.
  void reject(int status, const std::string& message) {
    keep_alive = false;
    ++seq;
    responding = true;
    started = false;
    complete = false;
    disc_flag = std::make_shared<std::atomic<bool>>(false);
    do_send(seq, status, json_error_body(status, message), "application/json", {});
  }

  void on_request();

  void start_watch() {
    if (watching || closed) return;
    if (buf.size() >= kMaxPipelined) return;
    watching = true;
    stream.expires_never();
    stream.async_read_some(
        buf.prepare(kWatchChunk),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_watch(ec, n); });
  }

  void on_watch(beast::error_code ec, size_t n) {
    watching = false;
    if (ec) {
      if (responding) fire_disconnect();
      return close();
    }
    buf.commit(n);
    // Bytes of the next request arrived while this response is still being written (possibly
    // just before the last write's completion ran): keep them and stop watching, so that
    // finish_response can start the next read at once. A client gone after this is still seen
    // by the next failing write.
    if (responding) return;
    if (!keep_alive)
      drain();
    else if (!writing)
      do_read();
  }

  void fire_disconnect() {
    if (disc_flag) disc_flag->store(true);
    auto fns = std::move(on_disc);
    on_disc.clear();
    for (auto& f : fns) f();
  }

  std::string head(int status, std::string_view content_type, const Headers& extra,
                   std::optional<size_t> length) {
    std::string h;
    h.reserve(160);
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += http_reason(status);
    h += "\r\nServer: ";
    h += srv->cfg.server_name;
    if (!content_type.empty()) {
      h += "\r\nContent-Type: ";
      h += content_type;
    }
    if (length) {
      h += "\r\nContent-Length: ";
      h += std::to_string(*length);
    } else if (chunked) {
      h += "\r\nTransfer-Encoding: chunked";
    }
    if (!keep_alive)
      h += "\r\nConnection: close";
    else if (http10)
      h += "\r\nConnection: keep-alive";
    for (const auto& [k, v] : extra) {
      h += "\r\n";
      h += k;
      h += ": ";
      h += v;
    }
    h += "\r\n\r\n";
    return h;
  }

  bool live(uint64_t s) const { return s == seq && responding && !closed; }

  void do_send(uint64_t s, int status, std::string body, const std::string& ct, Headers extra) {
    if (!live(s) || started) return;
    started = true;
    chunked = false;
    out += head(status, ct, extra, body.size());
    out += body;
    complete = true;
    flush();
  }

  void do_begin(uint64_t s, int status, const std::string& ct, Headers extra) {
    if (!live(s) || started) return;
    started = true;
    chunked = !http10;
    if (http10) keep_alive = false;  // close-delimited body
    extra.emplace_back("Cache-Control", "no-cache");
    out += head(status, ct, extra, std::nullopt);
    flush();
  }

  void do_write(uint64_t s, std::string data) {
    if (!live(s) || !started || complete || data.empty()) return;
    if (chunked) {
      char hex[24];
      int n = std::snprintf(hex, sizeof hex, "%zx\r\n", data.size());
      out.append(hex, size_t(n));
      out += data;
      out += "\r\n";
    } else {
      out += data;
    }
    flush();
  }

  void do_end(uint64_t s) {
    if (!live(s) || !started || complete) return;
    if (chunked) out += "0\r\n\r\n";
    complete = true;
    flush();
  }

  void flush() {
    if (writing || closed) return;
    if (out.empty()) {
      if (complete) finish_response();
      return;
    }
    writing = true;
    wbuf.swap(out);
    out.clear();
    net::async_write(stream, net::buffer(wbuf),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->writing = false;
                       self->wbuf.clear();
                       if (ec) {
                         if (self->responding) self->fire_disconnect();
                         return self->close();
                       }
                       self->flush();
                     });
  }

  void finish_response() {
    responding = false;
    on_disc.clear();
    if (!keep_alive) {
      // Lingering close: stop sending, then read (and drop) what the client still sends for a
      // moment. Closing with unread input makes the kernel send RST, and the client may then
      // lose the response (e.g. a 413 sent before the oversized body was read).
      beast::error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
      stream.expires_after(std::chrono::seconds(2));
      if (!watching) drain();  // else on_watch continues with the drain
      return;
    }
    if (!watching) do_read();
    // else: the pending watch read becomes the first read of the next request (on_watch)
  }

  void drain() {
    if (closed) return;
    if (buf.size() > 0) buf.consume(buf.size());
    stream.async_read_some(buf.prepare(kWatchChunk),
                           [self = shared_from_this()](beast::error_code ec, size_t n) {
                             if (ec || self->closed) return self->close();
                             self->buf.commit(n);
                             self->drain();
                           });
  }

  void close() {
    if (closed) return;
    closed = true;
    if (responding) fire_disconnect();
    beast::error_code ec;
    stream.socket().close(ec);
  }
};

namespace {

class Exchange final : public Responder {
 public:
  Exchange(std::shared_ptr<Session> s, uint64_t seq, std::shared_ptr<std::atomic<bool>> flag)
      : s_(std::move(s)), seq_(seq), flag_(std::move(flag)) {}

  void send(int status, std::string body, std::string ct, Headers extra) override {
    net::dispatch(s_->stream.get_executor(), [s = s_, q = seq_, status, b = std::move(body),
                                              ct = std::move(ct), e = std::move(extra)]() mutable {
      s->do_send(q, status, std::move(b), ct, std::move(e));
    });
  }
  void begin_stream(int status, std::string ct, Headers extra) override {
    net::dispatch(s_->stream.get_executor(),
                  [s = s_, q = seq_, status, ct = std::move(ct), e = std::move(extra)]() mutable {
                    s->do_begin(q, status, ct, std::move(e));
                  });
  }
  void write(std::string data) override {
    net::dispatch(s_->stream.get_executor(), [s = s_, q = seq_, d = std::move(data)]() mutable {
      s->do_write(q, std::move(d));
    });
  }
  void end_stream() override {
    net::dispatch(s_->stream.get_executor(), [s = s_, q = seq_] { s->do_end(q); });
  }
  void on_disconnect(std::function<void()> fn) override {
    net::dispatch(s_->stream.get_executor(), [s = s_, q = seq_, fn = std::move(fn)]() mutable {
      if (q != s->seq) return;  // that request is long over
      if (s->disc_flag && s->disc_flag->load())
        fn();
      else if (s->responding)
        s->on_disc.push_back(std::move(fn));
    });
  }
  bool disconnected() const override { return flag_->load(); }

 private:
  std::shared_ptr<Session> s_;
  uint64_t seq_;
  std::shared_ptr<std::atomic<bool>> flag_;
};

}  // namespace

void Session::on_request() {
  auto msg = parser->release();
  HttpRequest req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  size_t q = req.target.find('?');
  req.path = percent_decode(std::string_view(req.target).substr(0, q));
  if (q != std::string::npos) req.query = req.target.substr(q + 1);
  req.headers.reserve(8);
  for (const auto& f : msg) {
    std::string name(f.name_string());
    for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    req.headers.emplace_back(std::move(name), std::string(f.value()));
  }
  req.body = std::move(msg.body());
  req.remote = remote;

  ++seq;
  responding = true;
  started = false;
  complete = false;
  on_disc.clear();
  disc_flag = std::make_shared<std::atomic<bool>>(false);
  auto ex = std::make_shared<Exchange>(shared_from_this(), seq, disc_flag);

  const std::string& key = srv->cfg.api_key;
  if (!key.empty()) {
    std::string auth = req.header("authorization");
    if (!constant_time_equal(auth, "Bearer " + key)) {
      ex->send(401,
               json_error_body(401, auth.empty() ? "missing Authorization header: send "
                                                   "'Authorization: Bearer <api key>'"
                                                 : "invalid API key in the Authorization header"),
               "application/json", {{"WWW-Authenticate", "Bearer"}});
      return;
    }
  }
  try {
    srv->handler(req, ex);
  } catch (const std::exception& e) {
    log::warn("http: unhandled error for {} {}: {}", req.method, req.target, e.what());
    ex->send(500, json_error_body(500, std::string("internal error: ") + e.what()),
             "application/json", {});
  }
  if (responding && !complete) start_watch();
}

void HttpServer::Impl::accept() {
  acceptor->async_accept(
      net::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket sock) {
        if (self->stopping) return;
        if (!ec) {
          auto s = std::make_shared<Session>(self, std::move(sock));
          {
            std::lock_guard<std::mutex> lk(self->sessions_mu);
            // Drop expired entries now and then so the list stays the size of the live set.
            if (self->sessions.size() > 64 && self->sessions.size() % 64 == 0)
              std::erase_if(self->sessions, [](const auto& w) { return w.expired(); });
            self->sessions.push_back(s);
          }
          s->run();
        } else if (ec == net::error::operation_aborted) {
          return;
        }
        self->accept();
      });
}

HttpServer::HttpServer(HttpServerConfig cfg, Handler handler)
    : cfg_(std::move(cfg)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  GYRE_CHECK(!impl_, "HttpServer::start called twice");
  if (cfg_.io_threads < 1)
    GYRE_THROW(invalid_argument, "io_threads = {} must be >= 1", cfg_.io_threads);
  if (cfg_.port < 0 || cfg_.port > 65535)
    GYRE_THROW(invalid_argument, "--port {} is outside [0, 65535] (0 picks a free port)",
               cfg_.port);
  beast::error_code ec;
  auto addr = net::ip::make_address(cfg_.host, ec);
  if (ec)
    GYRE_THROW(invalid_argument, "--host '{}' is not an IP address (use e.g. 127.0.0.1 or 0.0.0.0)",
               cfg_.host);
  // Only now: a server whose start() threw holds no Impl, so its stop() / destructor has nothing
  // to close (an Impl without its acceptor made stop() dereference an empty optional).
  impl_ = std::make_shared<Impl>(cfg_, handler_);
  tcp::endpoint ep(addr, static_cast<unsigned short>(cfg_.port));
  impl_->acceptor.emplace(net::make_strand(impl_->ioc));
  impl_->acceptor->open(ep.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(ep, ec);
  if (!ec) impl_->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    impl_.reset();
    GYRE_THROW(io, "cannot listen on {}:{}: {} (is the port in use? pick another with --port)",
               cfg_.host, cfg_.port, ec.message());
  }
  port_ = impl_->acceptor->local_endpoint().port();
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->accept();
  impl_->running = cfg_.io_threads;
  for (int i = 0; i < cfg_.io_threads; ++i)
    impl_->threads.emplace_back([impl = impl_.get()] {
      impl->ioc.run();
      impl->running--;
    });
}

void HttpServer::stop() {
  if (!impl_ || !impl_->acceptor || impl_->stopping.exchange(true)) return;
  net::dispatch(impl_->acceptor->get_executor(), [impl = impl_] {
    beast::error_code ec;
    impl->acceptor->close(ec);
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lk(impl_->sessions_mu);
    for (auto& w : impl_->sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
    impl_->sessions.clear();
  }
  for (auto& s : live) net::dispatch(s->stream.get_executor(), [s] { s->close(); });
  live.clear();
  impl_->work.reset();
  // Let the closes run and the aborted operations unwind (their handlers hold the sessions, which
  // hold this Impl); then stop whatever is left (a stream still being fed by an engine callback).
  for (int i = 0; i < 200 && impl_->running.load() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

int64_t HttpServer::open_connections() const { return impl_ ? impl_->connections.load() : 0; }

}  // namespace gyre::serve
