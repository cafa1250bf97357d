// Host side of programmatic dependent launch (pdl.cuh has the rules, the device helpers and
// launch_pdl). Plain C++: included by .cc files that write weights a PDL kernel may read early.
#pragma once

namespace gyre::cuda {

// Whether launch_pdl uses the attribute: compute capability >= 9 and GYRE_PDL not "0" (read once;
// GYRE_PDL=0 is the A/B switch of the decode figures). pdl.cu.
bool pdl_enabled();

// Call after writing memory (bf16 weights) that the next kernel may read before its pdl_wait
// (pdl.cuh's invariant 1): the next launch_pdl of this thread (on its stream()) is then made an
// ordinary launch, which starts only after everything before it has completed. Nothing is
// enqueued, so a write followed by cuBLASLt GEMMs or other ordinary launches costs nothing (until
// session 24 this was an empty kernel: ~200 launches a 1.5B log-prob pass). pdl.cu.
void pdl_barrier();
// Whether a pdl_barrier() of this thread still waits for its launch_pdl (tests).
bool pdl_barrier_pending();
// Clears this thread's pending pdl_barrier() and says whether there was one: launch_pdl's question.
bool pdl_take_barrier();

}  // namespace gyre::cuda
