// MpiComm (see mpi_comm.h): non-blocking MPI calls completed against a deadline, a watchdog for
// MPI_Comm_split, chunking of transfers past MPI's int counts.
#include "gyre/dist/mpi_comm.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "gyre/core/timer.h"

#if GYRE_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (the C++ bindings warn and are deprecated)
#include <mpi.h>
#endif

namespace gyre::dist {

#if !GYRE_HAVE_MPI

bool mpi_available() { return false; }
bool mpi_initialized() { return false; }
std::unique_ptr<Comm> mpi_world_comm(double) {
  GYRE_THROW(unsupported,
             "this gyre was built without MPI; install libopenmpi-dev and rebuild to run under "
             "mpirun / srun");
}

#else

namespace {

// Set after a timeout: MPI_Finalize would wait for the stalled peer, so exit skips it.
std::atomic<bool> g_broken{false};
std::once_flag g_finalize_once;

void finalize_at_exit() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin && !g_broken.load()) MPI_Finalize();
}

// One background thread holding deadlines; an expired one writes its message and aborts the job
// (the only way out of a blocking MPI call whose peer never arrives).
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog* w = new Watchdog();  // leaked: the thread may outlive static destruction
    return *w;
  }
  uint64_t arm(double timeout_s, std::string message) {
    std::lock_guard<std::mutex> lk(mu_);
    uint64_t id = ++next_id_;
    armed_[id] = {now_seconds() + timeout_s, std::move(message)};
    cv_.notify_all();
    return id;
  }
  void disarm(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu_);
    armed_.erase(id);
  }

 private:
  struct Entry {
    double deadline;
    std::string message;
  };
  Watchdog() {
    std::thread([this] { loop(); }).detach();
  }
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait_for(lk, std::chrono::milliseconds(200));
      const double now = now_seconds();
      for (auto& [id, e] : armed_) {
        if (now < e.deadline) continue;
        std::fprintf(stderr, "error: %s\n", e.message.c_str());
        std::fflush(stderr);
        g_broken = true;
        MPI_Abort(MPI_COMM_WORLD, 3);
        std::_Exit(3);
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> armed_;
  uint64_t next_id_ = 0;
};

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    default: return MPI_BYTE;
  }
}
MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : MPI_MAX; }

