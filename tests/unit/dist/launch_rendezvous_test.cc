// The torchrun-style launch (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), one GPU
// per local rank (bind_local_gpu), and the TCP rendezvous that shares the NCCL id without MPI —
// ranks as threads of this process over localhost, every failure bounded by its timeout.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tcp_rendezvous.h"
#include "test_util.h"

namespace gyre::dist {
namespace {

GetEnv fake_env(std::map<std::string, std::string> vars) {
  auto holder = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [holder](const char* n) -> const char* {
    auto it = holder->find(n);
    return it == holder->end() ? nullptr : it->second.c_str();
  };
}

using test::error_of;

TEST(LaunchParse, ReadsTorchrunStyleVariables) {
  LaunchInfo li = detect_launch(fake_env({{"RANK", "1"},
                                          {"WORLD_SIZE", "2"},
                                          {"LOCAL_RANK", "1"},
                                          {"LOCAL_WORLD_SIZE", "2"},
                                          {"MASTER_ADDR", "10.0.0.7"},
                                          {"MASTER_PORT", "29500"}}));
  EXPECT_EQ(li.launcher, "env");
  EXPECT_EQ(li.rank, 1);
  EXPECT_EQ(li.size, 2);
  EXPECT_EQ(li.local_rank, 1);
  EXPECT_EQ(li.local_size, 2);
  EXPECT_EQ(li.master_addr, "10.0.0.7");
  EXPECT_EQ(li.master_port, 29500);
  // One rank needs no rendezvous address.
  LaunchInfo one = detect_launch(fake_env({{"RANK", "0"}, {"WORLD_SIZE", "1"}}));
  EXPECT_EQ(one.launcher, "env");
  EXPECT_EQ(one.size, 1);
  // mpirun's variables win over leftovers of another launcher.
  LaunchInfo m = detect_launch(fake_env({{"OMPI_COMM_WORLD_RANK", "0"},
                                         {"OMPI_COMM_WORLD_SIZE", "2"},
                                         {"RANK", "5"},
                                         {"WORLD_SIZE", "8"}}));
  EXPECT_EQ(m.launcher, "mpirun");
}

TEST(LaunchParse, TorchrunStyleErrorsNameTheVariable) {
  auto err = [](std::map<std::string, std::string> env) {
    return error_of([&] { detect_launch(fake_env(env)); });
  };
  EXPECT_NE(err({{"WORLD_SIZE", "2"}}).find("RANK is not"), std::string::npos);
  EXPECT_NE(err({{"WORLD_SIZE", "2"}, {"RANK", "2"}}).find("RANK=2 is outside [0, WORLD_SIZE=2)"),
            std::string::npos);
  EXPECT_NE(err({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "1234"}})
                .find("without MASTER_ADDR"),
            std::string::npos);
  EXPECT_NE(err({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "0"}})
                .find("MASTER_PORT must be set"),
            std::string::npos);
  EXPECT_NE(err({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "x"}})
                .find("MASTER_PORT='x' is not an integer"),
            std::string::npos);
  EXPECT_NE(err({{"WORLD_SIZE", "2"},
                 {"RANK", "0"},
                 {"LOCAL_RANK", "2"},
                 {"LOCAL_WORLD_SIZE", "2"},
                 {"MASTER_ADDR", "h"},
                 {"MASTER_PORT", "1"}})
                .find("LOCAL_RANK=2 is outside"),
            std::string::npos);
}

// Restores CUDA_VISIBLE_DEVICES / GYRE_BIND_GPU after a test that changes them.
struct EnvGuard {
  std::map<std::string, std::optional<std::string>> saved;
  explicit EnvGuard(std::vector<std::string> names) {
    for (auto& n : names) {
      const char* v = std::getenv(n.c_str());
      saved[n] = v ? std::optional<std::string>(v) : std::nullopt;
    }
  }
  ~EnvGuard() {
    for (auto& [n, v] : saved) v ? ::setenv(n.c_str(), v->c_str(), 1) : ::unsetenv(n.c_str());
  }
};

std::string visible() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v ? v : "<unset>";
}

TEST(BindLocalGpu, OneGpuPerLocalRank) {
  EnvGuard g({"CUDA_VISIBLE_DEVICES", "GYRE_BIND_GPU"});
  ::unsetenv("GYRE_BIND_GPU");
  LaunchInfo li;
  li.launcher = "env", li.size = 4, li.rank = 3, li.local_rank = 1, li.local_size = 2;
  ::unsetenv("CUDA_VISIBLE_DEVICES");
  bind_local_gpu(li);
  EXPECT_EQ(visible(), "1");
  ::setenv("CUDA_VISIBLE_DEVICES", "4,5,6", 1);  // the local_rank-th of the given list
  bind_local_gpu(li);
  EXPECT_EQ(visible(), "5");
  ::setenv("CUDA_VISIBLE_DEVICES", "3", 1);  // already bound by the launcher: kept
  bind_local_gpu(li);
  EXPECT_EQ(visible(), "3");
  ::unsetenv("CUDA_VISIBLE_DEVICES");
  ::setenv("GYRE_BIND_GPU", "0", 1);  // opted out
  bind_local_gpu(li);
  EXPECT_EQ(visible(), "<unset>");
  ::unsetenv("GYRE_BIND_GPU");
  li.local_size = 1, li.local_rank = 0;  // one rank on this node: nothing to choose
  bind_local_gpu(li);
  EXPECT_EQ(visible(), "<unset>");
}

