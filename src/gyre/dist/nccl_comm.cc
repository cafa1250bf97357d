// NcclComm (see nccl_comm.h): NCCL collectives on the communicator's own stream, with every wait
// bounded by a deadline. Built only where CUDA and NCCL are (GYRE_HAVE_NCCL); elsewhere the
// factories throw Error(unsupported) saying how to get a build with NCCL.
#include "gyre/dist/nccl_comm.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include "gyre/core/error.h"

#ifdef GYRE_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "gyre/backend/cuda/runtime.h"
#endif

namespace gyre::dist {

#ifndef GYRE_HAVE_NCCL

namespace {
[[noreturn]] void no_nccl(const char* what) {
  GYRE_THROW(unsupported,
             "{}: this gyre binary is built without NCCL (GPU collectives); reconfigure with "
             "-DGYRE_CUDA=ON on a machine with the CUDA toolkit and NCCL, or use the MPI "
             "communicator for host buffers",
             what);
}
}  // namespace

bool nccl_available() { return false; }
int cuda_device_count() { return 0; }
std::string nccl_unique_id() { no_nccl("nccl_unique_id"); }
std::unique_ptr<Comm> nccl_comm_init(const std::string&, int, int, int, double,
                                     const std::string&) {
  no_nccl("nccl_comm_init");
}
std::unique_ptr<Comm> nccl_comm_from(Comm&, int, double, const std::string&) {
  no_nccl("nccl_comm_from");
}

#else  // GYRE_HAVE_NCCL

namespace {

using Clock = std::chrono::steady_clock;

ncclComm_t as_comm(void* p) { return static_cast<ncclComm_t>(p); }
cudaStream_t as_stream(void* p) { return static_cast<cudaStream_t>(p); }

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    GYRE_THROW(internal, "CUDA call {} failed: {}", what, cudaGetErrorString(e));
}

ncclRedOp_t to_nccl(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

// A non-blocking config: every call returns at once and progress is polled (so waits can time out).
ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

// Waits for a non-blocking communicator to leave ncclInProgress; false on deadline.
bool poll_ready(ncclComm_t comm, ncclResult_t* state, Clock::time_point deadline) {
  for (int spins = 0;; ++spins) {
    if (ncclCommGetAsyncError(comm, state) != ncclSuccess) return true;
    if (*state != ncclInProgress) return true;
    if (Clock::now() > deadline) return false;
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::microseconds(int64_t(seconds * 1e6));
}

// Device copy of a host buffer (or the buffer itself when it is already device memory), so the
// typed helpers of Comm (vectors, strings, scalars) work on an NCCL communicator.
class Staged {
 public:
  Staged(const void* p, size_t bytes, bool copy_in, cudaStream_t s)
      : host_(const_cast<void*>(p)), bytes_(bytes), stream_(s) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) == cudaSuccess &&
        (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged)) {
      dev_ = host_;
      return;
    }
    cudaGetLastError();  // clear the error of an unregistered host pointer
    staged_ = true;
    cuda_check(cudaMallocAsync(&dev_, bytes ? bytes : 1, s), "cudaMallocAsync (staging)");
    if (copy_in && bytes)
      cuda_check(cudaMemcpyAsync(dev_, p, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
  }
  ~Staged() {
    if (staged_) cudaFreeAsync(dev_, stream_);
  }
  void* dev() const { return dev_; }
  bool staged() const { return staged_; }
  void copy_out() {
    if (staged_ && bytes_)
      cuda_check(cudaMemcpyAsync(host_, dev_, bytes_, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync");
  }

 private:
  void* host_;
  void* dev_ = nullptr;
  size_t bytes_;
  cudaStream_t stream_;
  bool staged_ = false;
};

}  // namespace

bool nccl_available() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string nccl_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    GYRE_THROW(io, "ncclGetUniqueId failed: {} ({})", ncclGetErrorString(r),
               ncclGetLastError(nullptr));
  return std::string(id.internal, sizeof(id.internal));
}

std::unique_ptr<Comm> nccl_comm_init(const std::string& unique_id, int nranks, int rank, int device,
                                     double timeout_s, const std::string& name) {
  if (unique_id.size() != sizeof(ncclUniqueId::internal))
    GYRE_THROW(invalid_argument, "nccl_comm_init '{}': unique id has {} bytes, expected {}", name,
               unique_id.size(), sizeof(ncclUniqueId::internal));
  if (nranks < 1 || rank < 0 || rank >= nranks)
    GYRE_THROW(invalid_argument, "nccl_comm_init '{}': rank {} outside [0, {})", name, rank,
               nranks);
  const int devices = cuda_device_count();
  if (device < 0 || device >= devices)
    GYRE_THROW(invalid_argument,
               "nccl_comm_init '{}' rank {}: CUDA device {} does not exist ({} visible); give each "
               "rank a device in [0, {}) (CUDA_VISIBLE_DEVICES)",
               name, rank, device, devices, devices);
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, nranks, id, rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress)
    GYRE_THROW(io, "ncclCommInitRankConfig '{}' rank {} of {}: {} ({})", name, rank, nranks,
               ncclGetErrorString(r), ncclGetLastError(comm));
  ncclResult_t state = ncclInProgress;
  if (!poll_ready(comm, &state, deadline_after(timeout_s))) {
    ncclCommAbort(comm);
    GYRE_THROW(io,
               "NCCL communicator '{}' rank {} of {}: the other ranks did not join within {} s "
               "(are all {} ranks started, with the same unique id, and can they reach each "
               "other?)",
               name, rank, nranks, timeout_s, nranks);
  }
  if (state != ncclSuccess) {
    ncclCommAbort(comm);
    GYRE_THROW(io, "NCCL communicator '{}' rank {} of {}: init failed: {}", name, rank, nranks,
               ncclGetErrorString(state));
  }
  return std::make_unique<NcclComm>(comm, device, rank, timeout_s, name);
}

std::unique_ptr<Comm> nccl_comm_from(Comm& host_comm, int device, double timeout_s,
                                     const std::string& name) {
  std::string id = host_comm.rank() == 0 ? nccl_unique_id() : std::string();
  host_comm.broadcast(id, 0);
  auto c = nccl_comm_init(id, host_comm.size(), host_comm.rank(), device, timeout_s, name);
  static_cast<NcclComm&>(*c).set_world_rank(host_comm.world_rank());
  return c;
}

// ---- NcclComm

NcclComm::NcclComm(void* comm, int device, int world_rank, double timeout_s, std::string name)
    : comm_(comm),
      stream_(nullptr),
      device_(device),
      world_rank_(world_rank),
      timeout_s_(timeout_s),
      name_(std::move(name)) {
  ncclCommUserRank(as_comm(comm_), &rank_);
  ncclCommCount(as_comm(comm_), &size_);
  cuda_check(cudaSetDevice(device_), "cudaSetDevice");
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  stream_ = s;
  cudaEvent_t e = nullptr;
  cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  caller_event_ = e;
  cudaEvent_t f = nullptr;
  cuda_check(cudaEventCreateWithFlags(&f, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  finish_event_ = f;
}

// The ordered calls in flight: each one's completion event (recorded on the communication stream
// after its NCCL call) with its deadline, checked in order by one thread; spare events are reused.
struct NcclComm::Watchdog {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  struct Pending {
    cudaEvent_t event;
    Clock::time_point deadline;
    const char* call;
  };
  std::deque<Pending> pending;
  std::vector<cudaEvent_t> spare;
  std::thread thread;

  void run(NcclComm* comm, int device) {
    cudaSetDevice(device);
    // This thread only queries events of eager work; relaxed, its queries can never invalidate a
    // CUDA graph capture another thread runs (nor be refused because of one).
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return stop || !pending.empty(); });
      if (stop) return;
      const auto [event, deadline, call] = pending.front();
      lk.unlock();
      const cudaError_t q = cudaEventQuery(event);
      std::string why;
      if (q == cudaErrorNotReady && Clock::now() > deadline)
        why = fmt::format(
            "a stream-ordered {} did not complete within {} s (GYRE_COMM_TIMEOUT); a peer "
            "rank is stalled or dead",
            call, comm->timeout_s_);
      else if (q != cudaSuccess && q != cudaErrorNotReady)
        why = fmt::format(
            "a CUDA error was seen while a stream-ordered {} was pending (it may come "
            "from an earlier kernel): {}",
            call, cudaGetErrorString(q));
      if (!why.empty()) comm->watchdog_expire(why);  // the stuck kernels exit: events complete
      if (q == cudaErrorNotReady && why.empty())
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      lk.lock();
      if (q == cudaSuccess || !why.empty()) {
        if (!why.empty()) cudaGetLastError();
        pending.pop_front();
        spare.push_back(event);
      }
    }
  }
};

