// Comm's shared parts (Tensor overloads, argument checks, typed helpers) and SingleProcessComm.
#include "gyre/dist/comm.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace gyre::dist {

const char* reduce_op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "max"; }

std::string Comm::where() const {
  return fmt::format("rank {} of {} in '{}' (world rank {} on {})", rank(), size(), name(),
                     world_rank(), host());
}

void Comm::check_reduce_dtype(DType dtype, const char* call) const {
  if (dtype != DType::f32 && dtype != DType::f64 && dtype != DType::i64)
    GYRE_THROW(invalid_argument,
               "{}: {} supports f32, f64 and i64 buffers, got {}; convert the tensor to f32 first",
               where(), call, dtype_name(dtype));
}

void Comm::check_peer(int peer, const char* call, const char* role) const {
  if (peer < 0 || peer >= size())
    GYRE_THROW(invalid_argument, "{}: {} {} rank {} is outside [0, {})", where(), call, role, peer,
               size());
}

namespace {
// The tensor is defined and lives where this communicator's buffers live.
void check_cpu(const Tensor& t, const char* call, const char* arg, const Comm& c) {
  if (!t.defined())
    GYRE_THROW(invalid_argument, "{}: {}: tensor '{}' is undefined", c.where(), call, arg);
  if (t.device() == c.buffer_device()) return;
  if (c.buffer_device() == Device::cpu)
    GYRE_THROW(unsupported,
               "{}: {}: tensor '{}' is not in host memory; MPI collectives take CPU tensors (GPU "
               "tensors go through the NCCL communicator)",
               c.where(), call, arg);
  GYRE_THROW(unsupported,
             "{}: {}: tensor '{}' is in host memory but this NCCL communicator moves GPU buffers; "
             "copy it to the GPU first or use the MPI communicator",
             c.where(), call, arg);
}
}  // namespace

void Comm::all_reduce(Tensor& t, ReduceOp op) {
  check_cpu(t, "all_reduce", "t", *this);
  all_reduce(t.raw(), size_t(t.numel()), t.dtype(), op);
}

void Comm::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  check_cpu(in, "reduce_scatter", "in", *this);
  check_cpu(out, "reduce_scatter", "out", *this);
  if (in.dtype() != out.dtype() || in.numel() != out.numel() * size())
    GYRE_THROW(invalid_argument,
               "{}: reduce_scatter: in {} {} must hold size() = {} blocks of out {} {}", where(),
               dtype_name(in.dtype()), shape_str(in.shape()), size(), dtype_name(out.dtype()),
               shape_str(out.shape()));
  reduce_scatter(in.raw(), out.raw(), size_t(out.numel()), out.dtype(), op);
}

void Comm::all_gather(const Tensor& in, Tensor& out) {
  check_cpu(in, "all_gather", "in", *this);
  check_cpu(out, "all_gather", "out", *this);
  if (in.dtype() != out.dtype() || out.numel() != in.numel() * size())
    GYRE_THROW(invalid_argument,
               "{}: all_gather: out {} {} must hold size() = {} blocks of in {} {}", where(),
               dtype_name(out.dtype()), shape_str(out.shape()), size(), dtype_name(in.dtype()),
               shape_str(in.shape()));
  all_gather(in.raw(), out.raw(), in.nbytes());
}

void Comm::broadcast(Tensor& t, int root) {
  check_cpu(t, "broadcast", "t", *this);
  broadcast(t.raw(), t.nbytes(), root);
}

void Comm::send(const Tensor& t, int dst, int tag) {
  check_cpu(t, "send", "t", *this);
  send(t.raw(), t.nbytes(), dst, tag);
}

void Comm::recv(Tensor& t, int src, int tag) {
  check_cpu(t, "recv", "t", *this);
  recv(t.raw(), t.nbytes(), src, tag);
}

