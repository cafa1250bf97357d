// NcclComm: dist::Comm over NCCL for GPU collectives (DESIGN.md §"Scaling out": NCCL for GPU
// tensors, MPI for host buffers; no home-made transport).
//
// Invariants:
// - Buffers are device memory on this rank's GPU (the `device` given at creation); the Tensor
//   overloads take CUDA tensors. Reductions accept f32, f64, i64 and bf16 (NCCL sums bf16 in bf16;
//   gyre reduces gradients in f32, so bf16 is for weights/broadcast-like traffic).
// - Every call is enqueued on the communicator's own stream (comm_stream()), created non-blocking,
//   so communication can overlap compute issued on other streams. The plain (blocking) Comm calls
//   first make that stream wait for the calling thread's gyre stream (so a buffer a kernel just
//   wrote is read complete), then wait for the communication; the `*_async` calls only enqueue and
//   leave the ordering to the caller (wait_for_event), wait() completes them.
// - The communicator is created non-blocking (ncclConfig_t.blocking = 0) so that init and every
//   wait poll against a deadline: a peer that never arrives, or a collective that does not finish
//   within `timeout_s`, aborts the NCCL communicator (ncclCommAbort) and throws gyre::Error naming
//   this rank, its host, the call and the group — never a silent hang. A communicator that timed
//   out is broken: every further call throws.
// - NCCL has no message tags: send/recv between a pair of ranks match in issue order (`tag` is only
//   checked to be non-negative, for interface compatibility with MpiComm).
// - Bootstrap: rank 0 draws an ncclUniqueId and hands it to the other ranks out of band: over a
//   host Comm (MPI, nccl_comm_from), over TCP (dist/tcp_rendezvous.h: torchrun-style launches,
//   SGLang's weight-update groups), or between threads (tests on one process with several GPUs).
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "gyre/dist/comm.h"

namespace gyre::dist {

// True when gyre was built with NCCL (GYRE_HAVE_NCCL) — not whether a GPU is visible.
bool nccl_available();
// Number of visible CUDA devices (0 without CUDA or without a driver); never throws.
int cuda_device_count();

// A fresh NCCL unique id (NCCL_UNIQUE_ID_BYTES bytes) for `nccl_comm_init`.
std::string nccl_unique_id();

// Creates this rank's communicator of `nranks` on CUDA device `device`. Every rank passes the same
// `unique_id`. Errors: built without NCCL, bad device index, a timeout (peers missing).
std::unique_ptr<Comm> nccl_comm_init(const std::string& unique_id, int nranks, int rank, int device,
                                     double timeout_s, const std::string& name);

// The usual bootstrap: rank 0 of `host_comm` draws the id, broadcasts it over `host_comm`, and
// every rank joins with its own rank and size on `device`.
std::unique_ptr<Comm> nccl_comm_from(Comm& host_comm, int device, double timeout_s,
                                     const std::string& name);

#ifdef GYRE_HAVE_NCCL
// The concrete communicator, for callers that overlap communication with compute. CUDA handles are
// opaque here (void*) so this header does not pull in cuda_runtime.h / nccl.h.
class NcclComm final : public Comm {
 public:
  // Takes ownership of `comm` (an ncclComm_t); `stream` is created by the constructor.
  NcclComm(void* comm, int device, int world_rank, double timeout_s, std::string name);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return world_rank_; }
  std::string host() const override;
  Device buffer_device() const override { return Device::cuda; }

