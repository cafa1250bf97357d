// The tensor-parallel group of a model (model::TpComm, model/tensor_parallel.h) over a dist::Comm:
// the model module sits below dist/ and sees collectives only through that small interface.
#pragma once
#include <memory>

#include "gyre/dist/comm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::dist {

// Adapts `comm` (typically ProcessGroups::tp); `comm` must outlive the result. An MPI group moves
// host buffers (a GPU model's activations are staged), an NCCL group device buffers.
std::unique_ptr<model::TpComm> make_tp_comm(Comm& comm);

}  // namespace gyre::dist
