// Asynchronous HTTP/1.1 server (Boost.Beast parsing over Asio, a small pool of I/O threads) shared
// by `gyre serve` and `gyre router`. It knows nothing of the API: each parsed request goes to one
// Handler together with a Responder, through which the handler answers once (send) or streams
// (begin_stream / write / end_stream, sent with chunked transfer encoding).
//
// Invariants:
// - A connection serves one request at a time (keep-alive, no response pipelining); a Responder
//   belongs to exactly one request and becomes inert once that response is complete or the peer
//   has gone, so a late engine callback can never write into another request's response.
// - Responder methods are thread-safe (engine callbacks call them from the engine thread); they
//   never block: output is queued and written by the connection's strand.
// - While a response is pending the server keeps a read posted on the socket, so a client that
//   disconnects is noticed at once and on_disconnect runs (the API layer aborts the request).
// - Bodies over max_body_bytes get 413, a wrong or missing `Authorization: Bearer <api_key>` 401,
//   a malformed request line or header 400; all as OpenAI-shaped JSON errors.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace gyre::serve {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ... (upper case, as sent)
  std::string target;  // as sent: path plus "?query"
  std::string path;    // target without the query, percent-decoded
  std::string query;   // raw text after '?', or empty
  Headers headers;     // names lower-cased, in arrival order
  std::string body;
  std::string remote;  // peer address, for logs

  // First header of that (lower-case) name, or "".
  std::string header(std::string_view name) const;
  // Percent-decoded query parameter, if present.
  std::optional<std::string> query_param(std::string_view name) const;
};

// The answer channel of one request. All methods may be called from any thread.
class Responder {
 public:
  virtual ~Responder() = default;
  // A complete response (Content-Length framing).
  virtual void send(int status, std::string body, std::string content_type = "application/json",
                    Headers extra = {}) = 0;
  // A streamed response: headers now, then any number of writes, then end_stream.
  virtual void begin_stream(int status, std::string content_type, Headers extra = {}) = 0;
  virtual void write(std::string data) = 0;
  virtual void end_stream() = 0;
  // Runs once if the client disconnects before the response completed (immediately if it already
  // has). Runs on an I/O thread; must not block.
  virtual void on_disconnect(std::function<void()> fn) = 0;
  virtual bool disconnected() const = 0;
};

using Handler = std::function<void(HttpRequest& req, std::shared_ptr<Responder> res)>;

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: an ephemeral port (read it back with HttpServer::port())
  int io_threads = 2;
  uint64_t max_body_bytes = 64ull << 20;
  std::string api_key;               // non-empty: every request needs "Authorization: Bearer <key>"
  double idle_timeout_s = 600;       // keep-alive connections idle longer than this are closed
  std::string server_name = "gyre";  // the Server header
};

// Standard reason phrase ("OK", "Not Found", ...).
const char* http_reason(int status);
// {"error": {"message", "type", "param", "code"}}, with the OpenAI type for the status
// ("invalid_request_error" for 4xx, "server_error" for 5xx) and code = the HTTP status.
std::string json_error_body(int status, std::string_view message, std::string_view param = {});
std::string percent_decode(std::string_view s);

class HttpServer {
 public:
  HttpServer(HttpServerConfig cfg, Handler handler);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws gyre::Error(io) naming host:port when it cannot), then starts the
  // I/O threads. port() is valid afterwards.
  void start();
  void stop();  // closes the listener and all connections, joins the threads
  int port() const { return port_; }
  const HttpServerConfig& config() const { return cfg_; }
  int64_t open_connections() const;

  struct Impl;

 private:
  HttpServerConfig cfg_;
  Handler handler_;
  int port_ = 0;
  std::shared_ptr<Impl> impl_;  // shared with the connections, so it outlives every one of them
};

}  // namespace gyre::serve
