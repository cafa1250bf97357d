// Comm: the one collective-communication interface of gyre (DESIGN.md §"Scaling out"). CPU
// collectives go through MPI (MpiComm, dist/mpi_comm.h); a single process uses SingleProcessComm,
// whose collectives are identities, so code written against Comm runs unchanged with one rank.
//
// Invariants:
// - Every rank of a communicator calls the same collectives in the same order with the same counts
//   and dtypes (MPI's rule); a call that cannot complete within the communicator's timeout throws
//   gyre::Error naming the rank, the call and the communicator instead of hanging.
// - Reductions (all_reduce, reduce_scatter) take f32, f64 or i64 element buffers; other dtypes are
//   an Error (convert to f32 first). broadcast / all_gather / send / recv move any bytes.
// - Buffers are host memory; counts may exceed INT_MAX (implementations chunk).
// - A Comm is used from one thread at a time.
// - Started calls (*_start, finish_started) join the same ordered sequence of collectives as the
//   blocking ones: a blocking call issued after a start runs after it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"

namespace gyre::dist {

// This machine's host name ("localhost" when it cannot be read): named in every error message.
std::string local_host_name();

enum class ReduceOp { sum, max };
const char* reduce_op_name(ReduceOp op);

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "world", "dp", "tp", "sync" ...: named in every error message.
  virtual const std::string& name() const = 0;
  // Rank in the world communicator and host name (error messages name both).
  virtual int world_rank() const = 0;
  virtual std::string host() const = 0;

  // In place over `count` elements of `dtype` (f32 | f64 | i64).
  virtual void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) = 0;
  // `send` holds size() blocks of `recv_count` elements; rank r receives the reduction of block r.
  virtual void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                              ReduceOp op) = 0;
  // Every rank contributes `send_bytes` bytes; `recv` receives size() blocks in rank order.
  virtual void all_gather(const void* send, void* recv, size_t send_bytes) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void send(const void* buf, size_t bytes, int dst, int tag) = 0;
  virtual void recv(void* buf, size_t bytes, int src, int tag) = 0;
  virtual void barrier() = 0;
  // Sub-communicator of the ranks that pass the same `color` (ordered by `key`, then rank); a
  // collective call on this communicator. Used for the dp / tp process groups.
  virtual std::unique_ptr<Comm> split(int color, int key, const std::string& name) = 0;
  // Ends the whole job after an unrecoverable communication failure (MPI_Abort); the message is
  // written to stderr first. Never returns.
  [[noreturn]] virtual void abort(int code, const std::string& message) = 0;
  // Where this communicator's buffers live: host memory (MPI, single process) or the GPU (NCCL).
  // The Tensor overloads below require tensors on this device.
  virtual Device buffer_device() const { return Device::cpu; }

  // ---- Started collectives: communication overlapped with compute (the data-parallel gradient
  // buckets, dist/data_parallel.h). A *_start call runs after the GPU work the calling thread has
  // issued so far and returns without waiting for it; finish_started() orders the calling
  // thread's later GPU work after every started call (on the GPU: no host wait). The buffers must
  // stay untouched until then (a device communicator reads them after the start returns), and
  // every rank starts the same calls in the same order. Each call is still bounded by the
  // communicator's timeout. Default (host-memory communicators: MPI, single process): the
  // blocking call, and finish_started() has nothing to do — the same numbers, no overlap.
  virtual void all_reduce_start(void* buf, size_t count, DType dtype, ReduceOp op) {
    all_reduce(buf, count, dtype, op);
  }
  virtual void reduce_scatter_start(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) {
    reduce_scatter(send, recv, recv_count, dtype, op);
  }
  virtual void all_gather_start(const void* send, void* recv, size_t send_bytes) {
    all_gather(send, recv, send_bytes);
  }
  virtual void finish_started() {}

  // ---- Tensor overloads (contiguous tensors on buffer_device(); checks name the tensor argument
  // and the call).
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum);
  // `in` [n, ...] -> `out` [n / size(), ...] (n divisible by size()).
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::sum);
  // `in` [n, ...] -> `out` [size() * n, ...].
  void all_gather(const Tensor& in, Tensor& out);
  void broadcast(Tensor& t, int root);
  void send(const Tensor& t, int dst, int tag = 0);
  void recv(Tensor& t, int src, int tag = 0);

  // Small typed helpers.
  void all_reduce(std::vector<float>& v, ReduceOp op = ReduceOp::sum);
  void all_reduce(std::vector<double>& v, ReduceOp op = ReduceOp::sum);
  void all_reduce(std::vector<int64_t>& v, ReduceOp op = ReduceOp::sum);
  double all_reduce(double x, ReduceOp op = ReduceOp::sum);
  // Root's string reaches every rank (length first, then bytes).
  void broadcast(std::string& s, int root);

  // "rank 1 of 2 in 'dp' (world rank 3 on host-a)": the prefix of every error message.
  std::string where() const;

 protected:
  // Validates a reduction dtype and a peer / root rank, naming `call` in the Error.
  void check_reduce_dtype(DType dtype, const char* call) const;
  void check_peer(int peer, const char* call, const char* role) const;
};

// One process: rank 0 of 1. Collectives copy or return their input; send/recv to itself are an
// Error (there is no peer).
class SingleProcessComm : public Comm {
 public:
  explicit SingleProcessComm(std::string name = "world");
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return 0; }
  std::string host() const override;
  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) override;
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                      ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t send_bytes) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void send(const void* buf, size_t bytes, int dst, int tag) override;
  void recv(void* buf, size_t bytes, int src, int tag) override;
  void barrier() override {}
  std::unique_ptr<Comm> split(int color, int key, const std::string& name) override;
  [[noreturn]] void abort(int code, const std::string& message) override;

  using Comm::all_gather;
  using Comm::all_reduce;
  using Comm::broadcast;
  using Comm::recv;
  using Comm::reduce_scatter;
  using Comm::send;

 private:
  std::string name_;
};

// ---- Agreement on work every rank does alone (start-up, reloads): a rank whose part fails must
// not leave its peers waiting in the next collective until the communicator's timeout (or, worse,
// serving as if the group were whole).

// Collective over `comm`: each rank passes its own error (nullopt: its part succeeded). Returns
// nullopt on every rank when no rank failed, else on every rank the same text: "<label> rank <r> of
// <n>[ (and <k> more ranks)]: <error of the lowest failing rank r>" (label: the comm's name unless
// given, e.g. "tp" for a tp group that is the launcher's world).
std::optional<std::string> first_failure(Comm& comm, const std::optional<std::string>& mine,
                                         const std::string& label = {});

// Runs `work` on this rank, then agrees over `comm` (first_failure). When any rank failed, every
// rank throws: the failing ranks rethrow their own exception (same kind and message), the others
// an Error (io) "<where>: <what> failed on <label> rank r of n: <its error>; this rank stops too".
void run_on_every_rank(Comm& comm, const std::string& what, const std::function<void()>& work,
                       const std::string& label = {});

}  // namespace gyre::dist