void NcclComm::watchdog_expire(const std::string& why) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  if (broken_) return;
  broken_ = true;
  broken_reason_ = why;
  if (comm_) ncclCommAbort(as_comm(comm_));
  comm_ = nullptr;
  // Said at once: the caller may be blocked in an unrelated host wait until the abort lands.
  std::fprintf(stderr, "gyre: %s: NCCL communicator '%s' aborted: %s\n", where().c_str(),
               name_.c_str(), why.c_str());
  std::fflush(stderr);
}

bool NcclComm::caller_capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cuda_check(cudaStreamIsCapturing(gyre::cuda::stream(), &status), "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

void NcclComm::refuse_capture(const char* call) const {
  // Thrown before anything is enqueued (the communicator stays usable): a blocking call would
  // query or drain a capturing stream, which invalidates the capture and would fail() — abort —
  // the communicator.
  if (caller_capturing())
    GYRE_THROW(unsupported,
               "{}: NCCL {} waits on the host and cannot run inside a CUDA graph capture; only the "
               "stream-ordered calls (all_reduce_ordered, all_gather_ordered) are capturable",
               where(), call);
}

void NcclComm::enqueue_watched(const char* call, size_t max_in_flight, bool caller_waits,
                               const std::function<void()>& issue) {
  cudaSetDevice(device_);
  if (caller_capturing()) {
    // Inside a CUDA graph capture (the TP decode graphs): the communication stream forks from the
    // capturing stream (order_after_caller's event) and joins back (capture_event_), so the NCCL
    // kernel becomes a node of the graph (NCCL >= 2.9). Nothing is executed now, so nothing is
    // watched or waited for: the replays are bounded instead (watch_caller after each launch).
    check_alive(call);
    order_after_caller();
    issue();
    if (!capture_event_) {
      cudaEvent_t e = nullptr;
      cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
      capture_event_ = e;
    }
    const auto ev = static_cast<cudaEvent_t>(capture_event_);
    cuda_check(cudaEventRecord(ev, as_stream(stream_)), "cudaEventRecord");
    // Joined even for the started calls: a capture must end with every forked stream joined.
    cuda_check(cudaStreamWaitEvent(gyre::cuda::stream(), ev, 0), "cudaStreamWaitEvent");
    return;
  }
  if (!watchdog_) {
    watchdog_ = std::make_unique<Watchdog>();
    watchdog_->thread = std::thread([this] { watchdog_->run(this, device_); });
  }
  // Bounded run-ahead: with max_in_flight calls pending the host waits (against the deadline) for
  // the oldest. Unbounded, a stuck collective would let the host queue kernels until a launch
  // blocks inside the enqueue below, holding mu_, so the watchdog could never abort.
  for (const auto deadline = deadline_after(timeout_s_);;) {
    cudaEvent_t oldest = nullptr;
    {
      std::lock_guard<std::mutex> lk(watchdog_->mu);
      if (watchdog_->pending.size() >= max_in_flight) oldest = watchdog_->pending.front().event;
    }
    if (!oldest || cudaEventQuery(oldest) != cudaErrorNotReady) break;  // (the watchdog pops it)
    check_alive(call);
    if (Clock::now() > deadline)
      fail(call, fmt::format("an earlier stream-ordered collective did not complete within {} s "
                             "(GYRE_COMM_TIMEOUT); a peer rank is stalled or dead",
                             timeout_s_));
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  order_after_caller();
  issue();
  cudaEvent_t done = nullptr;
  {
    std::lock_guard<std::mutex> lk(watchdog_->mu);
    if (!watchdog_->spare.empty()) {
      done = watchdog_->spare.back();
      watchdog_->spare.pop_back();
    }
  }
  if (!done)
    cuda_check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  cuda_check(cudaEventRecord(done, as_stream(stream_)), "cudaEventRecord");
  if (caller_waits)
    cuda_check(cudaStreamWaitEvent(gyre::cuda::stream(), done, 0), "cudaStreamWaitEvent");
  {
    std::lock_guard<std::mutex> lk(watchdog_->mu);
    watchdog_->pending.push_back({done, deadline_after(timeout_s_), call});
  }
  watchdog_->cv.notify_one();
}

void NcclComm::all_reduce_ordered(void* buf, size_t count, DType dtype, ReduceOp op) {
  enqueue_watched("all-reduce", 16, true, [&] { all_reduce_async(buf, count, dtype, op); });
}

void NcclComm::all_gather_ordered(const void* send, void* recv, size_t send_bytes) {
  enqueue_watched("all-gather", 16, true, [&] { all_gather_async(send, recv, send_bytes); });
}

void NcclComm::watch_caller(const char* call) {
  // An empty issue: the communication stream waits for the caller's stream (everything the
  // caller enqueued, e.g. a graph replay holding collectives), and that point is watched.
  enqueue_watched(call, 16, false, [] {});
}

// The started calls may all be in flight during one backward (a data-parallel step has a bucket
// per layer or so): a deeper bound than the activations' ordered all-reduces.
constexpr size_t kMaxStartedInFlight = 256;

void NcclComm::all_reduce_start(void* buf, size_t count, DType dtype, ReduceOp op) {
  enqueue_watched("all-reduce", kMaxStartedInFlight, false,
                  [&] { all_reduce_async(buf, count, dtype, op); });
}

void NcclComm::reduce_scatter_start(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) {
  enqueue_watched("reduce-scatter", kMaxStartedInFlight, false,
                  [&] { reduce_scatter_async(send, recv, recv_count, dtype, op); });
}

void NcclComm::all_gather_start(const void* send, void* recv, size_t send_bytes) {
  enqueue_watched("all-gather", kMaxStartedInFlight, false,
                  [&] { all_gather_async(send, recv, send_bytes); });
}

void NcclComm::finish_started() {
  check_alive("finish_started");
  cudaSetDevice(device_);
  // Everything enqueued on the communication stream so far (the started calls, in order).
  cuda_check(cudaEventRecord(static_cast<cudaEvent_t>(finish_event_), as_stream(stream_)),
             "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(gyre::cuda::stream(), static_cast<cudaEvent_t>(finish_event_), 0),
             "cudaStreamWaitEvent");
}

NcclComm::~NcclComm() {
  if (watchdog_) {
    {
      std::lock_guard<std::mutex> lk(watchdog_->mu);
      watchdog_->stop = true;
    }
    watchdog_->cv.notify_one();
    watchdog_->thread.join();
    for (auto& p : watchdog_->pending) cudaEventDestroy(p.event);  // freed once complete
    for (cudaEvent_t e : watchdog_->spare) cudaEventDestroy(e);
  }
  if (comm_) {
    cudaSetDevice(device_);
    // Flush what was issued, bounded by the timeout; a communicator that cannot finish is aborted.
    ncclResult_t state = ncclInProgress;
    if (!broken_ && ncclCommFinalize(as_comm(comm_)) != ncclInternalError &&
        poll_ready(as_comm(comm_), &state, deadline_after(timeout_s_)) && state == ncclSuccess)
      ncclCommDestroy(as_comm(comm_));
    else
      ncclCommAbort(as_comm(comm_));
  }
  if (caller_event_) cudaEventDestroy(static_cast<cudaEvent_t>(caller_event_));
  if (finish_event_) cudaEventDestroy(static_cast<cudaEvent_t>(finish_event_));
  if (capture_event_) cudaEventDestroy(static_cast<cudaEvent_t>(capture_event_));
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}

void NcclComm::order_after_caller() {
  // The calling thread's gyre stream (backend/cuda/runtime.h): kernels that produced a device
  // buffer this call reads (gradients flattened by a copy) must finish before NCCL reads it.
  cuda_check(cudaEventRecord(static_cast<cudaEvent_t>(caller_event_), gyre::cuda::stream()),
             "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(as_stream(stream_), static_cast<cudaEvent_t>(caller_event_), 0),
             "cudaStreamWaitEvent");
}

std::string NcclComm::host() const { return local_host_name(); }

void NcclComm::check_alive(const char* call) const {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  if (broken_)
    GYRE_THROW(io,
               "{}: {} on NCCL communicator '{}', which failed or timed out earlier{}; its state "
               "is undefined, restart the job",
               where(), call, name_, broken_reason_.empty() ? "" : " (" + broken_reason_ + ")");
}

void NcclComm::fail(const char* call, const std::string& why) {
  {
    std::lock_guard<std::recursive_mutex> lk(mu_);
    if (!broken_) broken_reason_ = fmt::format("{}: {}", call, why);
    broken_ = true;
    if (comm_) ncclCommAbort(as_comm(comm_));
    comm_ = nullptr;
  }
  GYRE_THROW(io, "{}: NCCL {} failed: {}", where(), call, why);
}

void NcclComm::settle(const char* call, int result) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  const auto r = ncclResult_t(result);
  if (r != ncclSuccess && r != ncclInProgress)
    fail(call, fmt::format("{} ({})", ncclGetErrorString(r), ncclGetLastError(as_comm(comm_))));
  ncclResult_t state = ncclInProgress;
  if (!poll_ready(as_comm(comm_), &state, deadline_after(timeout_s_)))
    fail(call, fmt::format("still enqueueing after {} s (a peer is missing?)", timeout_s_));
  if (state != ncclSuccess) fail(call, ncclGetErrorString(state));
}

void NcclComm::wait(const char* call) {
  check_alive(call);
  cudaSetDevice(device_);
  const auto deadline = deadline_after(timeout_s_);
  for (int spins = 0;; ++spins) {
    const cudaError_t q = cudaStreamQuery(as_stream(stream_));
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) fail(call, cudaGetErrorString(q));
    {
      std::lock_guard<std::recursive_mutex> lk(mu_);  // the watchdog may have aborted it
      check_alive(call);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(as_comm(comm_), &state);
      if (state != ncclSuccess && state != ncclInProgress) fail(call, ncclGetErrorString(state));
    }
    if (abort_check_ && spins % 64 == 0)
      if (std::string why = abort_check_(); !why.empty()) fail(call, why);
    if (Clock::now() > deadline)
      fail(call, fmt::format("did not complete within {} s (GYRE_COMM_TIMEOUT); a peer rank is "
                             "stalled or dead",
                             timeout_s_));
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  check_alive(call);  // a stream that drained because the watchdog aborted it holds garbage
}

namespace {
ncclDataType_t nccl_dtype(DType d, const Comm& c, const char* call) {
  switch (d) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i64: return ncclInt64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    default: break;
  }
  GYRE_THROW(invalid_argument, "{}: {}: NCCL cannot reduce {} buffers; use f32", c.where(), call,
             dtype_name(d));
}
}  // namespace

