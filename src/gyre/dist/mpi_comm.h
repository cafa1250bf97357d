// MpiComm: Comm over OpenMPI for CPU collectives, with failure detection (no silent hangs).
//
// Every data call is issued non-blocking (MPI_Iallreduce, MPI_Ibcast, MPI_Isend ...) and completed
// by polling MPI_Test against a deadline, so a stalled or dead peer surfaces as a gyre::Error
// naming this rank, its host, the call and the communicator after `timeout_s` (slime's
// --distributed-timeout-minutes plays the same role for torch.distributed). MPI errors are
// returned, not fatal (MPI_ERRORS_RETURN), and become gyre::Error with MPI's own error string. The
// one call without a non-blocking form, MPI_Comm_split, runs under a watchdog thread that aborts
// the job with the same kind of message if it does not return in time.
//
// After a timeout the communicator is marked broken (MPI state is undefined: the peer may still
// complete the collective later); every further call throws, and MPI_Finalize is skipped at exit so
// the process ends instead of hanging (mpirun then stops the other ranks).
#pragma once
#include <memory>
#include <string>

#include "gyre/dist/comm.h"

namespace gyre::dist {

// True when gyre was built with MPI (GYRE_HAVE_MPI).
bool mpi_available();
// True once MPI_Init_thread has run in this process (and MPI_Finalize has not).
bool mpi_initialized();

// Initialises MPI if needed (MPI_Init_thread, MPI_THREAD_MULTIPLE requested, SERIALIZED required;
// MPI_Finalize is registered at exit) and returns MPI_COMM_WORLD as a Comm named "world".
// Errors: built without MPI, thread support below MPI_THREAD_SERIALIZED.
std::unique_ptr<Comm> mpi_world_comm(double timeout_s);

}  // namespace gyre::dist
