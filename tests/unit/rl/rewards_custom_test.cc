// --custom-rm-path (JSON-lines subprocess: normal, crash, hang with timeout, malformed reply,
// group mode; shared library C ABI) and --rm-type remote_rm against a tiny Boost.Asio HTTP server
// on loopback (success, retries after 500s, persistent 500, timeout).
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/remote_rm.h"
#include "gyre/rl/rewards/reward.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl::rewards;
using nlohmann::json;

namespace {

bool have_python() { return std::system("python3 -c 'pass' >/dev/null 2>&1") == 0; }

// A JSON-lines reward script: reward = len(response); "crash" exits, "hang" sleeps, "garbage"
// prints a non-JSON line; a {"samples": [...]} request gets {"rewards": [...]}.
const char* kScript = R"(import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    if "samples" in req:
        print(json.dumps({"rewards": [len(s["response"]) for s in req["samples"]]}), flush=True)
        continue
    r = req["response"]
    if r == "crash":
        sys.exit(3)
    if r == "hang":
        time.sleep(60)
    if r == "garbage":
        print("this is not json", flush=True)
        continue
    if r == "fail":
        print(json.dumps({"error": "cannot grade"}), flush=True)
        continue
    print(json.dumps({"reward": len(r) + (1 if req["label"] == "bonus" else 0)}), flush=True)
)";

std::unique_ptr<RewardFunction> script_reward(bool group = false, double timeout_s = 10) {
  const std::string dir = test::temp_dir("custom_rm");
  test::write_file(dir + "/rm.py", kScript);
  RewardConfig c;
  c.custom_rm_path = "python3 " + dir + "/rm.py";
  c.group_rm = group;
  c.custom_rm_timeout_s = timeout_s;
  return make_reward_function(c);
}

// A POSIX sh variant (starts fast on a loaded machine) for the crash and hang cases: every request
// gets reward 1, except "crash" (exit 3) and "hang" (sleep 60).
const char* kShScript = R"(while IFS= read -r line; do
  case "$line" in
    *'"response":"crash"'*) exit 3 ;;
    *'"response":"hang"'*) sleep 60 ;;
    *) echo '{"reward": 1}' ;;
  esac
done
)";

std::unique_ptr<RewardFunction> sh_reward(double timeout_s) {
  const std::string dir = test::temp_dir("custom_sh");
  test::write_file(dir + "/rm.sh", kShScript);
  RewardConfig c;
  c.custom_rm_path = "sh " + dir + "/rm.sh";
  c.custom_rm_timeout_s = timeout_s;
  return make_reward_function(c);
}

RewardInput in(const std::string& response, json label = nullptr) {
  return RewardInput{"prompt", response, std::move(label), json::object()};
}

}  // namespace

TEST(RewardsCustom, SubprocessNormal) {
  if (!have_python()) GTEST_SKIP() << "python3 not available";
  auto f = script_reward();
  auto r = f->score({in("abc"), in("hello", "bonus")});
  ASSERT_TRUE(r[0].ok()) << r[0].error;
  EXPECT_EQ(r[0].value, 3);
  EXPECT_EQ(r[1].value, 6);
}

TEST(RewardsCustom, SubprocessCrashIsMarkedAndRestarted) {
  auto f = sh_reward(30);
  auto r = f->score({in("ab"), in("crash"), in("abcd")});
  EXPECT_EQ(r[0].value, 1);
  ASSERT_FALSE(r[1].ok());
  EXPECT_NE(r[1].error.find("exited with status 3"), std::string::npos) << r[1].error;
  ASSERT_TRUE(r[2].ok()) << r[2].error;  // restarted
  EXPECT_EQ(r[2].value, 1);
}

TEST(RewardsCustom, SubprocessHangTimesOut) {
  auto f = sh_reward(2.0);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = f->score({in("hang"), in("xyz")});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("did not answer"), std::string::npos) << r[0].error;
  ASSERT_TRUE(r[1].ok()) << r[1].error;
  EXPECT_EQ(r[1].value, 1);
  EXPECT_LT(secs, 20);  // the killed process did not hold us for its 60 s sleep
}

TEST(RewardsCustom, ParseMalformedReplyAndReportedError) {
  if (!have_python()) GTEST_SKIP() << "python3 not available";
  auto f = script_reward();
  auto r = f->score({in("garbage"), in("fail"), in("ok")});
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("malformed reply"), std::string::npos) << r[0].error;
  ASSERT_FALSE(r[1].ok());
  EXPECT_NE(r[1].error.find("cannot grade"), std::string::npos) << r[1].error;
  EXPECT_EQ(r[2].value, 2);
}

TEST(RewardsCustom, GroupRmSendsWholeGroup) {
  if (!have_python()) GTEST_SKIP() << "python3 not available";
  auto f = script_reward(true);
  auto r = f->score({in("a"), in("bb"), in("ccc")});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[2].value, 3);
}

TEST(RewardsCustom, ParseMissingCommandFailsTheSample) {
  RewardConfig c;
  c.custom_rm_path = "/nonexistent/gyre_reward_binary";
  auto r = make_reward_function(c)->score({in("x")});
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("exited with status 127"), std::string::npos) << r[0].error;
}

