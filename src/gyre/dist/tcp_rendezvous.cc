// TCP rendezvous for NCCL bootstrap without MPI (see tcp_rendezvous.h). POSIX sockets, every
// blocking step bounded by poll() against one deadline.
#include "gyre/dist/tcp_rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "gyre/core/error.h"

namespace gyre::dist {

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[8] = {'G', 'Y', 'R', 'E', 'R', 'D', 'V', '1'};
constexpr uint32_t kMaxText = 1u << 20;  // group names and payloads are small; refuse garbage

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

int ms_left(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : int(std::min<int64_t>(left, 1 << 30));
}

// Waits until fd is readable / writable; false on deadline.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms_left(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// Reads/writes exactly n bytes before the deadline; false on timeout or a closed peer.
bool read_all(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return false;
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return false;
    }
    p += r, n -= size_t(r);
  }
  return true;
}

bool write_all(int fd, const void* buf, size_t n, Clock::time_point deadline) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT, deadline)) return false;
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return false;
    }
    p += r, n -= size_t(r);
  }
  return true;
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

bool read_text(int fd, std::string* out, Clock::time_point deadline) {
  unsigned char len[4];
  if (!read_all(fd, len, 4, deadline)) return false;
  const uint32_t n = get_u32(len);
  if (n > kMaxText) return false;
  out->assign(n, '\0');
  return n == 0 || read_all(fd, out->data(), n, deadline);
}

std::string where(const RendezvousOptions& o) {
  return fmt::format("rendezvous '{}' at {}:{} (rank {} of {})", o.group, o.host, o.port, o.rank,
                     o.world_size);
}

