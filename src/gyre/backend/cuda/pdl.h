// Host side of programmatic dependent launch (pdl.cuh has the rules, the device helpers and
// launch_pdl). Plain C++: included by .cc files that write weights a PDL kernel may read early.
#pragma once

namespace gyre::cuda {

// Whether launch_pdl uses the attribute: compute capability >= 9 and GYRE_PDL not "0" (read once;
// GYRE_PDL=0 is the A/B switch of the decode figures). pdl.cu.
bool pdl_enabled();

// An empty ordinary launch on stream(): the next kernel starts only after everything before the
// barrier has completed. Enqueue it after writing memory (bf16 weights) that the next kernel may
// read before its pdl_wait (pdl.cuh's invariant 1). pdl.cu.
void pdl_barrier();

}  // namespace gyre::cuda
