// Custom reward functions: shared library (C ABI) and JSON-lines subprocess (custom_rm.h).
#include "gyre/rl/rewards/custom_rm.h"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include "gyre/core/error.h"

namespace gyre::rl::rewards {
namespace {

using Clock = std::chrono::steady_clock;

nlohmann::json request_of(const RewardInput& in) {
  return {{"prompt", in.prompt},
          {"response", in.response},
          {"label", in.label},
          {"metadata", in.metadata.is_null() ? nlohmann::json::object() : in.metadata}};
}

// Turns reply JSON text into rewards for `n` requests (n > 1 or group -> {"rewards": [...]}).
std::vector<Reward> parse_reply(const std::string& text, size_t n, bool group,
                                const std::string& who) {
  std::vector<Reward> out(n);
  auto fail_all = [&](const std::string& msg) {
    for (auto& r : out) r = {nullptr, msg};
    return out;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    return fail_all(who + ": malformed reply (not JSON): '" + text.substr(0, 200) + "'");
  }
  if (j.is_object() && j.contains("error"))
    return fail_all(who + ": reported error: " + j["error"].dump().substr(0, 300));
  if (!group) {
    if (!j.is_object() || !j.contains("reward") || j["reward"].is_null() ||
        !(j["reward"].is_number() || j["reward"].is_object() || j["reward"].is_boolean()))
      return fail_all(who + ": malformed reply, expected {\"reward\": <number or object>}, got '" +
                      text.substr(0, 200) + "'");
    out[0].value = j["reward"];
    return out;
  }
  if (!j.is_object() || !j.contains("rewards") || !j["rewards"].is_array() ||
      j["rewards"].size() != n)
    return fail_all(who + ": malformed reply, expected {\"rewards\": [" + std::to_string(n) +
                    " values]}, got '" + text.substr(0, 200) + "'");
  for (size_t i = 0; i < n; ++i) out[i].value = j["rewards"][i];
  return out;
}

// ---- (a) shared library ----------------------------------------------------------------------
using RewardAbi = int (*)(const char*, char*, size_t);

class SharedLibraryReward : public RewardFunction {
 public:
  SharedLibraryReward(const std::string& path, bool group) : group_(group), path_(path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_)
      GYRE_THROW(not_found, "--custom-rm-path {}: cannot load the library: {}", path, dlerror());
    fn_ = reinterpret_cast<RewardAbi>(dlsym(handle_, "gyre_reward_v1"));
    if (!fn_)
      GYRE_THROW(invalid_argument,
                 "--custom-rm-path {}: the library does not export extern \"C\" int "
                 "gyre_reward_v1(const char* request_json, char* out, size_t out_cap)",
                 path);
  }
  ~SharedLibraryReward() override {
    if (handle_) dlclose(handle_);
  }
  std::vector<Reward> score(const std::vector<RewardInput>& inputs) override {
    std::vector<Reward> out;
    if (group_) {
      nlohmann::json req = {{"samples", nlohmann::json::array()}};
      for (const auto& in : inputs) req["samples"].push_back(request_of(in));
      return call(req.dump(), inputs.size(), true);
    }
    for (const auto& in : inputs) out.push_back(call(request_of(in).dump(), 1, false)[0]);
    return out;
  }

 private:
  std::vector<Reward> call(const std::string& req, size_t n, bool group) {
    std::lock_guard<std::mutex> lock(mu_);
    buf_.assign(kCap, '\0');
    const int rc = fn_(req.c_str(), buf_.data(), buf_.size());
    buf_.back() = '\0';
    const std::string reply(buf_.data());
    if (rc != 0) {
      std::vector<Reward> out(n);
      for (auto& r : out)
        r.error =
            path_ + ": gyre_reward_v1 returned " + std::to_string(rc) + ": " + reply.substr(0, 300);
      return out;
    }
    return parse_reply(reply, n, group, path_);
  }
  static constexpr size_t kCap = 1 << 20;
  bool group_;
  std::string path_;
  void* handle_ = nullptr;
  RewardAbi fn_ = nullptr;
  std::mutex mu_;
  std::vector<char> buf_;
};

// ---- (b) JSON-lines subprocess ----------------------------------------------------------------
class JsonLinesProcess {
 public:
  explicit JsonLinesProcess(std::string cmd) : cmd_(std::move(cmd)) {}
  ~JsonLinesProcess() { stop(); }

