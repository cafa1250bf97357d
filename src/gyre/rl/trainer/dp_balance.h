// --balance-data (slime): which of an optimizer step's samples each data-parallel rank trains on,
// chosen so that every rank gets the same number of samples and as nearly as possible the same
// number of tokens. Without it a rank trains on a contiguous slice of the step, and GRPO groups
// of long and short responses leave some ranks idle at the step's gradient reduction.
//
// The partition is Karmarkar and Karp's largest differencing method for k-way partitioning with
// equal part sizes (as slime's get_seqlen_balanced_partitions, equal_size=True): items sorted by
// cost, descending, are cut into chunks of k, each chunk a partial solution with one item in each
// of its k parts; then the two partial solutions with the largest spread (heaviest part minus
// lightest) are merged repeatedly, pairing one's heaviest part with the other's lightest, until one
// is left. Every part gets n / k items. Deterministic (ties broken by index and creation order),
// so every rank computes the same partition from the same step.
#pragma once
#include <cstdint>
#include <vector>

namespace gyre::rl {

// Parts 0..k-1 of the items 0..n-1 with `costs` (each part's indices ascending). Preconditions:
// k >= 1, n % k == 0, costs >= 0 (an Error otherwise).
std::vector<std::vector<int64_t>> balanced_partitions(const std::vector<int64_t>& costs, int k);

}  // namespace gyre::rl
