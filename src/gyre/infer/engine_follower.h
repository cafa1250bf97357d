// EngineFollower: a tp rank other than 0 of a tensor-parallel rollout engine (SGLang's tp worker).
// The leader (an Engine with attach_followers(), on tp rank 0) schedules, keeps the radix cache and
// page pool, and samples; before every forward step it broadcasts the step's plan (StepMessage:
// the StepBatch's token ids, positions, page table, KV slots and logits rows). run() receives those
// plans and runs the identical forward with this rank's shards and its own KV cache (its kv heads,
// same pages and slots as the leader's), taking part in the model's collectives (row-parallel
// all-reduces, the logits all-gather) in lockstep; the logits are discarded.
//
// CUDA graphs: a pure decode step the leader runs through its decode graphs arrives as
// graph_capture / graph_replay; the follower runs its own DecodeGraphs in the mode it is told
// (decode_graph.h), so both ranks capture at the same steps and every replay meets the same
// collectives. Its graphs are dropped when its shards moved (a weight version whose parameters
// are not the ones captured), like the leader's.
//
// Invariants: the follower has no scheduler state: its KV pages are written only where a plan says,
// so a page the leader's radix cache reuses holds this rank's KV of the same tokens. The model and
// the EngineConfig's KV geometry (num_pages, page_size) must match the leader's; the first message
// checks it. Weights change only while run() is not running (after a release), like the leader's.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/infer/decode_graph.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/kv_pool.h"
#include "gyre/infer/step_batch.h"
#include "gyre/infer/step_channel.h"
#include "gyre/infer/step_message.h"

namespace gyre::infer {

class EngineFollower {
 public:
  // `model` is this rank's shard of the leader's model (tp rank == leader.rank() != 0); `leader`
  // must outlive the follower. Errors name the mismatch (not tensor-parallel, wrong rank or size).
  EngineFollower(model::CausalLM& model, const EngineConfig& cfg, StepChannel& leader);

  enum class Exit { released, stopped };
  struct Outcome {
    Exit exit = Exit::released;
    std::string message;  // stop: the leader's reason
  };
  // Follows the leader's steps until it releases (it needs the tp group for something else; call
  // run() again when it engages again) or stops. Throws when a plan cannot run here (a malformed
  // or out-of-order message, a KV geometry that differs from the leader's, a failed forward) or
  // the channel fails (a dead leader: the channel's timeout, naming the rank).
  Outcome run();

  int64_t steps() const { return steps_; }  // forward steps followed so far
  // Decode steps this follower ran through its DecodeGraphs as the leader's graph steps (captures
  // and replays, and the padded eager forward when told to replay a graph it does not hold), and
  // the graphs it holds now.
  int64_t graph_steps() const { return graph_steps_; }
  int64_t num_cuda_graphs() const { return graphs_ ? graphs_->num_graphs() : 0; }
  int64_t weight_version() const { return weight_version_; }
  // The bf16 weight copies of this rank's shards (GPU autocast), for this rank's trainer to write
  // in its update (train::AdamW::set_bf16_copies); touch it only while run() is not running.
  std::shared_ptr<ops::Bf16WeightCache> weight_cache() { return weight_cache_; }
  // What the weight-version changes did with the copies (as Engine::weight_sync_counts).
  Engine::WeightSyncCounts weight_sync_counts() const { return sync_counts_; }

 private:
  // op: forward, graph_capture or graph_replay.
  void forward(StepOp op);
  // The leader's weight version moved: the shards changed while this follower was released.
  void sync_weight_copies();

  model::CausalLM& model_;
  EngineConfig cfg_;
  StepChannel& ch_;
  std::string where_;  // the channel's where(), for error messages
  std::unique_ptr<KvStorage> kv_;
  // As the leader's: when the weight version moves, re-cast in place (the shards kept their
  // storage), trusted as is (this rank's AdamW wrote them), or cleared (shards replaced).
  std::shared_ptr<ops::Bf16WeightCache> weight_cache_ = std::make_shared<ops::Bf16WeightCache>();
  Engine::WeightSyncCounts sync_counts_;
  std::vector<uint8_t> wire_;
  StepMessage msg_;
  uint64_t next_seq_ = 0;
  int64_t weight_version_ = -1;
  int64_t steps_ = 0;
  int64_t graph_steps_ = 0;
  std::unique_ptr<DecodeGraphs> graphs_;  // made on the first graph step
  // Where the parameters were when the graphs were last checked (storage, first byte): a weight
  // version whose parameters moved drops the graphs (they baked the old addresses in).
  std::vector<std::pair<const void*, const void*>> graph_params_;
  bool stopped_ = false;
};

}  // namespace gyre::infer