void NcclComm::all_reduce_async(void* buf, size_t count, DType dtype, ReduceOp op) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  check_alive("all_reduce");
  cudaSetDevice(device_);
  settle("all_reduce", ncclAllReduce(buf, buf, count, nccl_dtype(dtype, *this, "all_reduce"),
                                     to_nccl(op), as_comm(comm_), as_stream(stream_)));
}

void NcclComm::reduce_scatter_async(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  check_alive("reduce_scatter");
  cudaSetDevice(device_);
  settle("reduce_scatter",
         ncclReduceScatter(send, recv, recv_count, nccl_dtype(dtype, *this, "reduce_scatter"),
                           to_nccl(op), as_comm(comm_), as_stream(stream_)));
}

void NcclComm::all_gather_async(const void* send, void* recv, size_t send_bytes) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  check_alive("all_gather");
  cudaSetDevice(device_);
  settle("all_gather",
         ncclAllGather(send, recv, send_bytes, ncclUint8, as_comm(comm_), as_stream(stream_)));
}

void NcclComm::broadcast_async(void* buf, size_t bytes, int root) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  check_alive("broadcast");
  check_peer(root, "broadcast", "root");
  cudaSetDevice(device_);
  settle("broadcast",
         ncclBroadcast(buf, buf, bytes, ncclUint8, root, as_comm(comm_), as_stream(stream_)));
}

