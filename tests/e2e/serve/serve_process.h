// Test helper: runs `gyre serve` / `gyre router` as a child process, reads the port it prints
// ("... listening on http://HOST:PORT"), and stops it (SIGTERM, then SIGKILL) on destruction; the
// child is killed by the kernel if the test process dies first (PR_SET_PDEATHSIG).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace gyre::test {

class ChildProcess {
 public:
  // argv[0] is the executable. Waits up to timeout_s for the "listening on" line.
  explicit ChildProcess(std::vector<std::string> argv, double timeout_s = 60) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // Die with the test: a test binary that crashes must not leave servers running (they
      // would also hold its output pipe open, so a runner waiting on it would hang).
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
    fcntl(out_, F_SETFL, O_NONBLOCK);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    std::string buf;
    while (std::chrono::steady_clock::now() < deadline) {
      char c[256];
      ssize_t n = read(out_, c, sizeof c);
      if (n > 0) buf.append(c, size_t(n));
      size_t at = buf.find("listening on http://");
      size_t nl = at == std::string::npos ? at : buf.find('\n', at);
      if (nl != std::string::npos) {
        std::string hp = buf.substr(at + 20, nl - at - 20);
        port_ = std::stoi(hp.substr(hp.rfind(':') + 1));
        url_ = "http://" + hp;
        return;
      }
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("child exited before listening: " + buf);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop(SIGKILL);
    throw std::runtime_error("child did not start listening in time: " + buf);
  }
  ~ChildProcess() {
    stop(SIGTERM);
    if (out_ >= 0) close(out_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  void stop(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    for (int i = 0; i < 500; ++i) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Waits up to timeout_s for the child to exit by itself (after a signal sent elsewhere, e.g. to
  // one of its own children); true when it did (exit_status() is then set).
  bool wait_exit(double timeout_s) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        pid_ = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pid_ <= 0;
  }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& url() const { return url_; }
  int exit_status() const { return exit_status_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = 0;
  int exit_status_ = -1;
  std::string url_;
};

}  // namespace gyre::test