  // Sends one line and waits for one reply line; false with *err set on any failure.
  bool request(const std::string& line, double timeout_s, std::string* reply, std::string* err) {
    if (pid_ < 0 && !start(err)) return false;
    const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
    rbuf_.clear();  // a reply never spans requests
    const std::string msg = line + "\n";
    size_t sent = 0;
    while (sent < msg.size()) {
      if (!wait_fd(POLLOUT, deadline)) return timed_out(timeout_s, err);
      const ssize_t k = ::send(fd_, msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
      if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return died("while sending the request", err);
      }
      sent += size_t(k);
    }
    for (;;) {
      const size_t nl = rbuf_.find('\n');
      if (nl != std::string::npos) {
        *reply = rbuf_.substr(0, nl);
        rbuf_.erase(0, nl + 1);
        return true;
      }
      if (!wait_fd(POLLIN, deadline)) return timed_out(timeout_s, err);
      char tmp[65536];
      const ssize_t k = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (k <= 0) return died("before replying", err);
      rbuf_.append(tmp, size_t(k));
    }
  }

 private:
  bool start(std::string* err) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      *err = std::string("socketpair failed: ") + std::strerror(errno);
      return false;
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      *err = std::string("fork failed: ") + std::strerror(errno);
      ::close(sv[0]), ::close(sv[1]);
      return false;
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // own process group: a timeout kills the shell and its children
      ::dup2(sv[1], 0);
      ::dup2(sv[1], 1);
      ::execl("/bin/sh", "sh", "-c", cmd_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(sv[1]);
    fd_ = sv[0];
    pid_ = pid;
    return true;
  }
  bool wait_fd(short events, Clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, int(std::min<int64_t>(left.count(), 1000)));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return true;  // let the following I/O report the error
    }
  }
  int stop() {
    int status = -1;
    if (fd_ >= 0) ::close(fd_), fd_ = -1;
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    pid_ = -1;
    return status;
  }
  bool timed_out(double timeout_s, std::string* err) {
    stop();
    *err = "custom reward process '" + cmd_ + "' did not answer within " +
           std::to_string(timeout_s) + " s; it was killed and will be restarted";
    return false;
  }
  bool died(const char* when, std::string* err) {
    // Give it a moment to finish exiting so the status is meaningful.
    int status = -1;
    for (int k = 0; k < 50 && pid_ > 0; ++k) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        break;
      }
      ::usleep(2000);
    }
    std::string how = "is unresponsive";
    if (pid_ < 0 && WIFEXITED(status))
      how = "exited with status " + std::to_string(WEXITSTATUS(status));
    else if (pid_ < 0 && WIFSIGNALED(status))
      how = "was killed by signal " + std::to_string(WTERMSIG(status));
    stop();
    *err = "custom reward process '" + cmd_ + "' " + how + " " + when +
           "; it will be restarted for the next request";
    return false;
  }

  std::string cmd_;
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string rbuf_;
};

class SubprocessReward : public RewardFunction {
 public:
  SubprocessReward(const std::string& cmd, bool group, double timeout_s)
      : proc_(cmd), cmd_(cmd), group_(group), timeout_s_(timeout_s) {
    if (!(timeout_s > 0))
      GYRE_THROW(invalid_argument, "custom reward timeout must be > 0 s, got {}", timeout_s);
  }
  std::vector<Reward> score(const std::vector<RewardInput>& inputs) override {
    if (group_) {
      nlohmann::json req = {{"samples", nlohmann::json::array()}};
      for (const auto& in : inputs) req["samples"].push_back(request_of(in));
      return roundtrip(req.dump(), inputs.size(), true);
    }
    std::vector<Reward> out;
    for (const auto& in : inputs) out.push_back(roundtrip(request_of(in).dump(), 1, false)[0]);
    return out;
  }

 private:
  std::vector<Reward> roundtrip(const std::string& line, size_t n, bool group) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string reply, err;
    if (!proc_.request(line, timeout_s_, &reply, &err)) {
      std::vector<Reward> out(n);
      for (auto& r : out) r.error = err;
      return out;
    }
    return parse_reply(reply, n, group, "custom reward process '" + cmd_ + "'");
  }
  JsonLinesProcess proc_;
  std::string cmd_;
  bool group_;
  double timeout_s_;
  std::mutex mu_;
};

bool looks_like_library(const std::string& p) {
  return (p.size() > 3 && p.compare(p.size() - 3, 3, ".so") == 0) ||
         p.find(".so.") != std::string::npos;
}

}  // namespace

std::unique_ptr<RewardFunction> make_custom_reward_function(const RewardConfig& c) {
  if (looks_like_library(c.custom_rm_path))
    return std::make_unique<SharedLibraryReward>(c.custom_rm_path, c.group_rm);
  return std::make_unique<SubprocessReward>(c.custom_rm_path, c.group_rm, c.custom_rm_timeout_s);
}

}  // namespace gyre::rl::rewards
