// Data-parallel optimizer steps: gradients of the DP ranks are reduced, then AdamW steps — either
// replicated (all-reduce, every rank holds all Adam state) or ZeRO-1 (Rajbhandari et al., "ZeRO:
// Memory Optimizations Toward Training Trillion Parameter Models", 2020, stage 1; Megatron's
// distributed optimizer, which slime forces on): the parameters are flattened in parameters()
// order, padded to a multiple of the DP size and cut into contiguous equal shards; rank r keeps
// Adam m/v for shard r only, reduce-scatters the gradients, updates its shard and all-gathers the
// parameters.
//
// Gradient convention (slime): the loss of every rank is normalised by the whole step's
// normaliser (rollouts or tokens over all DP ranks), so the per-rank gradients are partial sums
// and their SUM is the single-process gradient. (slime scales each rank's loss by dp_size and lets
// Megatron average; the result is the same.) Clipping uses the global norm of the summed gradient,
// exactly as the single-process AdamW::step does, so DP=N equals DP=1 up to float summation order.
//
// Invariants: every rank passes the same parameter names, shapes and values (replicas); step()
// leaves them identical on every rank; the flat layout is fixed at the first step and checked at
// every later one. Parameters, gradients and the flat buffers live where the communicator moves
// buffers: host memory over MPI, this rank's GPU over NCCL (the copies in and out of the flat
// vector are device-to-device; NcclComm's blocking calls wait for the caller's stream first).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gyre/dist/comm.h"
#include "gyre/train/optimizer.h"

namespace gyre::dist {

// Contiguous share [begin, end) of n items for `rank` of `size` (the first n % size ranks get one
// more item). Used to split a step's samples over DP ranks.
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Range shard_range(int64_t n, int rank, int size);

// Sums every gradient tensor over the ranks of `comm` in place (one flat f32 all-reduce).
void all_reduce_gradients(Comm& comm, train::NamedTensors& grads);

enum class DpMode { all_reduce, zero1 };
const char* dp_mode_name(DpMode m);
// "all_reduce" | "zero1"; anything else is an Error listing both.
DpMode parse_dp_mode(const std::string& s);

class DataParallelOptimizer {
 public:
  // `comm` is the DP group (dist::ProcessGroups::dp or the world); it must outlive this object.
  DataParallelOptimizer(Comm& comm, train::AdamWConfig cfg, train::LrSchedule schedule,
                        DpMode mode = DpMode::zero1);

  Comm& comm() { return comm_; }
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  DpMode mode() const { return mode_; }

  // Reduces this rank's partial gradients across the DP group, clips by the global norm and takes
  // one AdamW step; params end identical on every rank. Returns {grad norm before clipping, lr}.
  // Errors: mismatched names/shapes across steps, a non-finite global norm (all ranks throw).
  std::pair<double, double> step(train::NamedTensors& params, train::NamedTensors& grads);

  // DP x TP (Megatron's layout): params/grads are this rank's shards of a model split over the
  // model-parallel group `mp` (the tp group; it must outlive this object), and the clipping norm
  // covers the full model: Σ g² of the DP-reduced gradient, parameter i counted on every mp rank
  // (a disjoint shard: squares add up over `mp`) unless replicated[i] (a copy every mp rank holds:
  // counted once, on mp rank 0, as Megatron's param_is_not_tensor_parallel_duplicate). One entry
  // per parameter in step() order; call before the first step.
  void set_model_parallel(Comm& mp, std::vector<bool> replicated);

  int64_t iteration() const { return inner_.iteration(); }
  // Elements of the flattened parameter vector this rank updates (ZeRO-1: its shard; all_reduce:
  // everything) and the bytes of Adam state it holds (m + v, f32).
  Range owned_range() const { return owned_; }
  size_t state_bytes() const;
  // The reduced (summed, unclipped) gradient of owned_range() from the last step, flat f32, as a
  // host copy; for tests and diagnostics. ZeRO-1 clips its shard in place, so it needs a snapshot:
  // taken only after keep_reduced_grad(true) (a shard-sized copy per step). Empty otherwise.
  std::vector<float> reduced_grad() const;
  void keep_reduced_grad(bool on) { keep_reduced_grad_ = on; }

  // Checkpoint: <dir>/dp_rank_<r>_of_<n>/ holds this rank's optimizer state (train::AdamW format).
  // load() refuses a checkpoint written with another DP size or mode.
  void save(const std::string& dir) const;
  void load(const std::string& dir);

 private:
  void layout(const train::NamedTensors& params, const train::NamedTensors& grads);
  // Σ g² over the flat elements [r.begin, r.end) (g[0] is element r.begin), split into
  // {disjoint shards, replicated} by replicated_ (set_model_parallel).
  std::pair<double, double> split_sum_squares(const Tensor& g, Range r) const;
  // The full model's Σ g² from this rank's {sharded, replicated} parts (collective over mp_).
  double model_parallel_sum_squares(double sharded, double replicated) const;

  Comm& comm_;
  DpMode mode_;
  train::AdamWConfig cfg_;
  train::AdamW inner_;  // steps the owned shard (zero1: clipping done here, globally)
  std::vector<std::string> names_;
  std::vector<int64_t> offsets_;  // flat offset of every tensor (size = tensors + 1)
  int64_t padded_ = 0, shard_ = 0;
  Range owned_;
  Device device_ = Device::cpu;    // where the params, grads and flat buffers live (comm's device)
  Tensor flat_grad_, flat_param_;  // [padded_] on device_
  Tensor reduced_grad_;  // all_reduce: flat_grad_ itself (unchanged after the reduce; clipping
                         // scales `grads`); zero1: a snapshot when keep_reduced_grad_
  bool keep_reduced_grad_ = false;
  Tensor param_shard_, grad_shard_;
  Comm* mp_ = nullptr;
  std::vector<bool> replicated_;
};

}  // namespace gyre::dist
