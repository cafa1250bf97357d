// Blocking Boost.Beast HTTP client with deadlines, and the remote reward model (remote_rm.h).
#include "gyre/rl/rewards/remote_rm.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"

namespace gyre::rl::rewards {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

struct Url {
  std::string host, port = "80", target = "/";
};

Url parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    GYRE_THROW(invalid_argument,
               "--rm-url '{}' must start with http:// (https is not supported; put a local proxy "
               "in front of TLS endpoints)",
               url);
  Url u;
  std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) u.target = rest.substr(slash), rest = rest.substr(0, slash);
  const size_t colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(']') == std::string::npos)
    u.port = rest.substr(colon + 1), rest = rest.substr(0, colon);
  u.host = rest;
  if (u.host.empty() || u.port.empty())
    GYRE_THROW(invalid_argument, "--rm-url '{}': missing host or port", url);
  return u;
}

}  // namespace

HttpResult http_post_json(const std::string& url, const std::string& body, double timeout_s) {
  const Url u = parse_url(url);
  HttpResult result;
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  beast::flat_buffer buffer;
  http::request<http::string_body> req{http::verb::post, u.target, 11};
  req.set(http::field::host, u.host);
  req.set(http::field::content_type, "application/json");
  req.set(http::field::user_agent, "gyre-reward");
  req.body() = body;
  req.prepare_payload();
  http::response<http::string_body> res;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  auto fail = [&](const char* what, beast::error_code ec) {
    result.error = std::string(what) + ": " +
                   (ec == beast::error::timeout ? std::string("timed out") : ec.message());
  };
  resolver.async_resolve(u.host, u.port, [&](beast::error_code ec, tcp::resolver::results_type r) {
    if (ec) return fail("resolve", ec);
    stream.expires_at(deadline);
    stream.async_connect(r, [&](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return fail("connect", ec);
      http::async_write(stream, req, [&](beast::error_code ec, size_t) {
        if (ec) return fail("write", ec);
        http::async_read(stream, buffer, res, [&](beast::error_code ec, size_t) {
          if (ec) return fail("read", ec);
          result.status = int(res.result_int());
          result.body = res.body();
        });
      });
    });
  });
  // The resolver has no deadline of its own; bound the whole run.
  ioc.run_for(std::chrono::milliseconds(int64_t(timeout_s * 1000) + 100));
  if (!ioc.stopped()) {
    stream.cancel();
    ioc.stop();
  }
  if (result.status == 0 && result.error.empty()) result.error = "timed out";
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return result;
}

RemoteRewardModel::RemoteRewardModel(const RewardConfig& config) : config_(config) {
  parse_url(config.rm_url);  // fail early on a bad URL
  if (config.rm_max_retries < 1)
    GYRE_THROW(invalid_argument, "remote_rm: max retries must be >= 1, got {}",
               config.rm_max_retries);
}

Reward RemoteRewardModel::score_one(const RewardInput& in) {
  const nlohmann::json payload = {
      {"prompt", in.prompt}, {"response", in.response}, {"label", in.label}};
  const std::string body = payload.dump();
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.0, 1.0);
  std::string last;
  for (int attempt = 0; attempt < config_.rm_max_retries; ++attempt) {
    HttpResult r = http_post_json(config_.rm_url, body, config_.rm_timeout_s);
    if (r.status >= 200 && r.status < 300) {
      try {
        return {nlohmann::json::parse(r.body), ""};
      } catch (const nlohmann::json::exception& e) {
        last = "reply is not JSON: " + r.body.substr(0, 200);
      }
    } else if (r.status != 0) {
      last = "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
    } else {
      last = r.error;
    }
    if (attempt + 1 < config_.rm_max_retries) {
      const double backoff = std::min(std::pow(2.0, attempt), config_.rm_backoff_cap_s) +
                             jitter(rng) * std::min(1.0, config_.rm_backoff_cap_s);
      log::info("remote_rm: {} (attempt {}/{}), retrying in {:.1f}s", last, attempt + 1,
                config_.rm_max_retries, backoff);
      std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
    }
  }
  const int64_t idx = in.index;
  return {nullptr, fmt::format("remote_rm {} failed after {} attempts: {}{}", config_.rm_url,
                               config_.rm_max_retries, last,
                               idx >= 0 ? fmt::format(" (sample {})", idx) : "")};
}

std::vector<Reward> RemoteRewardModel::score(const std::vector<RewardInput>& inputs) {
  std::vector<Reward> out(inputs.size());
  constexpr size_t kInFlight = 16;
  for (size_t b = 0; b < inputs.size(); b += kInFlight) {
    std::vector<std::future<Reward>> futs;
    for (size_t i = b; i < std::min(inputs.size(), b + kInFlight); ++i)
      futs.push_back(
          std::async(std::launch::async, [this, &inputs, i] { return score_one(inputs[i]); }));
    for (size_t k = 0; k < futs.size(); ++k) out[b + k] = futs[k].get();
  }
  return out;
}

}  // namespace gyre::rl::rewards