TEST(RewardsCustom, SharedLibraryAbi) {
  if (std::system("cc --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no C compiler";
  const std::string dir = test::temp_dir("custom_so");
  // reward = length of the request JSON modulo 7; a response containing "boom" is an error.
  test::write_file(dir + "/rm.c", R"(#include <stdio.h>
#include <string.h>
int gyre_reward_v1(const char* req, char* out, size_t cap) {
  if (strstr(req, "boom")) { snprintf(out, cap, "boom is not gradable"); return 2; }
  snprintf(out, cap, "{\"reward\": %d}", (int)(strlen(req) % 7));
  return 0;
})");
  ASSERT_EQ(std::system(("cc -shared -fPIC -o " + dir + "/librm.so " + dir + "/rm.c").c_str()), 0);
  RewardConfig c;
  c.custom_rm_path = dir + "/librm.so";
  auto f = make_reward_function(c);
  auto r = f->score({in("abc"), in("boom")});
  const std::string req = json{
      {"prompt", "prompt"},
      {"response", "abc"},
      {"label", nullptr},
      {"metadata",
       json::object()}}.dump();
  ASSERT_TRUE(r[0].ok()) << r[0].error;
  EXPECT_EQ(r[0].value, int(req.size() % 7));
  ASSERT_FALSE(r[1].ok());
  EXPECT_NE(r[1].error.find("boom is not gradable"), std::string::npos);
  c.custom_rm_path = dir + "/missing.so";
  EXPECT_THROW(make_reward_function(c), Error);
}

// ---- remote_rm ------------------------------------------------------------------------------
namespace {
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

// Loopback HTTP server: behaviour chosen by the request's "response" field.
class TestServer {
 public:
  TestServer() : acceptor_(ioc_, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~TestServer() {
    stop_ = true;
    boost::system::error_code ec;
    tcp::socket s(ioc_);
    s.connect(acceptor_.local_endpoint(), ec);  // wake accept()
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/reward"; }
  std::atomic<int> flaky_calls{0};

 private:
  void accept_loop() {
    while (!stop_) {
      tcp::socket sock(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) break;
      workers_.emplace_back([this, s = std::move(sock)]() mutable { handle(std::move(s)); });
    }
  }
  void handle(tcp::socket sock) {
    boost::beast::flat_buffer buf;
    http::request<http::string_body> req;
    boost::system::error_code ec;
    http::read(sock, buf, req, ec);
    if (ec) return;
    const json body = json::parse(req.body());
    const std::string what = body["response"];
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "application/json");
    if (what == "slow") {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      res.body() = R"({"score": 1})";
    } else if (what == "always500" || (what == "flaky" && flaky_calls++ < 2)) {
      res.result(http::status::internal_server_error);
      res.body() = "overloaded";
    } else if (what == "html") {
      res.body() = "<html>oops</html>";
    } else {
      res.body() = json{{"score", 0.5}, {"echo_label", body["label"]}}.dump();
    }
    res.prepare_payload();
    http::write(sock, res, ec);
  }

  boost::asio::io_context ioc_;
  tcp::acceptor acceptor_;
  unsigned short port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

RewardConfig remote_config(const std::string& url) {
  RewardConfig c;
  c.rm_type = "remote_rm";
  c.rm_url = url;
  c.rm_max_retries = 3;
  c.rm_backoff_cap_s = 0;  // no sleeping between attempts in tests
  c.rm_timeout_s = 0.3;
  c.reward_key = "score";
  return c;
}
}  // namespace

TEST(RewardsRemote, PostsJsonAndReturnsReply) {
  TestServer server;
  auto f = make_reward_function(remote_config(server.url()));
  auto r = f->score({in("ok", "42")});
  ASSERT_TRUE(r[0].ok()) << r[0].error;
  EXPECT_EQ(r[0].value["echo_label"], "42");
  EXPECT_EQ(reward_value(r[0].value, std::string("score"), 0), 0.5);
}

TEST(RewardsRemote, RetriesAfter500) {
  TestServer server;
  auto f = make_reward_function(remote_config(server.url()));
  auto r = f->score({in("flaky")});
  ASSERT_TRUE(r[0].ok()) << r[0].error;
  EXPECT_EQ(server.flaky_calls.load(), 3);
}

TEST(RewardsRemote, Persistent500MarksSampleFailed) {
  TestServer server;
  auto f = make_reward_function(remote_config(server.url()));
  auto r = f->score({in("always500"), in("html"), in("ok")});
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("HTTP 500"), std::string::npos) << r[0].error;
  EXPECT_NE(r[0].error.find("3 attempts"), std::string::npos) << r[0].error;
  ASSERT_FALSE(r[1].ok());
  EXPECT_NE(r[1].error.find("not JSON"), std::string::npos) << r[1].error;
  EXPECT_TRUE(r[2].ok());
}

TEST(RewardsRemote, TimeoutMarksSampleFailed) {
  TestServer server;
  RewardConfig c = remote_config(server.url());
  c.rm_max_retries = 1;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = make_reward_function(c)->score({in("slow")});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("timed out"), std::string::npos) << r[0].error;
  EXPECT_LT(secs, 1.2);
}

TEST(RewardsRemote, ParseBadUrlAndRefusedConnection) {
  RewardConfig c = remote_config("https://example.com/x");
  EXPECT_THROW(make_reward_function(c), Error);
  c = remote_config("http://127.0.0.1:1/none");  // nothing listens on port 1
  c.rm_max_retries = 1;
  auto r = make_reward_function(c)->score({in("ok")});
  ASSERT_FALSE(r[0].ok());
  EXPECT_NE(r[0].error.find("connect"), std::string::npos) << r[0].error;
}