RendezvousOptions opts(int port, int rank, int world, double timeout = 20) {
  RendezvousOptions o;
  o.host = "127.0.0.1", o.port = port, o.rank = rank, o.world_size = world, o.timeout_s = timeout;
  return o;
}

TEST(TcpRendezvous, EveryRankGetsRankZerosPayload) {
  const int port = pick_free_port();
  const std::string id(128, '\x7f');  // an NCCL id's size, bytes that are not text
  std::vector<std::future<std::string>> joiners;
  for (int r = 1; r < 4; ++r)  // clients may start before rank 0 listens: they retry
    joiners.push_back(std::async(
        std::launch::async, [=] { return tcp_rendezvous_share(opts(port, r, 4), "ignored"); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(tcp_rendezvous_share(opts(port, 0, 4), id), id);
  for (auto& j : joiners) EXPECT_EQ(j.get(), id);
  // One rank: no socket at all.
  EXPECT_EQ(tcp_rendezvous_share(opts(port, 0, 1), "solo"), "solo");
}

TEST(TcpRendezvous, MismatchedWorldOrGroupIsRefusedWithoutStoppingRankZero) {
  const int port = pick_free_port();
  // A stray client (another world size) connects first and is refused by name; rank 0 keeps
  // waiting and serves the right rank 1 that comes after it.
  auto stray = std::async(std::launch::async, [=] {
    return error_of([&] { tcp_rendezvous_share(opts(port, 1, 3), ""); });
  });
  auto right = std::async(std::launch::async, [=] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    return tcp_rendezvous_share(opts(port, 1, 2), "");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(tcp_rendezvous_share(opts(port, 0, 2), "id"), "id");
  EXPECT_EQ(right.get(), "id");
  const std::string c = stray.get();
  EXPECT_NE(c.find("refused by rank 0"), std::string::npos) << c;
  EXPECT_NE(c.find("rank 1 expects a world of 3 but rank 0 has 2"), std::string::npos) << c;

  // Only a client of another group comes: rank 0's timeout names the refusal.
  const int port2 = pick_free_port();
  auto other = std::async(std::launch::async, [=] {
    RendezvousOptions o = opts(port2, 1, 2, 5);
    o.group = "weights";
    return error_of([&] { tcp_rendezvous_share(o, ""); });
  });
  const std::string s2 = error_of([&] { tcp_rendezvous_share(opts(port2, 0, 2, 1.5), "id"); });
  EXPECT_NE(s2.find("ranks 1 did not connect"), std::string::npos) << s2;
  EXPECT_NE(s2.find("group 'weights' connected to rank 0 of group 'world'"), std::string::npos)
      << s2;
  EXPECT_NE(other.get().find("refused"), std::string::npos);
}

TEST(TcpRendezvous, AbortCheckStopsRankZerosWait) {
  RendezvousOptions o = opts(pick_free_port(), 0, 2, 30);
  o.abort_check = [] { return std::string("engine 1 answered 400"); };
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { tcp_rendezvous_share(o, "id"); });
  EXPECT_NE(e.find("stopped waiting for the other ranks: engine 1 answered 400"), std::string::npos)
      << e;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

TEST(TcpRendezvous, MissingRanksAndUnreachableRankZeroTimeOut) {
  const int port = pick_free_port();
  auto one =
      std::async(std::launch::async, [=] { return tcp_rendezvous_share(opts(port, 1, 3, 5), ""); });
  const auto t0 = std::chrono::steady_clock::now();
  const std::string server = error_of([&] { tcp_rendezvous_share(opts(port, 0, 3, 1.5), "id"); });
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(server.find("ranks 2 did not connect within 1.5 s"), std::string::npos) << server;
  EXPECT_LT(waited, 10.0);
  EXPECT_EQ(one.get(), "id");  // the rank that came was served before the deadline

  const int nobody = pick_free_port();  // nothing listens there
  const std::string c = error_of([&] { tcp_rendezvous_share(opts(nobody, 1, 2, 0.5), ""); });
  EXPECT_NE(c.find("cannot reach rank 0 within 0.5 s"), std::string::npos) << c;
  EXPECT_NE(c.find("127.0.0.1:" + std::to_string(nobody)), std::string::npos) << c;
}

TEST(TcpRendezvous, BadOptionsAreRejectedBeforeAnySocket) {
  EXPECT_NE(error_of([] { tcp_rendezvous_share(opts(0, 0, 2), ""); }).find("outside 1..65535"),
            std::string::npos);
  EXPECT_NE(error_of([] { tcp_rendezvous_share(opts(80, 2, 2), ""); }).find("rank 2 is outside"),
            std::string::npos);
  RendezvousOptions o = opts(1234, 1, 2);
  o.host.clear();
  EXPECT_NE(error_of([&] { tcp_rendezvous_share(o, ""); }).find("no address of rank 0"),
            std::string::npos);
}

}  // namespace
}  // namespace gyre::dist
