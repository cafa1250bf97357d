// model::TpComm over dist::Comm (see tensor_parallel_comm.h).
#include "gyre/dist/tensor_parallel_comm.h"

#include "gyre/core/error.h"
#include "gyre/dist/nccl_comm.h"

namespace gyre::dist {

namespace {
class CommTp : public model::TpComm {
 public:
  explicit CommTp(Comm& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  Device buffer_device() const override { return c_.buffer_device(); }
  void all_reduce_sum(float* buf, size_t n) override {
    c_.all_reduce(buf, n, DType::f32, ReduceOp::sum);
  }
  void all_reduce_sum_ordered(float* buf, size_t n) override {
#ifdef GYRE_HAVE_NCCL
    if (auto* nccl = dynamic_cast<NcclComm*>(&c_)) {
      nccl->all_reduce_ordered(buf, n, DType::f32, ReduceOp::sum);
      return;
    }
#endif
    c_.all_reduce(buf, n, DType::f32, ReduceOp::sum);
  }
  void all_reduce_max(float* buf, size_t n) override {
    c_.all_reduce(buf, n, DType::f32, ReduceOp::max);
  }
  void all_reduce_sum(double* buf, size_t n) override {
    c_.all_reduce(buf, n, DType::f64, ReduceOp::sum);
  }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    c_.all_gather(send, recv, bytes);
  }
  void all_gather_ordered(const void* send, void* recv, size_t bytes) override {
#ifdef GYRE_HAVE_NCCL
    if (auto* nccl = dynamic_cast<NcclComm*>(&c_)) {
      nccl->all_gather_ordered(send, recv, bytes);
      return;
    }
#endif
    c_.all_gather(send, recv, bytes);
  }
  bool graph_capturable() const override {
#ifdef GYRE_HAVE_NCCL
    return dynamic_cast<const NcclComm*>(&c_) != nullptr;
#else
    return false;
#endif
  }
  void watch_replay(const char* what) override {
#ifdef GYRE_HAVE_NCCL
    if (auto* nccl = dynamic_cast<NcclComm*>(&c_)) nccl->watch_caller(what);
#else
    (void)what;
#endif
  }

 private:
  Comm& c_;
};
}  // namespace

std::unique_ptr<model::TpComm> make_tp_comm(Comm& comm) { return std::make_unique<CommTp>(comm); }

}  // namespace gyre::dist