void Comm::all_reduce(std::vector<float>& v, ReduceOp op) {
  all_reduce(v.data(), v.size(), DType::f32, op);
}
void Comm::all_reduce(std::vector<double>& v, ReduceOp op) {
  all_reduce(v.data(), v.size(), DType::f64, op);
}
void Comm::all_reduce(std::vector<int64_t>& v, ReduceOp op) {
  all_reduce(v.data(), v.size(), DType::i64, op);
}
double Comm::all_reduce(double x, ReduceOp op) {
  all_reduce(&x, 1, DType::f64, op);
  return x;
}

void Comm::broadcast(std::string& s, int root) {
  int64_t n = int64_t(s.size());
  broadcast(&n, sizeof(n), root);
  s.resize(size_t(n));
  if (n > 0) broadcast(s.data(), size_t(n), root);
}

// ---- SingleProcessComm

SingleProcessComm::SingleProcessComm(std::string name) : name_(std::move(name)) {}

std::string local_host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string SingleProcessComm::host() const { return local_host_name(); }

void SingleProcessComm::all_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  check_reduce_dtype(dtype, "all_reduce");
}

void SingleProcessComm::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                       ReduceOp op) {
  check_reduce_dtype(dtype, "reduce_scatter");
  if (send != recv) std::memmove(recv, send, recv_count * dtype_size(dtype));
}

void SingleProcessComm::all_gather(const void* send, void* recv, size_t send_bytes) {
  if (send != recv) std::memmove(recv, send, send_bytes);
}

void SingleProcessComm::broadcast(void* buf, size_t bytes, int root) {
  check_peer(root, "broadcast", "root");
}

void SingleProcessComm::send(const void* buf, size_t bytes, int dst, int tag) {
  GYRE_THROW(invalid_argument,
             "{}: send to rank {}: a single-process communicator has no peer; launch with mpirun "
             "-np N (N >= 2) for point-to-point transfers",
             where(), dst);
}

void SingleProcessComm::recv(void* buf, size_t bytes, int src, int tag) {
  GYRE_THROW(invalid_argument,
             "{}: recv from rank {}: a single-process communicator has no peer; launch with "
             "mpirun -np N (N >= 2) for point-to-point transfers",
             where(), src);
}

std::unique_ptr<Comm> SingleProcessComm::split(int color, int key, const std::string& name) {
  return std::make_unique<SingleProcessComm>(name);
}

void SingleProcessComm::abort(int code, const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

std::optional<std::string> first_failure(Comm& comm, const std::optional<std::string>& mine,
                                         const std::string& label) {
  // failed[r] = 1 when rank r failed: after the sum every rank knows who did.
  std::vector<int64_t> failed(size_t(comm.size()), 0);
  failed[size_t(comm.rank())] = mine ? 1 : 0;
  comm.all_reduce(failed);
  int first = -1, count = 0;
  for (int r = 0; r < comm.size(); ++r)
    if (failed[size_t(r)] != 0) {
      if (first < 0) first = r;
      ++count;
    }
  if (first < 0) return std::nullopt;
  std::string error = mine ? *mine : std::string();
  comm.broadcast(error, first);  // the lowest failing rank's reason reaches every rank
  return fmt::format(
      "{} rank {} of {}{}: {}", label.empty() ? comm.name() : label, first, comm.size(),
      count > 1 ? fmt::format(" (and {} more ranks)", count - 1) : std::string(), error);
}

void run_on_every_rank(Comm& comm, const std::string& what, const std::function<void()>& work,
                       const std::string& label) {
  std::exception_ptr failure;
  std::optional<std::string> error;
  try {
    work();
  } catch (const std::exception& e) {
    failure = std::current_exception();
    error = e.what();
  } catch (...) {
    failure = std::current_exception();
    error = "unknown error";
  }
  const std::optional<std::string> any = first_failure(comm, error, label);
  if (!any) return;
  if (failure) std::rethrow_exception(failure);
  GYRE_THROW(io, "{}: {} failed on {}; this rank stops too", comm.where(), what, *any);
}

}  // namespace gyre::dist
