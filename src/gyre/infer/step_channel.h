// StepChannel: the link from a tensor-parallel rollout engine's leader (tp rank 0, the scheduler)
// to its followers (the other tp ranks), SGLang's "broadcast the batch to the tp workers". The
// engine sits below dist/ in the layering, so it sees the link through this small interface, the
// way the model sees its collectives through model::TpComm; dist::make_step_channel
// (dist/step_channel_comm.h) implements it over a dist::Comm.
//
// Invariants: every rank of the channel calls broadcast() the same number of times in the same
// order (a collective), interleaved with the model's TpComm collectives in the same order on every
// rank; a broadcast that cannot complete (a dead or stalled peer) throws gyre::Error naming the
// rank instead of hanging. A channel is used from one thread at a time.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gyre::infer {

class StepChannel {
 public:
  virtual ~StepChannel() = default;
  virtual int rank() const = 0;  // 0: the leader
  virtual int size() const = 0;
  // Rank 0's `bytes` replace every other rank's (resized to fit). Collective.
  virtual void broadcast(std::vector<uint8_t>& bytes) = 0;
  // "rank 1 of 2 in 'tp' (world rank 1 on host-a)": the prefix of error messages.
  virtual std::string where() const = 0;
};

}  // namespace gyre::infer
