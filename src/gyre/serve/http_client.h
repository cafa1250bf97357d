// Asynchronous HTTP/1.1 client (Beast over Asio) with keep-alive connection pooling per host:port.
// Used by the router (forwarding, streaming relay, health probes) and by HttpRolloutClient.
//
// Invariants: every request calls on_done exactly once (response, transport error, timeout or
// cancel); a pooled connection is reused only after a complete response that allowed keep-alive;
// a request that fails on a reused idle connection before any byte came back is retried once on a
// fresh one (the server may have closed it while idle), never a request that got an answer.
// Callbacks often own the owner of the client, so the client may be destroyed on one of its own
// I/O threads: that thread is then detached, not joined (the I/O context outlives it).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "gyre/serve/http_server.h"  // Headers

namespace gyre::serve {

struct Url {
  std::string host, port = "80", path;  // path: base path without trailing '/', maybe empty
  // "http://host:port[/base]"; throws gyre::Error(invalid_argument) naming the url otherwise.
  static Url parse(const std::string& url);
  std::string origin() const { return "http://" + host + ":" + port; }
};

struct HttpResponse {
  int status = 0;     // 0: no response (see error)
  std::string error;  // transport failure: "connect: Connection refused", "timed out", ...
  Headers headers;    // lower-case names
  std::string body;   // empty for streamed requests (the data went to on_data)
  bool ok() const { return error.empty() && status >= 200 && status < 300; }
  std::string header(std::string_view name) const;
  // Why the request failed, in one line: the transport error, else the server's message (OpenAI's
  // {"error": {"message"}} or SGLang's {"message"}), else "HTTP <status>: <start of the body>".
  std::string error_message() const;
};

struct ClientRequest {
  std::string method = "GET";
  std::string target = "/";  // path (appended to the URL's base path) plus query
  Headers headers;
  std::string body;
  std::string content_type = "application/json";
  double timeout_s = 0;  // whole request (connect to last byte); 0 = none
};

class HttpClient {
 public:
  struct StreamCallbacks {
    std::function<void(int status, const Headers& headers)> on_head;  // once, before any data
    std::function<void(std::string_view data)> on_data;               // body pieces as they arrive
    std::function<void(HttpResponse&&)> on_done;                      // once
  };
  // Closes the connection of an ongoing request; its on_done then reports "cancelled".
  class Handle {
   public:
    virtual ~Handle() = default;
    virtual void cancel() = 0;
  };

  explicit HttpClient(int io_threads = 1, size_t max_idle_per_host = 256);
  ~HttpClient();  // shutdown()
  // Cancels what is in flight (their on_done still runs), then stops and joins the I/O threads.
  // Idempotent; requests made afterwards fail at once with "client shut down".
  void shutdown();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  std::shared_ptr<Handle> request(const Url& url, ClientRequest req,
                                  std::function<void(HttpResponse&&)> done);
  std::shared_ptr<Handle> request_stream(const Url& url, ClientRequest req, StreamCallbacks cb);
  // Blocking convenience (must not be called from this client's I/O threads).
  HttpResponse request_sync(const Url& url, ClientRequest req);

  int64_t open_connections() const;
  int64_t idle_connections() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace gyre::serve
