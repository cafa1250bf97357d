// The link from a tensor-parallel rollout engine's leader to its followers (infer::StepChannel,
// infer/step_channel.h) over a dist::Comm: the engine sits below dist/ in the layering and sees the
// broadcast only through that interface, as the model sees its collectives through model::TpComm.
#pragma once
#include <memory>

#include "gyre/dist/comm.h"
#include "gyre/infer/step_channel.h"

namespace gyre::dist {

// Adapts `comm` (typically ProcessGroups::tp, the same communicator the model's TpComm uses: the
// plan broadcasts and the forward's collectives are issued in one order on every rank); `comm`
// must outlive the result. MPI or NCCL (host bytes staged through the GPU). A broadcast is
// two collectives (the size, then the bytes), each bounded by the communicator's timeout.
std::unique_ptr<infer::StepChannel> make_step_channel(Comm& comm);

}  // namespace gyre::dist
