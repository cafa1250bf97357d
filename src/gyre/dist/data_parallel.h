// Data-parallel optimizer steps: gradients of the DP ranks are reduced, then AdamW steps — either
// replicated (all-reduce, every rank holds all Adam state) or ZeRO-1 (Rajbhandari et al., "ZeRO:
// Memory Optimizations Toward Training Trillion Parameter Models", 2020, stage 1; Megatron's
// distributed optimizer, which slime forces on): rank r keeps Adam m/v for its shard only,
// reduce-scatters the gradients, updates its shard and all-gathers the parameters.
//
// Buckets (Megatron's DDP buckets, PyTorch DDP's gradient buckets): the parameters are cut into
// buckets of consecutive parameters, built from the END of the list (the order in which a backward
// completes gradients: model::GradReadyHook) by closing a bucket once it holds >= bucket_elements
// elements (a larger parameter is a bucket of its own). The flat vectors hold the buckets in
// parameters() order, each padded (ZeRO-1) to a multiple of the DP size; ZeRO-1 shards EVERY
// bucket into equal contiguous blocks (Megatron's distributed optimizer), rank r owning block r of
// each: its shard (Adam state, reduce-scatter output, all-gather input) is the concatenation of
// its blocks, and owned_ranges() lists them (one range of the flat unpadded vector per bucket). A
// model that fits one bucket has the layout of the pre-bucket optimizer (one shard of the whole).
//
// Overlap (issue 8: communication on its own stream, overlapped with the backward): call
// begin_overlap(params, grads) before the backward of a step's LAST micro-batch and give that
// backward grad_ready_hook() (model::GradReadyHook, CausalLM::set_grad_ready_hook). When every
// gradient of a bucket is final the bucket is copied into the flat gradient (on the compute
// stream) and its reduction started (Comm::*_start: NCCL runs it on its communication stream after
// the compute stream's work so far, no host wait; MPI: synchronously, the same numbers). step()
// starts the buckets no hook reported, makes the compute stream wait for the communication, then
// clips and steps as without overlap. Without begin_overlap, step() reduces every bucket itself:
// the same calls in the same order (last bucket first), so both paths give bitwise the same
// parameters, and a rank that overlaps can run with one that does not.
//
// Gradient convention (slime): the loss of every rank is normalised by the whole step's
// normaliser (rollouts or tokens over all DP ranks), so the per-rank gradients are partial sums
// and their SUM is the single-process gradient. (slime scales each rank's loss by dp_size and lets
// Megatron average; the result is the same.) Clipping uses the global norm of the summed gradient,
// exactly as the single-process AdamW::step does, so DP=N equals DP=1 up to float summation order.
//
// Invariants: every rank passes the same parameter names, shapes and values (replicas); step()
// leaves them identical on every rank; the flat layout (buckets included) is fixed at the first
// step (or begin_overlap) and checked at every later one. Parameters, gradients and the flat
// buffers live where the communicator moves buffers: host memory over MPI, this rank's GPU over
// NCCL (the copies in and out of the flat vectors are device-to-device on the caller's stream;
// NCCL waits for that stream before it reads them). ZeRO-1 checkpoints record the bucket layout;
// load() + the first step refuse state written in another layout (including the pre-bucket one
// of a model with more than one bucket) instead of mapping Adam moments onto the wrong elements.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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
  // 10M f32 elements = 40 MB per bucket (PyTorch DDP: 25 MB; Megatron: 40M elements): one bucket
  // per decoder layer of a 0.5B-1.5B model, few enough calls that each runs near NCCL's bandwidth.
  static constexpr int64_t kDefaultBucketElements = 10'000'000;

  // `comm` is the DP group (dist::ProcessGroups::dp or the world); it must outlive this object.
  // `bucket_elements` (>= 1) sets the bucket size (see the header; part of the checkpoint layout).
  DataParallelOptimizer(Comm& comm, train::AdamWConfig cfg, train::LrSchedule schedule,
                        DpMode mode = DpMode::zero1,
                        int64_t bucket_elements = kDefaultBucketElements);

  Comm& comm() { return comm_; }
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  DpMode mode() const { return mode_; }

  // Reduces this rank's partial gradients across the DP group, clips by the global norm and takes
  // one AdamW step; params end identical on every rank. Returns {grad norm before clipping, lr}.
  // Errors: mismatched names/shapes across steps, a non-finite global norm (all ranks throw).
  std::pair<double, double> step(train::NamedTensors& params, train::NamedTensors& grads);

  // Overlap (see the header): arms the buckets for the backward that completes this step's
  // gradients. `params` and `grads` are the lists the following step() gets (the same tensors);
  // fixes the layout at the first call (a collective: every rank calls it at the same point).
  void begin_overlap(const train::NamedTensors& params, const train::NamedTensors& grads);
  // Parameters [begin, end) of the list have their final gradients: starts the reduction of every
  // bucket this completes. Only between begin_overlap and step(); an index reported twice is an
  // Error (the hook was active for more than the step's last backward).
  void grads_ready(size_t begin, size_t end);
  // grads_ready as a model::GradReadyHook (valid while this optimizer lives).
  std::function<void(size_t, size_t)> grad_ready_hook() {
    return [this](size_t b, size_t e) { grads_ready(b, e); };
  }
  // Buckets as parameter index ranges [first, last), in parameters() order (empty before the
  // layout is fixed), and how many of them the last step had started from grads_ready.
  std::vector<std::pair<size_t, size_t>> bucket_params() const;
  int buckets_started_early() const { return started_early_; }
  // Disarms after a failed backward (the caller unwinds without reaching step()), so the next
  // begin_overlap is not refused as a double arm. Buckets the hook already started stay issued on
  // this rank only: the group is then out of step, which is logged (its peers' next collectives
  // fail after the communicator's timeout). Nothing to do when not armed. Never throws.
  void abort_overlap() noexcept;

  // DP x TP (Megatron's layout): params/grads are this rank's shards of a model split over the
  // model-parallel group `mp` (the tp group; it must outlive this object), and the clipping norm
  // covers the full model: Σ g² of the DP-reduced gradient, parameter i counted on every mp rank
  // (a disjoint shard: squares add up over `mp`) unless replicated[i] (a copy every mp rank holds:
  // counted once, on mp rank 0, as Megatron's param_is_not_tensor_parallel_duplicate). One entry
  // per parameter in step() order; call before the first step.
  void set_model_parallel(Comm& mp, std::vector<bool> replicated);

  // Colocated rollout (rl/loop/train_rollout.h, share_bf16_weight_copies), the contract of
  // train::AdamW::set_bf16_copies: every step marks the cache stale first, then writes
  // bf16(new value) into the copy of each parameter that has one (Bf16WeightCache::copy_to_write),
  // bitwise the cast the engine's refresh would make, and marks the cache fresh only when that
  // covered every copy — so the engine's weight sync needs no re-cast. ZeRO-1: the final unflatten
  // of the all-gathered parameters does it, one multi-tensor launch that reads the flat vector
  // once and writes the f32 parameters and their copies (ops::copy_many); all_reduce: the inner
  // AdamW steps the parameters themselves and writes the copies in its update. The f32 results
  // are identical either way. An expired pointer (the engine is gone) is ignored; null: none (a
  // rank without a colocated engine attaches nothing).
  void set_bf16_copies(std::weak_ptr<ops::Bf16WeightCache> cache);
  // The attached cache (null when none or expired).
  std::shared_ptr<ops::Bf16WeightCache> bf16_copies() const { return bf16_copies_.lock(); }

  int64_t iteration() const { return inner_.iteration(); }
  // Elements of the flattened (unpadded, parameters() order) vector this rank updates — ZeRO-1:
  // one range per bucket (possibly empty), all_reduce: everything — and the bytes of Adam state it
  // holds for them (m + v, f32).
  std::vector<Range> owned_ranges() const;
  // The one owned range; an Error when ZeRO-1 has several buckets (use owned_ranges()).
  Range owned_range() const;
  size_t state_bytes() const;
  // The reduced (summed, unclipped) gradient of owned_ranges() (concatenated) from the last step,
  // flat f32, as a host copy; for tests and diagnostics. ZeRO-1 clips its shard in place, so it
  // needs a snapshot: taken only after keep_reduced_grad(true) (a shard-sized copy per step).
  // Empty otherwise.
  std::vector<float> reduced_grad() const;
  void keep_reduced_grad(bool on) { keep_reduced_grad_ = on; }

  // Checkpoint: <dir>/dp_rank_<r>_of_<n>/ holds this rank's optimizer state (train::AdamW format)
  // and data_parallel.json (mode, DP size, bucket layout). load() refuses a checkpoint written with
  // another DP size or mode at once, and one whose ZeRO-1 bucket layout differs from this
  // optimizer's at the first step (when the layout is known; at once if it already is).
  void save(const std::string& dir) const;
  void load(const std::string& dir);

 private:
  struct Bucket {
    size_t first = 0, last = 0;  // parameter indices [first, last)
    int64_t begin = 0, end = 0;  // its elements in the flat unpadded vector
    int64_t flat = 0;            // its offset in the padded flat vectors
    int64_t padded = 0;          // its length there (zero1: a multiple of the DP size)
    int64_t shard = 0;           // zero1: padded / DP size; all_reduce: padded
    int64_t shard_offset = 0;    // zero1: its block's offset in this rank's shard
    Range owned;                 // the flat unpadded elements of this rank's block
    size_t ready = 0;            // parameters reported by grads_ready this step
    bool started = false;        // reduction started this step
  };

  void layout(const train::NamedTensors& params, const train::NamedTensors& grads);
  void make_buckets(const train::NamedTensors& params);
  // The checkpoint's layout (load) against this one; throws on a mismatch.
  void check_loaded_layout() const;
  // Copies bucket b's gradients into the flat gradient and starts its reduction.
  void start_bucket(Bucket& b, const train::NamedTensors& grads);
  // Σ g² over this rank's blocks of `shard` (laid out like grad_shard_), split into
  // {disjoint shards, replicated} by replicated_ (set_model_parallel).
  std::pair<double, double> split_sum_squares(const Tensor& shard) const;
  // The full model's Σ g² from this rank's {sharded, replicated} parts (collective over mp_).
  double model_parallel_sum_squares(double sharded, double replicated) const;
  // The padded flat vector <-> the tensors (stream-ordered copies on the device).
  void flatten(const train::NamedTensors& ts, Tensor& flat, size_t first, size_t last) const;
  // With `copies`, also writes bf16(value) into every copy it has and marks what it covered.
  void unflatten(const Tensor& flat, train::NamedTensors& ts,
                 ops::Bf16WeightCache* copies = nullptr) const;

  Comm& comm_;
  DpMode mode_;
  train::AdamWConfig cfg_;
  train::AdamW inner_;  // steps the owned shard (zero1: clipping done here, globally)
  int64_t bucket_elements_;
  std::vector<std::string> names_;
  std::vector<int64_t> offsets_;    // flat unpadded offset of every tensor (size = tensors + 1)
  std::vector<int64_t> pos_;        // offset of every tensor in the padded flat vectors
  std::vector<size_t> bucket_of_;   // bucket index of every tensor
  std::vector<Bucket> buckets_;     // parameters() order
  int64_t padded_ = 0, shard_ = 0;  // flat vectors' and this rank's shard's lengths
  Device device_ = Device::cpu;     // where the params, grads and flat buffers live (comm's device)
  Tensor flat_grad_, flat_param_;   // [padded_] on device_ (flat_param_: zero1 only)
  Tensor reduced_grad_;  // all_reduce: flat_grad_ itself (unchanged after the reduce: the clip
                         // is applied inside AdamW's update); zero1: a snapshot when
                         // keep_reduced_grad_
  bool keep_reduced_grad_ = false;
  Tensor param_shard_, grad_shard_;  // zero1: [shard_]
  Comm* mp_ = nullptr;
  std::vector<bool> replicated_;
  std::weak_ptr<ops::Bf16WeightCache> bf16_copies_;  // set_bf16_copies (zero1: used here)
  // Overlap: armed by begin_overlap until step(); the gradients it was armed with; which
  // parameters grads_ready reported; buckets started by grads_ready in the last step.
  bool armed_ = false;
  train::NamedTensors armed_grads_;
  std::vector<char> reported_;
  int started_early_ = 0;
  // load(): the checkpoint's bucket layout ([first, last) per bucket); nullopt: not loaded, or
  // all_reduce (state keyed by parameter name, any layout fits). An empty list: the pre-bucket
  // single-shard layout.
  std::optional<std::vector<std::pair<size_t, size_t>>> loaded_buckets_;
  std::string loaded_from_;
};

}  // namespace gyre::dist
