// L2 prefetch of weights on a side stream, for the batch-1 decode step (issue 7: decode within
// 1.5x of the weight-bytes bound). Why: the decode step is a chain of dependent kernels, and each
// GEMV streams its weights from HBM only once it runs (PDL lets it load its first registers'
// worth early, no more). Kernels that move few bytes — the paged attention, the small q/k/v and
// o_proj GEMVs — leave HBM idle. A bulk L2 prefetch of the next linears' bf16 weights, issued on a
// second stream when the chain reaches the point where they are a few kernels away, keeps HBM
// streaming through those kernels; the GEMVs then read their weights from L2.
//
// Correctness: a prefetch only moves lines into L2 (the coherence point of the device); it reads
// nothing into registers and writes nothing, so it can neither observe stale values nor race with a
// writer, and the chain never waits for it. The side stream forks from the calling thread's stream
// (stream()) with an event, so the prefetch starts after everything enqueued so far (under stream
// capture that makes it a branch of the graph). l2_prefetch_join() makes the calling stream wait
// for the last prefetch: CudaGraph::capture calls it before ending a capture (a capture must join
// every stream it forked); eager callers never need it.
#pragma once
#include <cstddef>

namespace gyre::cuda {

// Up to kMaxL2PrefetchRanges byte ranges [ptr, ptr + bytes) of device memory (any alignment: each
// range is trimmed inward to 16-byte boundaries; empty ranges are skipped).
inline constexpr int kMaxL2PrefetchRanges = 8;
void l2_prefetch_side(const void* const* ptrs, const size_t* bytes, int n);
// The calling thread's stream waits for this thread's last l2_prefetch_side (nothing pending:
// no-op).
void l2_prefetch_join();
// Forgets a pending join (a capture that failed and was discarded).
void l2_prefetch_forget() noexcept;

}  // namespace gyre::cuda
