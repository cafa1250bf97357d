// infer::StepChannel over dist::Comm (see step_channel_comm.h).
#include "gyre/dist/step_channel_comm.h"

#include "gyre/core/error.h"

namespace gyre::dist {

namespace {
// A step message holds a few i32 per scheduled token; anything near this is a corrupt size.
constexpr uint64_t kMaxMessageBytes = uint64_t(1) << 31;

class CommStepChannel : public infer::StepChannel {
 public:
  explicit CommStepChannel(Comm& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  std::string where() const override { return c_.where(); }
  void broadcast(std::vector<uint8_t>& bytes) override {
    uint64_t n = bytes.size();
    c_.broadcast(&n, sizeof(n), 0);
    if (n > kMaxMessageBytes)
      GYRE_THROW(io, "{}: the leader announced a {}-byte step message (at most {}): corrupt wire",
                 c_.where(), n, kMaxMessageBytes);
    if (c_.rank() != 0) bytes.resize(size_t(n));
    if (n) c_.broadcast(bytes.data(), size_t(n), 0);
  }

 private:
  Comm& c_;
};
}  // namespace

// Any communicator: MPI moves the host bytes directly, NCCL stages them through its GPU (two small
// broadcasts a decode step, outside the decode graphs: host bytes must be staged anyway).
std::unique_ptr<infer::StepChannel> make_step_channel(Comm& comm) {
  return std::make_unique<CommStepChannel>(comm);
}

}  // namespace gyre::dist