void NcclComm::wait_for_event(void* cuda_event) {
  check_alive("wait_for_event");
  cuda_check(cudaStreamWaitEvent(as_stream(stream_), static_cast<cudaEvent_t>(cuda_event), 0),
             "cudaStreamWaitEvent");
}

void NcclComm::all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  refuse_capture("all_reduce");
  cudaSetDevice(device_);
  order_after_caller();
  Staged b(buf, count * dtype_size(dtype), true, as_stream(stream_));
  all_reduce_async(b.dev(), count, dtype, op);
  wait("all_reduce");
  b.copy_out();        // after the wait: a D2H copy into pageable memory blocks the host
  wait("all_reduce");  // until the stream drains, which must stay under the deadline
}

void NcclComm::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                              ReduceOp op) {
  refuse_capture("reduce_scatter");
  cudaSetDevice(device_);
  order_after_caller();
  const size_t block = recv_count * dtype_size(dtype);
  Staged s(send, block * size_t(size_), true, as_stream(stream_));
  Staged r(recv, block, false, as_stream(stream_));
  reduce_scatter_async(s.dev(), r.dev(), recv_count, dtype, op);
  wait("reduce_scatter");
  r.copy_out();  // after the wait (see all_reduce)
  wait("reduce_scatter");
}

void NcclComm::all_gather(const void* send, void* recv, size_t send_bytes) {
  refuse_capture("all_gather");
  cudaSetDevice(device_);
  order_after_caller();
  Staged s(send, send_bytes, true, as_stream(stream_));
  Staged r(recv, send_bytes * size_t(size_), false, as_stream(stream_));
  all_gather_async(s.dev(), r.dev(), send_bytes);
  wait("all_gather");
  r.copy_out();  // after the wait (see all_reduce)
  wait("all_gather");
}