// Rank 0: listen, serve world-1 distinct ranks, return.
void serve(const RendezvousOptions& o, const std::string& payload, Clock::time_point deadline) {
  Fd ls(::socket(AF_INET6, SOCK_STREAM, 0));
  bool v6 = ls.get() >= 0;
  if (!v6) ls = Fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (ls.get() < 0)
    GYRE_THROW(io, "{}: cannot create a socket: {}", where(o), std::strerror(errno));
  int one = 1, zero = 0;
  ::setsockopt(ls.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (v6) {
    ::setsockopt(ls.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // v4 clients too
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(uint16_t(o.port));
    rc = ::bind(ls.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(uint16_t(o.port));
    rc = ::bind(ls.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0)
    GYRE_THROW(io,
               "{}: rank 0 cannot listen on port {}: {} (another job or a previous run holds it? "
               "pick another MASTER_PORT / master_port)",
               where(o), o.port, std::strerror(errno));
  if (::listen(ls.get(), 128) != 0)
    GYRE_THROW(io, "{}: listen failed: {}", where(o), std::strerror(errno));
  set_nonblocking(ls.get());
  std::set<int> served;
  std::string refused;  // the last client turned away, for the timeout message
  while (int(served.size()) < o.world_size - 1) {
    // Wait in slices so abort_check is polled.
    bool readable = false;
    while (!readable && Clock::now() < deadline) {
      readable = wait_fd(ls.get(), POLLIN,
                         std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
      if (!readable && o.abort_check)
        if (std::string why = o.abort_check(); !why.empty())
          GYRE_THROW(io, "{}: stopped waiting for the other ranks: {}", where(o), why);
    }
    if (!readable) {
      std::string missing;
      for (int r = 1; r < o.world_size; ++r)
        if (!served.count(r)) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      GYRE_THROW(io,
                 "{}: ranks {} did not connect within {} s (not started, or they cannot reach "
                 "this host: check MASTER_ADDR / master_address and firewalls){}",
                 where(o), missing, o.timeout_s,
                 refused.empty() ? "" : "; refused a client: " + refused);
    }
    Fd c(::accept(ls.get(), nullptr, nullptr));
    if (c.get() < 0) continue;
    set_nonblocking(c.get());
    // One client gets at most a few seconds of rank 0's deadline, so a stray connection (a port
    // scanner) cannot hold up the ranks behind it.
    const auto client_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
    unsigned char head[16];
    std::string group;
    if (!read_all(c.get(), head, 16, client_deadline) || std::memcmp(head, kMagic, 8) != 0 ||
        !read_text(c.get(), &group, client_deadline))
      continue;  // not one of ours
    const int rank = int(get_u32(head + 8)), world = int(get_u32(head + 12));
    std::string error;
    if (group != o.group)
      error = fmt::format("group '{}' connected to rank 0 of group '{}'", group, o.group);
    else if (world != o.world_size)
      error =
          fmt::format("rank {} expects a world of {} but rank 0 has {}", rank, world, o.world_size);
    else if (rank < 1 || rank >= o.world_size)
      error =
          fmt::format("rank {} is outside 1..{} (rank 0 is the listener)", rank, o.world_size - 1);
    else if (served.count(rank))
      error = fmt::format("rank {} connected twice (two processes with the same RANK?)", rank);
    std::string reply(1, error.empty() ? '\0' : '\1');
    const std::string& body = error.empty() ? payload : error;
    put_u32(reply, uint32_t(body.size()));
    reply += body;
    const bool delivered = write_all(c.get(), reply.data(), reply.size(), client_deadline);
    if (!error.empty()) {
      refused = error;  // that client throws it; keep waiting for the ranks of this group
      continue;
    }
    if (delivered) served.insert(rank);  // a rank whose reply was lost may connect again
  }
}

// Ranks 1..n-1: connect (retrying until rank 0 listens), identify, read the payload.
std::string join(const RendezvousOptions& o, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string last = "no attempt";
  for (;;) {
    addrinfo* res = nullptr;
    const int g = ::getaddrinfo(o.host.c_str(), std::to_string(o.port).c_str(), &hints, &res);
    if (g != 0) {
      last = fmt::format("cannot resolve '{}': {}", o.host, ::gai_strerror(g));
    } else {
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        Fd s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if (s.get() < 0) continue;
        set_nonblocking(s.get());
        int rc = ::connect(s.get(), ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
          const auto connect_deadline =
              std::min(deadline, Clock::now() + std::chrono::milliseconds(2000));
          int err = ETIMEDOUT;
          if (wait_fd(s.get(), POLLOUT, connect_deadline)) {
            socklen_t len = sizeof err;
            ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
          }
          rc = err == 0 ? 0 : -1;
          errno = err;
        }
        if (rc != 0) {
          last = fmt::format("connect: {}", std::strerror(errno));
          continue;
        }
        std::string hello(kMagic, 8);
        put_u32(hello, uint32_t(o.rank));
        put_u32(hello, uint32_t(o.world_size));
        put_u32(hello, uint32_t(o.group.size()));
        hello += o.group;
        unsigned char status = 0;
        std::string body;
        if (!write_all(s.get(), hello.data(), hello.size(), deadline) ||
            !read_all(s.get(), &status, 1, deadline) || !read_text(s.get(), &body, deadline)) {
          last = "rank 0 closed the connection before answering";
          continue;
        }
        ::freeaddrinfo(res);
        if (status != 0) GYRE_THROW(invalid_argument, "{}: refused by rank 0: {}", where(o), body);
        return body;
      }
      ::freeaddrinfo(res);
    }
    if (Clock::now() >= deadline)
      GYRE_THROW(io,
                 "{}: cannot reach rank 0 within {} s ({}): is rank 0 running, and are "
                 "MASTER_ADDR / master_address and the port right?",
                 where(o), o.timeout_s, last);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

int pick_free_port() {
  Fd s(::socket(AF_INET, SOCK_STREAM, 0));
  if (s.get() < 0) GYRE_THROW(io, "pick_free_port: socket: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    GYRE_THROW(io, "pick_free_port: {}", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::string tcp_rendezvous_share(const RendezvousOptions& o, const std::string& payload) {
  if (o.port < 1 || o.port > 65535)
    GYRE_THROW(invalid_argument, "{}: port {} is outside 1..65535", where(o), o.port);
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    GYRE_THROW(invalid_argument, "{}: rank {} is outside [0, {})", where(o), o.rank, o.world_size);
  if (o.host.empty() && o.rank != 0)
    GYRE_THROW(invalid_argument, "{}: no address of rank 0 given", where(o));
  if (!(o.timeout_s > 0))
    GYRE_THROW(invalid_argument, "{}: timeout {} s must be > 0", where(o), o.timeout_s);
  if (payload.size() > kMaxText)
    GYRE_THROW(invalid_argument, "{}: payload of {} bytes is over the {} byte limit", where(o),
               payload.size(), kMaxText);
  const auto deadline = Clock::now() + std::chrono::microseconds(int64_t(o.timeout_s * 1e6));
  if (o.world_size == 1) return payload;
  if (o.rank == 0) {
    serve(o, payload, deadline);
    return payload;
  }
  return join(o, deadline);
}

}  // namespace gyre::dist
