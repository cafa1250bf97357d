// Programmatic dependent launch (PDL, sm_90+) for the decode step's chain of small kernels.
//
// Why (issue 7, batch-1 decode): a step of Qwen2.5-0.5B is ~176 dependent kernels of 2-11 us
// whose own work is far shorter (each GEMV streams its weights in a fraction of its time); with
// ordinary stream order a kernel's CTAs start only after the previous grid has completed and
// flushed, so every boundary pays the ramp-down of one grid and the ramp-up of the next. A kernel
// launched with the programmatic-serialization attribute (launch_pdl) may start as soon as every
// CTA of its predecessor has executed griddepcontrol.launch_dependents (pdl_trigger) or exited; it
// then issues work that does not depend on the predecessor — a GEMV's first batch of weight loads
// — and calls griddepcontrol.wait (pdl_wait), which returns once the predecessor grid has
// completed and its memory operations are visible.
//
// Invariants (each PDL-launched kernel must keep all three):
//  1. Before pdl_wait a thread reads only memory that no kernel since the last ordinary launch (or
//     copy) on the stream writes, and writes nothing. Since the kernels trigger at their first
//     instruction, several PDL kernels of the chain may be resident at once: "the previous
//     kernel" is not enough. In practice the early reads are bf16 weights and the step's index
//     arrays (cu_q, kv_lens: uploaded by a copy before the step). Whoever writes weights right
//     before a PDL launch could follow (the bf16 weight cache's conversions and refreshes, AdamW's
//     bf16 copies, the uncached autocast GEMV's conversion, the log-prob head's unaligned chunk)
//     calls pdl_barrier() after it: the thread's next launch_pdl is then an ordinary launch, so
//     that kernel's (and its PDL successors') early reads start only after the writer has
//     completed. Kernels between the writer and that launch are enqueued in stream order after
//     the writer, and a PDL kernel cannot start before its predecessor's CTAs have all triggered
//     or exited, so none of them lets an early read pass the writer either.
//  2. Every thread that touches data produced by earlier kernels calls pdl_wait first.
//  3. At least one thread of the grid calls pdl_wait, so the grid completes only after its
//     predecessor has — which makes the chain transitive: kernel k + 1 waiting for kernel k also
//     waits for everything before k (a kernel may read the output of any earlier kernel).
// Kernels launched without the attribute (older GPUs, GYRE_PDL=0, or launched by <<<>>>) are
// unaffected: pdl_wait / pdl_trigger are then no-ops, and ordinary stream order holds.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "gyre/backend/cuda/pdl.h"
#include "gyre/backend/cuda/runtime.h"

namespace gyre::cuda {

// Lets the dependent grid launch (once every CTA of this grid has called it or exited).
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Waits until the preceding grid has completed and its writes are visible.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream()>>>(args...) as a programmatic dependent of the previous
// kernel on the stream when pdl_enabled(); the kernel must keep the invariants above. Errors are
// checked as GYRE_CUDA_LAUNCHED(name) does.
template <typename... Params, typename... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  const bool after_barrier = pdl_take_barrier();  // always taken: a barrier covers one launch
  cfg.numAttrs = pdl_enabled() && !after_barrier ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) throw_cuda_error(err, name, __FILE__, __LINE__);
  check_launch(name, __FILE__, __LINE__);
}

}  // namespace gyre::cuda