void NcclComm::broadcast(void* buf, size_t bytes, int root) {
  refuse_capture("broadcast");
  cudaSetDevice(device_);
  order_after_caller();
  Staged b(buf, bytes, rank_ == root, as_stream(stream_));
  broadcast_async(b.dev(), bytes, root);
  wait("broadcast");
  b.copy_out();       // after the wait: a D2H copy into pageable memory blocks the host
  wait("broadcast");  // until the stream drains, which must stay under the deadline
}

void NcclComm::send(const void* buf, size_t bytes, int dst, int tag) {
  refuse_capture("send");
  check_alive("send");
  check_peer(dst, "send", "destination");
  if (dst == rank_ || tag < 0)
    GYRE_THROW(invalid_argument, "{}: send to rank {} with tag {}: needs another rank, tag >= 0",
               where(), dst, tag);
  cudaSetDevice(device_);
  order_after_caller();
  Staged b(buf, bytes, true, as_stream(stream_));
  {
    std::lock_guard<std::recursive_mutex> lk(mu_);
    check_alive("send");
    settle("send", ncclSend(b.dev(), bytes, ncclUint8, dst, as_comm(comm_), as_stream(stream_)));
  }
  wait("send");
}

void NcclComm::recv(void* buf, size_t bytes, int src, int tag) {
  refuse_capture("recv");
  check_alive("recv");
  check_peer(src, "recv", "source");
  if (src == rank_ || tag < 0)
    GYRE_THROW(invalid_argument, "{}: recv from rank {} with tag {}: needs another rank, tag >= 0",
               where(), src, tag);
  cudaSetDevice(device_);
  order_after_caller();
  Staged b(buf, bytes, false, as_stream(stream_));
  {
    std::lock_guard<std::recursive_mutex> lk(mu_);
    check_alive("recv");
    settle("recv", ncclRecv(b.dev(), bytes, ncclUint8, src, as_comm(comm_), as_stream(stream_)));
  }
  wait("recv");
  b.copy_out();  // after the wait (see all_reduce)
  wait("recv");
}