// Largest element count per MPI call (MPI counts are int).
constexpr size_t kMaxChunk = size_t(1) << 30;

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, std::string name, double timeout_s, bool owned)
      : comm_(comm), name_(std::move(name)), timeout_s_(timeout_s), owned_(owned) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
    char buf[MPI_MAX_PROCESSOR_NAME + 1] = {0};
    int len = 0;
    MPI_Get_processor_name(buf, &len);
    host_.assign(buf, size_t(std::max(len, 0)));
  }
  ~MpiComm() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (owned_ && !fin && !g_broken.load()) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return world_rank_; }
  std::string host() const override { return host_; }

  using Comm::all_gather;
  using Comm::all_reduce;
  using Comm::broadcast;
  using Comm::recv;
  using Comm::reduce_scatter;
  using Comm::send;

  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override {
    check_reduce_dtype(dtype, "all_reduce");
    usable("all_reduce");
    const size_t es = dtype_size(dtype);
    for (size_t off = 0; off < count; off += kMaxChunk) {
      const int n = int(std::min(kMaxChunk, count - off));
      MPI_Request req;
      check(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(buf) + off * es, n, mpi_type(dtype),
                           mpi_op(op), comm_, &req),
            "MPI_Iallreduce");
      wait(req, "all_reduce", fmt::format("{} {} x {}", reduce_op_name(op), dtype_name(dtype), n));
    }
  }

  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                      ReduceOp op) override {
    check_reduce_dtype(dtype, "reduce_scatter");
    usable("reduce_scatter");
    const size_t es = dtype_size(dtype);
    if (recv_count <= kMaxChunk) {
      MPI_Request req;
      check(MPI_Ireduce_scatter_block(send, recv, int(recv_count), mpi_type(dtype), mpi_op(op),
                                      comm_, &req),
            "MPI_Ireduce_scatter_block");
      wait(req, "reduce_scatter", fmt::format("{} x {} per rank", dtype_name(dtype), recv_count));
      return;
    }
    // Past int counts: gather piece j of every block into a staging buffer, reduce-scatter that.
    std::vector<char> stage(kMaxChunk * es * size_t(size_));
    for (size_t off = 0; off < recv_count; off += kMaxChunk) {
      const size_t n = std::min(kMaxChunk, recv_count - off);
      for (int r = 0; r < size_; ++r)
        std::memcpy(stage.data() + size_t(r) * n * es,
                    static_cast<const char*>(send) + (size_t(r) * recv_count + off) * es, n * es);
      MPI_Request req;
      check(MPI_Ireduce_scatter_block(stage.data(), static_cast<char*>(recv) + off * es, int(n),
                                      mpi_type(dtype), mpi_op(op), comm_, &req),
            "MPI_Ireduce_scatter_block");
      wait(req, "reduce_scatter", fmt::format("{} x {} per rank", dtype_name(dtype), n));
    }
  }

  void all_gather(const void* send, void* recv, size_t send_bytes) override {
    usable("all_gather");
    if (send_bytes <= kMaxChunk) {
      MPI_Request req;
      check(MPI_Iallgather(send, int(send_bytes), MPI_BYTE, recv, int(send_bytes), MPI_BYTE, comm_,
                           &req),
            "MPI_Iallgather");
      wait(req, "all_gather", fmt::format("{} bytes per rank", send_bytes));
      return;
    }
    std::vector<char> stage(kMaxChunk * size_t(size_));
    for (size_t off = 0; off < send_bytes; off += kMaxChunk) {
      const size_t n = std::min(kMaxChunk, send_bytes - off);
      MPI_Request req;
      check(MPI_Iallgather(static_cast<const char*>(send) + off, int(n), MPI_BYTE, stage.data(),
                           int(n), MPI_BYTE, comm_, &req),
            "MPI_Iallgather");
      wait(req, "all_gather", fmt::format("{} bytes per rank", n));
      for (int r = 0; r < size_; ++r)
        std::memcpy(static_cast<char*>(recv) + size_t(r) * send_bytes + off,
                    stage.data() + size_t(r) * n, n);
    }
  }

  void broadcast(void* buf, size_t bytes, int root) override {
    check_peer(root, "broadcast", "root");
    usable("broadcast");
    for (size_t off = 0; off < bytes; off += kMaxChunk) {
      const int n = int(std::min(kMaxChunk, bytes - off));
      MPI_Request req;
      check(MPI_Ibcast(static_cast<char*>(buf) + off, n, MPI_BYTE, root, comm_, &req),
            "MPI_Ibcast");
      wait(req, "broadcast", fmt::format("{} bytes from root rank {}", n, root));
    }
  }

  void send(const void* buf, size_t bytes, int dst, int tag) override {
    check_peer(dst, "send", "destination");
    usable("send");
    for (size_t off = 0; off < bytes || off == 0; off += kMaxChunk) {
      const int n = int(std::min(kMaxChunk, bytes - off));
      MPI_Request req;
      check(MPI_Isend(static_cast<const char*>(buf) + off, n, MPI_BYTE, dst, tag, comm_, &req),
            "MPI_Isend");
      wait(req, "send",
           fmt::format("{} bytes to rank {} (tag {}), waiting for rank {}", n, dst, tag, dst));
      if (bytes == 0) break;
    }
  }

  void recv(void* buf, size_t bytes, int src, int tag) override {
    check_peer(src, "recv", "source");
    usable("recv");
    for (size_t off = 0; off < bytes || off == 0; off += kMaxChunk) {
      const int n = int(std::min(kMaxChunk, bytes - off));
      MPI_Request req;
      check(MPI_Irecv(static_cast<char*>(buf) + off, n, MPI_BYTE, src, tag, comm_, &req),
            "MPI_Irecv");
      MPI_Status st;
      wait(req, "recv",
           fmt::format("{} bytes from rank {} (tag {}), waiting for rank {}", n, src, tag, src),
           &st);
      int got = 0;
      MPI_Get_count(&st, MPI_BYTE, &got);
      if (got != n)
        GYRE_THROW(io,
                   "{}: recv from rank {} (tag {}): expected {} bytes, the peer sent {}; both "
                   "sides must agree on the message size",
                   where(), src, tag, n, got);
      if (bytes == 0) break;
    }
  }

  void barrier() override {
    usable("barrier");
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait(req, "barrier", "");
  }

  std::unique_ptr<Comm> split(int color, int key, const std::string& name) override {
    usable("split");
    if (color < 0)
      GYRE_THROW(invalid_argument, "{}: split into '{}': color {} must be >= 0", where(), name,
                 color);
    uint64_t id = Watchdog::get().arm(
        timeout_s_,
        fmt::format("{}: MPI_Comm_split into '{}' did not return within {} s: a peer rank is "
                    "stalled, dead or unreachable (every rank of '{}' must call split)",
                    where(), name, timeout_s_, name_));
    MPI_Comm out = MPI_COMM_NULL;
    int rc = MPI_Comm_split(comm_, color, key, &out);
    Watchdog::get().disarm(id);
    check(rc, "MPI_Comm_split");
    return std::make_unique<MpiComm>(out, name, timeout_s_, true);
  }

  [[noreturn]] void abort(int code, const std::string& message) override {
    std::fprintf(stderr, "error: %s: %s\n", where().c_str(), message.c_str());
    std::fflush(stderr);
    g_broken = true;
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  void usable(const char* call) const {
    if (broken_)
      GYRE_THROW(io,
                 "{}: {} on a communicator that already failed (timeout or MPI error); the job "
                 "must be restarted",
                 where(), call);
  }

  void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING + 1] = {0};
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    broken_ = true;
    g_broken = true;
    GYRE_THROW(io, "{}: {} failed: {} (MPI error {})", where(), call, std::string(msg, size_t(len)),
               rc);
  }

  // Polls the request until it completes or the deadline passes. Busy-polls (with yields, so an
  // oversubscribed peer on the same core can run) for the first second, then sleeps briefly
  // between polls: long waits are a slow peer, not latency.
  void wait(MPI_Request& req, const char* call, const std::string& detail,
            MPI_Status* status = nullptr) {
    const double start = now_seconds();
    for (uint64_t it = 0;; ++it) {
      int done = 0;
      check(MPI_Test(&req, &done, status ? status : MPI_STATUS_IGNORE), call);
      if (done) return;
      if ((it & 255) != 0) {
        std::this_thread::yield();
        continue;
      }
      const double waited = now_seconds() - start;
      if (waited > timeout_s_) {
        broken_ = true;
        g_broken = true;
        GYRE_THROW(io,
                   "{}: {} ({}) did not complete within {} s: a peer rank is stalled, dead or "
                   "unreachable. Check that every rank of '{}' reaches this call (the other "
                   "ranks' logs name where they stopped); raise the limit with "
                   "GYRE_COMM_TIMEOUT=<seconds>",
                   where(), call, detail, timeout_s_, name_);
      }
      if (waited > 1.0)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      else
        std::this_thread::yield();
    }
  }

  MPI_Comm comm_;
  std::string name_;
  double timeout_s_;
  bool owned_;
  bool broken_ = false;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  std::string host_;
};

}  // namespace

bool mpi_available() { return true; }

bool mpi_initialized() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

std::unique_ptr<Comm> mpi_world_comm(double timeout_s) {
  if (!(timeout_s > 0))
    GYRE_THROW(invalid_argument, "communication timeout must be > 0 seconds, got {}", timeout_s);
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS)
      GYRE_THROW(io, "MPI_Init_thread failed (error {}); is this process started by mpirun/srun?",
                 rc);
    if (provided < MPI_THREAD_SERIALIZED)
      GYRE_THROW(unsupported,
                 "MPI provides thread level {} but gyre needs MPI_THREAD_SERIALIZED ({}): rebuild "
                 "OpenMPI with thread support",
                 provided, int(MPI_THREAD_SERIALIZED));
    std::call_once(g_finalize_once, [] { std::atexit(finalize_at_exit); });
  }
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", timeout_s, false);
}

#endif  // GYRE_HAVE_MPI

}  // namespace gyre::dist