  // Synchronous calls: ordered after the GPU work the calling thread issued before them (its gyre
  // stream), enqueued on comm_stream(), then wait() for it — so a buffer just written by a kernel
  // is read complete, and the result is ready for the caller's next kernel. Host pointers are
  // accepted too (staged through device memory), so Comm's typed helpers (vectors, strings) work
  // unchanged.
  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                      ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t send_bytes) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void send(const void* buf, size_t bytes, int dst, int tag) override;
  void recv(void* buf, size_t bytes, int src, int tag) override;
  void barrier() override;
  std::unique_ptr<Comm> split(int color, int key, const std::string& name) override;
  [[noreturn]] void abort(int code, const std::string& message) override;

  // Enqueue-only variants on device buffers (no host wait): overlap with compute, then wait().
  void all_reduce_async(void* buf, size_t count, DType dtype, ReduceOp op);
  void reduce_scatter_async(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op);
  void all_gather_async(const void* send, void* recv, size_t send_bytes);
  void broadcast_async(void* buf, size_t bytes, int root);
  // Stream-ordered all-reduce of a device buffer (tensor parallelism's activations): the
  // communication stream waits for the calling thread's gyre stream, NCCL runs there, and the
  // calling thread's stream waits for it — no host wait, so the caller keeps queueing kernels
  // behind it instead of draining the GPU at every call. The timeout still holds: a watchdog
  // thread checks each such call's completion event against its deadline; one that has not
  // finished by then aborts the communicator (its stuck kernels exit, so no stream waits forever),
  // reports it on stderr at once, and every later call on the communicator throws the reason.
  void all_reduce_ordered(void* device_buf, size_t count, DType dtype, ReduceOp op);
  // The same for an all-gather of device buffers (tensor parallelism's vocab gather of the
  // logits for sampling).
  void all_gather_ordered(const void* device_send, void* device_recv, size_t send_bytes);
  // Watches the calling thread's stream as it is now (e.g. right after a CUDA graph replay whose
  // captured collectives the watchdog never saw): the communication stream waits for it, and a
  // point that does not complete within the timeout aborts the communicator like an ordered call.
  void watch_caller(const char* call);
  // CUDA graphs: the ordered and started calls are capturable — made on a capturing stream they
  // fork the communication stream from it and join it back, and are neither watched nor waited
  // for (nothing runs until a replay). The blocking calls refuse a capturing caller with an
  // Error before enqueueing anything (the communicator stays usable).
  // Started collectives (Comm's *_start; the data-parallel gradient buckets): like
  // all_reduce_ordered — the communication stream waits for the calling thread's gyre stream,
  // NCCL runs there, the watchdog bounds each call by the timeout — but the calling thread's
  // stream does not wait for them: finish_started() makes it wait (on the GPU) for every call
  // enqueued on the communication stream so far. Device buffers only.
  void all_reduce_start(void* buf, size_t count, DType dtype, ReduceOp op) override;
  void reduce_scatter_start(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override;
  void all_gather_start(const void* send, void* recv, size_t send_bytes) override;
  void finish_started() override;
  // The communication stream waits (on the GPU) for `cuda_event` (a cudaEvent_t recorded on a
  // compute stream) before running what is enqueued next.
  void wait_for_event(void* cuda_event);
  // Host waits until everything enqueued has finished; a deadline overrun or an NCCL error aborts
  // the communicator and throws.
  void wait(const char* call = "wait");
  void* comm_stream() const { return stream_; }
  int device() const { return device_; }
  // The launcher's world rank, for error messages (nccl_comm_from sets it from the host Comm).
  void set_world_rank(int r) { world_rank_ = r; }
  // Polled while a call waits: a non-empty reason aborts the communicator and fails the call with
  // it (e.g. the NCCL weight push: an engine answered "refused" and will never join the
  // broadcast). Empty function: none. Set and cleared by the thread that makes the calls.
  void set_abort_check(std::function<std::string()> check) { abort_check_ = std::move(check); }
  // Bounds every later wait, including the finalize in the destructor (an owner that knows its
  // peers are leaving, or gone, shortens it so that exit cannot block for the full timeout).
  void set_timeout(double timeout_s) { timeout_s_ = timeout_s; }

  using Comm::all_gather;
  using Comm::all_reduce;
  using Comm::broadcast;
  using Comm::recv;
  using Comm::reduce_scatter;
  using Comm::send;

 private:
  void check_alive(const char* call) const;
  // comm_stream() waits for the calling thread's gyre stream (synchronous calls only; the async
  // ones leave ordering to the caller, wait_for_event).
  void order_after_caller();
  // Polls ncclCommGetAsyncError until the last NCCL call is no longer in progress (non-blocking
  // communicators return ncclInProgress while enqueueing).
  void settle(const char* call, int result);
  [[noreturn]] void fail(const char* call, const std::string& why);

  // Called by the watchdog when an ordered call missed its deadline (or its event failed).
  void watchdog_expire(const std::string& why);
  // The ordered and started calls: waits (bounded) while `max_in_flight` watched calls are
  // pending, orders comm_stream() after the caller's stream, runs `issue` (an *_async call), then
  // records its completion event for the watchdog; with `caller_waits` the caller's stream waits
  // for that event.
  void enqueue_watched(const char* call, size_t max_in_flight, bool caller_waits,
                       const std::function<void()>& issue);
  // Whether the calling thread's gyre stream is capturing a CUDA graph; refuse_capture throws
  // (unsupported) when it is.
  bool caller_capturing() const;
  void refuse_capture(const char* call) const;

  struct Watchdog;  // the ordered calls in flight and the thread that bounds them (nccl_comm.cc)
  std::unique_ptr<Watchdog> watchdog_;
  // Guards comm_, broken_ and broken_reason_: the watchdog may abort the communicator while the
  // caller's thread uses it (recursive: fail() runs inside guarded enqueues).
  mutable std::recursive_mutex mu_;
  std::string broken_reason_;
  void* comm_;                     // ncclComm_t
  void* stream_;                   // cudaStream_t
  void* caller_event_ = nullptr;   // cudaEvent_t for order_after_caller
  void* finish_event_ = nullptr;   // cudaEvent_t for finish_started
  void* capture_event_ = nullptr;  // cudaEvent_t joining captured calls back (made on first use)
  int device_, rank_ = 0, size_ = 1, world_rank_;
  double timeout_s_;
  std::string name_;
  bool broken_ = false;
  std::function<std::string()> abort_check_;
};
#endif

}  // namespace gyre::dist