// NCCL has no barrier: an all-reduce of one int is the standard substitute.
void NcclComm::barrier() {
  int64_t one = 1;
  all_reduce(&one, 1, DType::i64, ReduceOp::sum);
}

std::unique_ptr<Comm> NcclComm::split(int color, int key, const std::string& name) {
  check_alive("split");
  if (color < 0)
    GYRE_THROW(invalid_argument, "{}: split into '{}': color {} must be >= 0", where(), name,
               color);
  cudaSetDevice(device_);
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t sub = nullptr;
  {
    std::lock_guard<std::recursive_mutex> lk(mu_);
    check_alive("split");
    settle("split", ncclCommSplit(as_comm(comm_), color, key, &sub, &cfg));
  }
  ncclResult_t state = ncclInProgress;
  if (!poll_ready(sub, &state, deadline_after(timeout_s_)) || state != ncclSuccess) {
    if (sub) ncclCommAbort(sub);
    fail("split", "the new communicator did not come up");
  }
  auto c = std::make_unique<NcclComm>(sub, device_, world_rank_, timeout_s_, name);
  return c;
}

void NcclComm::abort(int code, const std::string& message) {
  std::fprintf(stderr, "%s: aborting: %s\n", where().c_str(), message.c_str());
  std::fflush(stderr);
  {
    std::lock_guard<std::recursive_mutex> lk(mu_);
    if (comm_) ncclCommAbort(as_comm(comm_));
    comm_ = nullptr;
  }
  std::_Exit(code);
}

#endif  // GYRE_HAVE_NCCL

}  // namespace gyre::dist
