// HttpServer::start with a host or port it cannot use: a clear gyre::Error naming the flag, and
// the server object (whose start threw) stops and destroys cleanly — `gyre serve --host
// 999.1.1.1` used to segfault in the destructor's stop(), which closed an acceptor that was never
// created. The same server then starts on a usable address.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "gyre/core/error.h"
#include "gyre/serve/http_server.h"

namespace gyre::serve {
namespace {

std::string start_error(const std::string& host, int port) {
  HttpServerConfig cfg;
  cfg.host = host;
  cfg.port = port;
  auto server = std::make_unique<HttpServer>(cfg, [](HttpRequest&, std::shared_ptr<Responder>) {});
  std::string what;
  try {
    server->start();
  } catch (const Error& e) {
    what = e.what();
  }
  server->stop();  // nothing to stop: no crash
  server.reset();  // nor in the destructor
  return what;
}

TEST(HttpServerStart, BadHostOrPortIsAClearErrorAndNoCrash) {
  for (const char* host : {"999.1.1.1", "not-a-host", "", "256.0.0.1"}) {
    const std::string what = start_error(host, 0);
    EXPECT_NE(what.find("--host"), std::string::npos) << host << ": " << what;
  }
  for (int port : {-1, 70000}) {
    const std::string what = start_error("127.0.0.1", port);
    EXPECT_NE(what.find("--port"), std::string::npos) << port << ": " << what;
  }
  HttpServerConfig cfg;  // 127.0.0.1, an ephemeral port
  HttpServer ok(cfg, [](HttpRequest&, std::shared_ptr<Responder>) {});
  ok.start();
  EXPECT_GT(ok.port(), 0);
  ok.stop();
}

}  // namespace
}  // namespace gyre::serve
